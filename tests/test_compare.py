"""Comparing runs: the statistics against hand-worked numbers, a planted 2x slowdown flagged, two
runs from one distribution left alone, status changes, the figure and the command."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from test_plotting import case_row, write_run

from harness.cli import main
from harness.compare import (
    FASTER,
    NOT_SIGNIFICANT,
    SLOWER,
    compare_figure,
    compare_samples,
    compare_tables,
    parse_threshold,
)
from harness.options import UsageError
from harness.results import RunDir


@pytest.mark.parametrize(
    ("text", "value"), [("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0", 0.0), ("150%", 1.5)]
)
def test_threshold_parsing(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5%", "5", "nan", "inf%", "", "%"])
def test_bad_thresholds_are_refused_naming_the_option(text):
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


def exact_two_sided_p(a, b):
    """Mann-Whitney by hand: the share of all splits of the pooled ranks whose U for b is at least
    as far from its mean as the observed one (no ties)."""
    pooled = sorted(a + b)
    rank = {value: i + 1 for i, value in enumerate(pooled)}
    observed = sum(rank[x] for x in b) - len(b) * (len(b) + 1) / 2
    mean = len(a) * len(b) / 2
    splits = list(itertools.combinations(range(1, len(pooled) + 1), len(b)))
    extreme = sum(
        abs(sum(s) - len(b) * (len(b) + 1) / 2 - mean) >= abs(observed - mean) for s in splits
    )
    return extreme / len(splits)


def test_completely_separated_samples_are_a_significant_slowdown():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]
    change = compare_samples(a, b, threshold=0.05)
    assert change.ratio == pytest.approx(8 / 3)
    assert change.p_value == pytest.approx(2 / 252)  # 2 of the C(10, 5) = 252 splits
    assert change.p_value == pytest.approx(exact_two_sided_p(a, b))
    assert change.change == SLOWER
    assert compare_samples(b, a, threshold=0.05).change == FASTER


def test_interleaved_samples_are_not_significant_even_beyond_the_threshold():
    a, b = [1.0, 3.0, 5.0, 7.0, 9.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    change = compare_samples(a, b, threshold=0.05)
    assert change.ratio == pytest.approx(6 / 5)  # 20% slower by the medians ...
    assert change.p_value == pytest.approx(exact_two_sided_p(a, b))  # U = 15 of 25: p = 0.69
    assert change.p_value == pytest.approx(0.6904761904761905)
    assert change.change == NOT_SIGNIFICANT  # ... but within the noise


def test_a_significant_change_within_the_threshold_is_no_change():
    a = [1.00, 1.001, 1.002, 1.003, 1.004]
    b = [1.02, 1.021, 1.022, 1.023, 1.024]
    change = compare_samples(a, b, threshold=0.05)
    assert change.p_value == pytest.approx(2 / 252) and change.change == ""
    assert compare_samples(a, b, threshold=0.01).change == SLOWER


IMPLS, NS, DS = ("numpy", "fused"), (64, 128, 256, 512), (32, 64)


def noisy_rows(rng, factor=1.0, samples=7):
    """Samples of time c n^2 d with 3% multiplicative noise, times `factor`."""
    rows = []
    for impl, n, d in itertools.product(IMPLS, NS, DS):
        base = (2e-9 if impl == "numpy" else 1e-9) * n * n * d * factor
        rows.append(case_row(impl, n, d, samples_s=base * rng.lognormal(0.0, 0.03, samples)))
    return rows


def test_a_planted_2x_slowdown_is_flagged_everywhere(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = write_run(tmp_path / "a", noisy_rows(rng))
    b = write_run(tmp_path / "b", noisy_rows(rng, factor=2.0))
    table = compare_tables(RunDir(a).table(), RunDir(b).table(), threshold=0.05)
    assert len(table) == len(IMPLS) * len(NS) * len(DS)
    assert (table["change"] == SLOWER).all() and table["regression"].all()
    assert table["ratio"].to_numpy() == pytest.approx(2.0, rel=0.1)
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "16 shared cases: 16 slower, 0 faster, 0 unchanged" in out
    assert "SLOWER" in out and (b / "compare.png").is_file() and (b / "compare.svg").is_file()
    assert main(["compare", str(a), str(b)]) == 0  # reported, but no failing exit without the flag
    assert main(["compare", str(b), str(a), "--fail-on-regression"]) == 0  # faster is no failure


def test_two_runs_of_the_same_code_stay_quiet(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = write_run(tmp_path / "a", noisy_rows(rng))
    b = write_run(tmp_path / "b", noisy_rows(rng))
    table = compare_tables(RunDir(a).table(), RunDir(b).table(), threshold=0.05)
    assert not table["change"].isin([SLOWER, FASTER]).any()
    assert (
        main(["compare", str(a), str(b), "--fail-on-regression", "--out", str(tmp_path / "plots")])
        == 0
    )
    assert "16 shared cases: 0 slower, 0 faster, 16 unchanged" in capsys.readouterr().out
    assert (tmp_path / "plots" / "compare.png").is_file()


def test_status_changes_and_unshared_cases(tmp_path, capsys):
    a_rows = [
        case_row("numpy", 64, 8, 1e-3),
        case_row("fused", 64, 8, 1e-3),
        case_row("naive", 64, 8, status="skipped", note="slow"),
        case_row("numpy", 128, 8, 4e-3),
    ]
    b_rows = [
        case_row("numpy", 64, 8, 1e-3),
        case_row("fused", 64, 8, status="failed", note="x"),
        case_row("naive", 64, 8, 1e-1),
        case_row("numpy", 256, 8, 1e-2),
    ]
    a, b = write_run(tmp_path / "a", a_rows), write_run(tmp_path / "b", b_rows, machine="other")
    table = compare_tables(RunDir(a).table(), RunDir(b).table(), 0.05).set_index("impl")
    assert table.loc["fused", "change"] == "now failed" and table.loc["fused", "regression"]
    assert table.loc["naive", "change"] == "now ok" and not table.loc["naive", "regression"]
    assert math.isnan(table.loc["naive", "ratio"])
    assert table.loc["numpy", "change"] == "" and table.loc["numpy", "ratio"] == 1.0
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "1 cases only in A, 1 only in B" in out and "different machines (box, other)" in out


def test_compare_figure_draws_b_against_a_and_the_ratios():
    rows = []
    for n, ratio, change in ((64, 1.0, ""), (128, 2.0, SLOWER), (256, 0.5, FASTER)):
        rows.append(
            {
                "impl": "numpy",
                "n": n,
                "d": 8,
                "dtype": "float32",
                "batch": 1,
                "heads": 1,
                "causal": False,
                "status_a": "ok",
                "status_b": "ok",
                "median_a_s": 1e-3 * n,
                "median_b_s": 1e-3 * n * ratio,
                "ratio": ratio,
                "p_value": 0.008,
                "change": change,
                "regression": change == SLOWER,
            }
        )
    fig = compare_figure(pd.DataFrame(rows), 0.05, "a", "b")
    scatter, ratios = fig.axes
    numpy = next(line for line in scatter.get_lines() if line.get_label() == "numpy")
    assert list(numpy.get_xdata()) == pytest.approx([0.064, 0.128, 0.256])
    assert list(numpy.get_ydata()) == pytest.approx([0.064, 0.256, 0.128])
    assert any(line.get_label() == "B = A" for line in scatter.get_lines())
    red = [
        line
        for line in ratios.get_lines()
        if line.get_markeredgecolor() == "red" and len(line.get_xdata())
    ]
    assert [list(line.get_xdata()) for line in red] == [[128]]
    assert scatter.get_xscale() == scatter.get_yscale() == "log" == ratios.get_yscale()
    assert "(s)" in scatter.get_xlabel() and "B / A" in ratios.get_ylabel()
    assert "(tokens)" in ratios.get_xlabel()


def test_compare_command_errors_are_one_line(tmp_path, capsys):
    a = write_run(tmp_path / "a", [case_row("numpy", 64, 8, 1e-3)])
    assert main(["compare", str(a), str(a), "--threshold", "five"]) == 2
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--threshold" in err[0] and "no such run directory" in err[1]
