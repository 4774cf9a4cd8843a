"""Comparing runs: the change and its interval by hand, a planted slowdown marked, runs of one
distribution left alone, a drifting machine ignored once normalised, status changes, warnings,
old runs refused, the figure and the command."""

import itertools
import json
import math
import platform

import numpy as np
import pandas as pd
import pytest
from test_plotting import case_row, write_run
from test_sweep import scripted_sweep

from harness.analysis.compare import (
    BY_REFERENCE,
    FASTER,
    NOT_BESIDE,
    OTHER_MACHINE,
    RAW_VALUE_ROUNDS,
    SLOWER,
    compare_rounds,
    compare_tables,
    differences,
    same_machine,
)
from harness.cli.config import SweepConfig
from harness.cli.main import main
from harness.cli.options import UsageError, parse_threshold
from harness.present.figures.compare import compare_figure
from harness.results.rundir import RunDir
from harness.results.schema import SCHEMA_VERSION


@pytest.mark.parametrize(
    ("text", "value"), [("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0", 0.0), ("150%", 1.5)]
)
def test_threshold_parsing(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5%", "5", "nan", "inf%", "", "%"])
def test_bad_thresholds_are_refused_naming_the_option(text):
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(text)


def test_a_change_is_marked_only_when_its_whole_interval_is_beyond_the_threshold():
    # Three rounds a side: the exact bootstrap's 95% interval of median(B) / median(A) runs from
    # min(B) / max(A) to max(B) / min(A) (each side's resampled median is its min or max with
    # probability 7/27 each, and (7/27)^2 > 2.5%).
    a, b = [1.0, 1.01, 1.02], [1.20, 1.21, 1.22]
    change = compare_rounds(a, b, a, b, threshold=0.05)
    assert change.normalised.value == pytest.approx(1.21 / 1.01)
    assert change.normalised.low == pytest.approx(1.20 / 1.02)
    assert change.normalised.high == pytest.approx(1.22 / 1.0)
    assert change.change == SLOWER
    assert compare_rounds(b, a, b, a, threshold=0.05).change == FASTER
    # A 7% change whose interval reaches down to 2%: not marked at 5%.
    wide = [1.05, 1.07, 1.09]
    assert compare_rounds([1.0, 1.02, 1.03], wide, [1.0, 1.02, 1.03], wide, 0.05).change == ""


def test_from_enough_rounds_the_raw_change_must_point_the_same_way_its_interval_may_hold_drift():
    rounds = RAW_VALUE_ROUNDS
    a = [1.0 + 0.01 * (i % 3) for i in range(rounds)]
    slower = [1.2 + 0.01 * (i % 3) for i in range(rounds)]
    # The machine drifted during B: its raw times go from 0.9 to 1.5, their median 1.2x A's.
    drifting = list(np.linspace(0.9, 1.5, rounds))
    change = compare_rounds(a, drifting, a, slower, threshold=0.05)
    assert change.raw.low < 1.05 < change.raw.value
    assert change.change == SLOWER
    # With three rounds a side the raw interval itself must clear the threshold.
    drifting = [0.9, 1.2, 1.5]
    assert compare_rounds(a[:3], drifting, a[:3], slower[:3], threshold=0.05).change == ""
    # B's reference workload was disturbed, not the code: the raw times did not move.
    assert compare_rounds(a, a, a, slower, threshold=0.05).change == ""
    # The raw times moved the other way: nothing is marked.
    assert compare_rounds(a, [0.8] * rounds, a, slower, threshold=0.05).change == ""


def noisy_rows(rng, factor=1.0, rounds=3, impls=("numpy", "fused")):
    """Rounds of time c n^2 d, each round's level off by 1% (the machine) and its samples by 1%."""
    rows = []
    for impl, n, d in itertools.product(impls, (128, 256, 512, 1024), (32, 64)):
        base = (2e-9 if impl == "numpy" else 1e-9) * n * n * d * (factor if impl == "fused" else 1)
        levels = base * rng.lognormal(0.0, 0.01, rounds)
        rows.append(
            case_row(impl, n, d, rounds_s=[list(lv * rng.lognormal(0.0, 0.01, 5)) for lv in levels])
        )
    return rows


def test_a_planted_12_percent_slowdown_is_marked_and_its_neighbour_is_not(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = write_run(tmp_path / "a", noisy_rows(rng))
    b = write_run(tmp_path / "b", noisy_rows(rng, factor=1.12))
    for baseline, judged_by in ((None, BY_REFERENCE), ("numpy", "ratio to numpy")):
        table = compare_tables(RunDir(a).table(), RunDir(b).table(), 0.05, baseline=baseline)
        fused, numpy = table[table["impl"] == "fused"], table[table["impl"] == "numpy"]
        assert (fused["change"] == SLOWER).all() and fused["regression"].all()
        assert (fused["judged_by"] == judged_by).all()
        assert fused["ratio"].to_numpy() == pytest.approx(1.12, rel=0.03)
        assert (numpy["change"] == "").all() and (numpy["judged_by"] == BY_REFERENCE).all()
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "16 shared cases: 8 slower, 0 faster, 8 not marked" in out
    assert "8 cases judged by their ratio to the baseline measured in the same turns" in out
    assert "SLOWER" in out and (b / "compare.png").is_file() and (b / "compare.svg").is_file()
    assert main(["compare", str(a), str(b)]) == 0  # reported, but no failing exit without the flag
    assert main(["compare", str(b), str(a), "--fail-on-regression"]) == 0  # faster is no failure


def test_two_runs_of_the_same_code_stay_quiet(tmp_path, capsys):
    rng = np.random.default_rng(2)
    a = write_run(tmp_path / "a", noisy_rows(rng))
    b = write_run(tmp_path / "b", noisy_rows(rng))
    table = compare_tables(RunDir(a).table(), RunDir(b).table(), threshold=0.05)
    assert not table["change"].isin([SLOWER, FASTER]).any()
    plots = str(tmp_path / "plots")
    assert main(["compare", str(a), str(b), "--fail-on-regression", "--out", plots]) == 0
    assert "16 shared cases: 0 slower, 0 faster, 16 not marked" in capsys.readouterr().out
    assert (tmp_path / "plots" / "compare.png").is_file()


def test_a_machine_that_drifted_is_ignored_once_normalised(tmp_path, monkeypatch):
    """Run B on a machine 30% slower in every round (its GEMM probe too): the raw times say
    1.3x slower, the normalised compare marks nothing. A code change does get marked."""
    config = SweepConfig(n=(64, 128), d=(8,), rounds=3, threads=1)
    for name, slowdown in (("a", [1.0, 1.02, 0.99]), ("b", [1.3, 1.31, 1.29])):
        (tmp_path / name).mkdir()
        scripted_sweep(tmp_path / name, monkeypatch, config=config, slowdown=slowdown)
    a, b = RunDir(tmp_path / "a").table(), RunDir(tmp_path / "b").table()
    table = compare_tables(a, b, threshold=0.05)
    assert (table["raw_ratio"] > 1.25).all()  # what a raw compare would have called slower
    assert (table["change"] == "").all() and (table["judged_by"] == BY_REFERENCE).all()
    assert table["ratio"].to_numpy() == pytest.approx(1.0, abs=0.02)
    (tmp_path / "c").mkdir()  # the same drift, and numpy's code 20% slower
    times = {"numpy": [1.2e-3] * 3, "naive": [1e-3] * 3}
    scripted_sweep(tmp_path / "c", monkeypatch, config=config, slowdown=[1.3] * 3, times=times)
    table = compare_tables(a, RunDir(tmp_path / "c").table(), 0.05, baseline="numpy")
    table = table.set_index("impl")
    assert (table.loc["numpy", "change"] == SLOWER).all()
    # numpy, the yardstick, moved: naive is judged on its own, not called faster against it
    assert (table.loc["naive", "change"] == "").all()
    assert (table.loc["naive", "judged_by"] == BY_REFERENCE).all()


def test_a_drift_the_reference_workload_missed_is_seen_through_by_the_baseline(
    tmp_path, monkeypatch
):
    """Run B's machine drifts from round to round after its probe has run (the probe saw no
    drift), and naive's code is 12% slower: its drift-normalised rounds spread from 0.95x to
    1.29x, too wide to mark; its ratio to numpy, measured in the same turns, is 1.12x in
    every round and is marked. numpy itself, judged on its own, is not."""
    config = SweepConfig(n=(64, 128), d=(8,), rounds=3, threads=1)
    (tmp_path / "a").mkdir()
    scripted_sweep(tmp_path / "a", monkeypatch, config=config)
    (tmp_path / "b").mkdir()
    times = {"numpy": [1e-3] * 3, "naive": [1.12e-3] * 3}
    drift = {"slowdown": [1.0, 0.85, 1.15], "probe_slowdown": [1.0]}
    scripted_sweep(tmp_path / "b", monkeypatch, config=config, times=times, **drift)
    a, b = RunDir(tmp_path / "a").table(), RunDir(tmp_path / "b").table()
    alone = compare_tables(a, b, 0.05).set_index("impl")
    assert (alone["change"] == "").all()
    table = compare_tables(a, b, 0.05, baseline="numpy").set_index("impl")
    assert (table.loc["naive", "judged_by"] == "ratio to numpy").all()
    assert table.loc["naive", "ratio"].to_numpy() == pytest.approx(1.12)
    assert (table.loc["naive", "change"] == SLOWER).all()
    assert (table.loc["numpy", "change"] == "").all()
    assert (table.loc["numpy", "judged_by"] == BY_REFERENCE).all()


def test_the_baseline_s_own_change_must_show_beside_the_others_too(tmp_path, monkeypatch):
    """Run B's machine ran 30% slow after its probes (which saw nothing), and naive's code is
    12% slower: numpy's drift-normalised time says 1.3x slower, but against naive, measured in
    the same turns, numpy got faster: the machine, not numpy's code. numpy is not marked, and
    naive is judged by its ratio to numpy. A change of numpy's code shows both ways."""
    config = SweepConfig(n=(64, 128), d=(8,), rounds=3, threads=1)
    (tmp_path / "a").mkdir()
    scripted_sweep(tmp_path / "a", monkeypatch, config=config)
    for name, times in (
        ("b", {"numpy": [1e-3] * 3, "naive": [1.12e-3] * 3}),
        ("c", {"numpy": [1.2e-3] * 3, "naive": [1e-3] * 3}),
    ):
        (tmp_path / name).mkdir()
        drift = {"slowdown": [1.3] * 3, "probe_slowdown": [1.0]}
        scripted_sweep(tmp_path / name, monkeypatch, config=config, times=times, **drift)
    a, b, c = (RunDir(tmp_path / name).table() for name in "abc")
    alone = compare_tables(a, b, 0.05).set_index("impl")
    assert (alone.loc["numpy", "change"] == SLOWER).all()
    table = compare_tables(a, b, 0.05, baseline="numpy").set_index("impl")
    assert (table.loc["numpy", "change"] == "").all()
    assert (table.loc["numpy", "judged_by"] == f"{BY_REFERENCE}, {NOT_BESIDE}").all()
    assert (table.loc["naive", "change"] == SLOWER).all()
    assert (table.loc["naive", "judged_by"] == "ratio to numpy").all()
    table = compare_tables(a, c, 0.05, baseline="numpy").set_index("impl")
    assert (table.loc["numpy", "change"] == SLOWER).all()
    assert (table.loc["numpy", "judged_by"] == BY_REFERENCE).all()


def test_runs_from_two_machines_are_never_judged(tmp_path, capsys):
    rng = np.random.default_rng(3)
    a = write_run(tmp_path / "a", noisy_rows(rng))
    b = write_run(tmp_path / "b", noisy_rows(rng, factor=2.0), machine="other")
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert "different machines" in out and "no case is judged" in out
    assert OTHER_MACHINE in out


def test_one_host_name_on_two_cpus_is_two_machines():
    zen4 = {"machine": {"id": "vm", "cpu": "AMD EPYC", "cpu_signature": "AuthenticAMD, family 25"}}
    zen5 = {"machine": {"id": "vm", "cpu": "AMD EPYC", "cpu_signature": "AuthenticAMD, family 26"}}
    assert not same_machine(zen4, zen5)
    assert "vm: AMD EPYC (AuthenticAMD, family 26)" in differences(zen4, zen5)[0]
    assert same_machine(zen5, zen5)
    older = {"machine": {"id": "vm", "cpu": "AMD EPYC"}}  # recorded before the signature
    assert same_machine(older, zen5)
    assert not same_machine(older, {"machine": {"id": "vm", "cpu": "Intel Xeon"}})


def test_this_machine_is_described_by_its_cpu_signature():
    from harness.results.machine import cpu_signature, describe_machine

    signature = describe_machine()["cpu_signature"]
    assert signature == cpu_signature() and signature.split(",")[0].strip()
    if platform.machine() in ("x86_64", "AMD64"):
        assert "family" in signature and signature.endswith(("AVX-512", "AVX2", "AVX", "SSE2"))


def test_differences_in_conditions_are_warned_about():
    meta = {
        "machine": {"id": "box", "cpu": "X"},
        "threads": 2,
        "versions": {"numpy": "2.4.6", "numba": "0.68.1"},
        "method": {"rounds": 3, "statistic": "median"},
    }
    other = {**meta, "threads": 4, "versions": {"numpy": "2.5.0", "numba": "0.68.1"}}
    other["method"] = {"rounds": 5, "statistic": "median"}
    other["environment"] = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}
    lines = differences(meta, other)
    assert lines == [
        "warning: threads differ (2, 4)",
        "warning: library versions differ: numpy 2.4.6 -> 2.5.0",
        "warning: the environment differs in NUMBA_CPU_FEATURES, NUMBA_CPU_NAME",
        "warning: the method differs in rounds",
    ]
    assert differences(meta, meta) == []


def test_a_run_of_the_old_schema_is_refused_with_how_to_measure_it_again(
    tmp_path, capsys, figures_not_drawn
):
    a = write_run(tmp_path / "a", [case_row("numpy", 64, 8, 1e-3)])
    meta = json.loads((a / "meta.json").read_text())
    meta.update(schema_version=1, command="attnbench run --impl numpy --n 64 --d 8")
    (a / "meta.json").write_text(json.dumps(meta))
    b = write_run(tmp_path / "b", [case_row("numpy", 64, 8, 1e-3)])
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "schema 1" in err and "attnbench run --impl numpy --n 64 --d 8" in err
    migrated = RunDir(a).meta()  # read as the current schema, saying where it came from
    assert migrated["migrated_from"] == 1 and migrated["schema_version"] == SCHEMA_VERSION
    assert (
        migrated["method"]["round_process"] == "one worker per implementation for the whole sweep"
    )
    assert main(["report", str(a)]) == 0  # a report of it still works


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
    table = compare_tables(RunDir(a).table(), RunDir(b).table(), 0.05, judge=False)
    table = table.set_index("impl")
    assert table.loc["fused", "change"] == "now failed" and table.loc["fused", "regression"]
    assert table.loc["naive", "change"] == "now ok" and not table.loc["naive", "regression"]
    assert math.isnan(table.loc["naive", "ratio"])
    assert table.loc["numpy", "change"] == OTHER_MACHINE
    assert table.loc["numpy", "ratio"] == 1.0
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1  # a failure still is
    out = capsys.readouterr().out
    assert "1 cases only in A, 1 only in B" in out and "different machines (box:" in out


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
                "raw_ratio": ratio,
                "ratio": ratio,
                "ratio_low": ratio * 0.98,
                "ratio_high": ratio * 1.02,
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
    assert main(["compare", str(a), str(a), "--baseline", "torch_sdpa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--threshold" in err[0] and "no such run directory" in err[1]
    assert err[2].endswith(
        "--baseline: 'torch_sdpa' was not measured in both runs; choose one of numpy"
    )


def test_a_run_records_the_variables_that_change_the_libraries_code(monkeypatch):
    from harness.results.machine import code_path_environment

    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("HOME_OF_SOMETHING_ELSE", "x")
    recorded = code_path_environment()
    assert recorded["NUMBA_CPU_NAME"] == "haswell" and recorded["OPENBLAS_CORETYPE"] == "Haswell"
    assert "HOME_OF_SOMETHING_ELSE" not in recorded
