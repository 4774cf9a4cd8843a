"""Report: findings computed from the data (checked against hand-worked numbers on synthetic runs),
report.md and a self-contained report.html."""

import json
import math
import re

import pandas as pd
import pytest
from test_plotting import NS, case_row, standard_rows, write_run

from harness.analysis.findings import findings
from harness.analysis.ratios import paired_ratios
from harness.analysis.runs import load_runs
from harness.analysis.summaries import (
    best_peak_fraction,
    causal_speedups,
    crossovers,
    exponents,
    fastest_by_n,
    problem_cases,
    unstable_cases,
)
from harness.cli.main import main
from harness.present.plots import figures
from harness.present.report import build_report
from harness.present.report_tables import variant_table
from harness.results.schema import CUDA_TIMER


@pytest.fixture
def frame(tmp_path):
    return load_runs([write_run(tmp_path / "run", standard_rows())]).frame


def test_fastest_at_each_n_with_its_lead(frame):
    fastest = fastest_by_n(frame)
    d32 = fastest[fastest["d"] == 32].set_index("n")
    # numpy 1e-9 n^2 d against fused 4e-7 n d: numpy is faster below n = 400
    assert list(d32["fastest"]) == ["numpy", "numpy", "numpy", "fused", "numpy"]  # 1024: fused
    assert d32.loc[64, "runner_up"] == "fused"  # disagrees, naive is skipped
    assert d32.loc[64, "lead"] == pytest.approx((4e-7 * 64) / (1e-9 * 64 * 64))
    assert pd.isna(d32.loc[1024, "runner_up"])
    d64 = fastest[fastest["d"] == 64].set_index("n")
    assert list(d64["fastest"]) == ["numpy"] * 3 + ["fused"] * 2
    crossing = crossovers(frame)
    assert list(crossing["n_cross"]) == pytest.approx([400.0, 400.0])
    assert set(crossing["faster_above"]) == {"fused"}


def test_crossover_is_interpolated_in_log_space(tmp_path):
    # quadratic 1e-9 n^2 against linear 1e-6 n: equal at n = 1000, between 512 and 1024
    rows = [case_row("quad", n, 16, 1e-9 * n * n) for n in NS]
    rows += [case_row("lin", n, 16, 1e-6 * n) for n in NS]
    frame = load_runs([write_run(tmp_path / "run", rows)]).frame
    cross = crossovers(frame)
    assert len(cross) == 1
    row = cross.iloc[0]
    assert (row["faster_above"], row["overtakes"]) == ("lin", "quad")
    assert row["n_cross"] == pytest.approx(1000.0, rel=1e-9)
    assert row["between"] == "512–1024" and row["lasting"]
    text = findings(frame, several=False)
    assert (
        "float32, d=16: lin overtakes quad at n ≈ 1000 (order flips between n = 512–1024"
        in " ".join(text)
    )


def test_a_flip_that_flips_back_is_not_lasting(tmp_path):
    times_a = {64: 1.0, 128: 1.0, 256: 1.0, 512: 1.0}
    times_b = {64: 2.0, 128: 0.5, 256: 2.0, 512: 2.0}  # one noisy point at 128
    rows = [case_row("a", n, 8, t) for n, t in times_a.items()]
    rows += [case_row("b", n, 8, t) for n, t in times_b.items()]
    cross = crossovers(load_runs([write_run(tmp_path / "run", rows)]).frame)
    # b overtakes a between 64 and 128, a overtakes b back between 128 and 256 and stays ahead
    assert list(cross["faster_above"]) == ["b", "a"]
    assert list(cross["lasting"]) == [False, True]
    assert cross.iloc[0]["n_cross"] == pytest.approx(math.sqrt(64 * 128))  # log-midpoint
    assert cross.iloc[1]["n_cross"] == pytest.approx(math.sqrt(128 * 256))
    text = " ".join(findings(load_runs([tmp_path / "run"]).frame, several=False))
    assert "a overtakes b at n ≈ 181" in text and "1 earlier flips of order" in text


def test_exponents_table(frame):
    table = exponents(frame).set_index(["d", "impl"])
    assert table.loc[(32, "numpy"), "time_exponent"] == pytest.approx(2.0)
    assert table.loc[(32, "numpy"), "memory_exponent"] == pytest.approx(2.0)
    assert table.loc[(32, "fused"), "time_exponent"] == pytest.approx(1.0)
    assert table.loc[(32, "fused"), "memory_exponent"] == pytest.approx(1.0)
    assert table.loc[(32, "fused"), "fitted_n"] == "128–512"  # 1024 disagrees: not fitted
    assert table.loc[(64, "fused"), "fitted_n"] == "256–1024"
    assert table.loc[(64, "naive"), "fitted_n"] == "64–256"


def test_best_fraction_of_the_peak(frame):
    best = best_peak_fraction(frame).set_index("impl")
    # fused: 4 n^2 d flops in 4e-7 n d s = 1e7 n flop/s, best at n = 1024 (d = 64); peak 100
    assert best.loc["fused", "n"] == 1024 and best.loc["fused", "d"] == 64
    assert best.loc["fused", "peak_fraction"] == pytest.approx(1e7 * 1024 / 1e9 / 100)
    # numpy: 4 / 1e-9 flop/s = 4 GFLOP/s everywhere
    assert best.loc["numpy", "peak_fraction"] == pytest.approx(0.04)
    assert list(best.index) == ["fused", "numpy", "naive"]  # closest to the peak first


def test_gpu_rows_have_no_fraction_of_the_cpu_peak(tmp_path):
    rows = [*standard_rows(), case_row("gpu", 512, 32, 1e-6, timer=CUDA_TIMER)]
    assert rows[-1]["peak_fraction"] > 1  # as a run written before GPU rows went without one
    best = best_peak_fraction(load_runs([write_run(tmp_path / "run", rows)]).frame)
    assert "gpu" not in set(best["impl"])


def test_a_gpu_only_report_has_no_peak_section(tmp_path, figures_not_drawn):
    rows = [case_row("gpu", n, 32, 1e-12 * n * n, timer=CUDA_TIMER) for n in NS]
    run = write_run(tmp_path / "gpu", rows)
    assert main(["report", str(run), "--baseline", "gpu"]) == 0
    md = (run / "report.md").read_text()
    assert "Best fraction" not in md and "Closest to the" not in md


def test_problem_cases_keep_their_notes(frame):
    problems = problem_cases(frame)
    skipped = problems[problems["status"] == "skipped"]
    assert list(skipped["impl"]) == ["naive"]  # cases with the same note: one row
    assert skipped.iloc[0]["cases"] == "n=512 d=32, n=1024 d=32, n=512 d=64, n=1024 d=64"
    assert skipped.iloc[0]["note"] == "predicted 9 s per call > budget 2 s"
    disagree = problems[problems["status"] == "disagrees"].iloc[0]
    assert (disagree["impl"], disagree["cases"]) == ("fused", "n=1024 d=32")


def test_unstable_cases_are_judged_on_the_intervals_the_report_states(tmp_path, figures_not_drawn):
    """naive's rounds at n = 256, d = 64 disagree by half: its median's interval (and its
    ratio's to numpy) spans 50%; every other case's rounds agree within 4%."""
    rows = [r for r in standard_rows() if (r["impl"], r["n"], r["d"]) != ("naive", 256, 64)]
    t = 1e-6 * 256 * 256 * 64
    rows.append(case_row("naive", 256, 64, rounds_s=[[t], [1.5 * t], [t]]))
    run = write_run(tmp_path / "run", rows)
    listed = unstable_cases(load_runs([run]).frame, "numpy")
    assert listed[["impl", "n", "d"]].values.tolist() == [["naive", 256, 64]]
    assert listed.loc[0, "median_width"] == pytest.approx(0.5)
    assert listed.loc[0, "ratio_width"] > 0.4
    assert listed.loc[0, "round_spread"] == pytest.approx(1.5)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Unstable cases" in md and "1 measured cases are unstable" in md
    assert "| naive | float32 | 64 | 256 |" in md and "| 50% |" in md


def test_ratios_carry_intervals_and_ties_are_called_ties(tmp_path):
    """numpy and fused take the same time in two of three rounds and differ by 1% in the other:
    the interval of their ratio holds 1, so neither is called faster."""
    t = 1e-3
    rows = [
        case_row("numpy", 512, 32, rounds_s=[[t], [t], [t]]),
        case_row("fused", 512, 32, rounds_s=[[t], [1.01 * t], [0.99 * t]]),
        case_row("numpy", 1024, 32, rounds_s=[[4 * t], [4 * t], [4 * t]]),
        case_row("fused", 1024, 32, rounds_s=[[2 * t], [2.1 * t], [1.9 * t]]),
    ]
    frame = load_runs([write_run(tmp_path / "run", rows)]).frame
    fastest = fastest_by_n(frame).set_index("n")
    assert fastest.loc[512, "tied"] and not fastest.loc[1024, "tied"]
    assert (fastest.loc[1024, "lead_low"], fastest.loc[1024, "lead_high"]) == pytest.approx(
        (4 / 2.1, 4 / 1.9)
    )
    text = " ".join(findings(frame, several=False, baseline="numpy"))
    assert (
        "time over numpy's (95% interval; below 1 is faster): fused 0.5× [0.475, 0.525] faster"
        in text
    )
    assert "fused is fastest" in text
    ratios = paired_ratios(frame, "numpy").set_index("n")
    assert ratios.loc[512, "relation"] == "tied"
    assert (ratios.loc[512, "ratio_low"], ratios.loc[512, "ratio_high"]) == (0.99, 1.01)


def test_report_writes_markdown_and_self_contained_html(tmp_path, capsys):
    run = write_run(tmp_path / "run", standard_rows())
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    for heading in (
        "## Machine and settings",
        "## Findings",
        "### Fastest implementation at each n",
        "### Crossovers",
        "### Scaling exponents",
        "### Best fraction of the CPU matrix-product peak",
        "## Plots",
        "## Skipped, failed and disagreeing cases",
    ):
        assert heading in md
    assert "Box CPU 3000" in md and "| numpy | time_exponent" not in md
    assert "![time_vs_n_float32" in md and "(time_vs_n_float32.png)" in md
    assert "predicted 9 s per call > budget 2 s" in md and "nan" not in md
    assert "Closest to the matrix-product peak in float32: fused at 10.2%" in md
    assert "float32, d=64: fused overtakes numpy at n ≈ 400" in md
    page = (run / "report.html").read_text()
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == 7 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<table" in page and "Findings" in page
    assert "report.md" in capsys.readouterr().out


def test_the_peak_section_says_which_statistic_the_run_took(tmp_path, figures_not_drawn):
    """Runs since the median peak show its best beside it; older ones are said to take the best."""
    rows = [{**case_row("fused", n, 64, 4e-7 * n * 64), "gemm_gflops": 100.0} for n in NS]
    assert main(["report", str(write_run(tmp_path / "old", rows))]) == 0
    old = (tmp_path / "old" / "report.md").read_text()
    assert "this run took the best of the" in old and "gemm_best_gflops" not in old
    for row in rows:
        row["gemm_best_gflops"] = 110.0
    assert main(["report", str(write_run(tmp_path / "new", rows))]) == 0
    new = (tmp_path / "new" / "report.md").read_text()
    assert "the median rate of the matrix products measured before each of the shape's" in new
    assert "| gemm_gflops | gemm_best_gflops | peak_fraction |" in new
    assert "| 100 | 110 |" in new


def test_a_run_with_both_masks_reports_the_causal_speedup_and_plots_each_mask(tmp_path):
    full = [case_row("fused", n, 64, 4e-7 * n * 64) for n in NS]
    causal = [{**case_row("fused", n, 64, 2e-7 * n * 64), "causal": True} for n in NS]
    run = write_run(tmp_path / "run", full + causal)
    table = causal_speedups(load_runs([run]).frame)
    assert tuple(table["n"]) == NS and table["speedup"].to_numpy() == pytest.approx(2.0)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "### Causal mask: speed-up over the full mask" in md
    finding = f"Causal mask, float32, d=64, n = {NS[-1]}: fused 2.00× [2.00, 2.00] faster"
    assert finding in md  # every round 2x: the interval too
    assert "### Median time per call: float32, d = 64\n" in md
    assert "### Median time per call: float32, d = 64, causal\n" in md  # not overwritten
    for stem in ("time_vs_n_float32", "throughput_float32", "memory_float32", "agreement"):
        assert (run / f"{stem}.png").exists() and (run / f"{stem}_causal.png").exists()
    built, _ = figures(load_runs([run]))
    labels = {stem: built[stem].axes[0].get_ylabel() for stem in built if "throughput" in stem}
    assert "4·n²·d FLOPs" in labels["throughput_float32"]
    assert "2·n²·d (causal) FLOPs" in labels["throughput_float32_causal"]  # half the products


def test_the_causal_speedup_resamples_the_rounds_both_masks_took_turns_in(tmp_path):
    """One disturbed round (the full call 1.5x slow in it) moves the pooled figure a little
    and the interval a lot; a run of one round states no interval."""
    full = case_row("fused", 4096, 64, rounds_s=[[2.0e-2] * 4, [2.0e-2] * 4, [3.0e-2] * 4])
    causal = {**case_row("fused", 4096, 64, rounds_s=[[1.0e-2] * 4] * 3), "causal": True}
    single = case_row("fused", 2048, 64, rounds_s=[[5e-3] * 4])
    single_causal = {**case_row("fused", 2048, 64, rounds_s=[[2.5e-3] * 4]), "causal": True}
    run = write_run(tmp_path / "run", [full, causal, single, single_causal])
    table = causal_speedups(load_runs([run]).frame).set_index("n")
    assert table.loc[4096, "speedup"] == pytest.approx(2.0)  # pooled: 8 of 12 samples at 2x
    assert table.loc[4096, "speedup_low"] == pytest.approx(2.0)
    assert table.loc[4096, "speedup_high"] == pytest.approx(3.0)  # rounds of the slow one
    assert table.loc[2048, "speedup"] == pytest.approx(2.0)
    assert math.isnan(table.loc[2048, "speedup_low"]) and math.isnan(
        table.loc[2048, "speedup_high"]
    )


def test_report_of_a_bad_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a run directory" in err


def test_report_of_a_tiny_real_run(tmp_path):
    out = tmp_path / "run"
    argv = [
        "run",
        "--impl",
        "numpy,naive",
        "--n",
        "16,32,64",
        "--d",
        "8",
        "--target",
        "0.02",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "numpy" in md and "naive" in md and "Scaling exponents" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["machine"]["cpu_signature"] in md  # the CPU named past its brand string
    for pool in meta["blas"]:
        if pool.get("architecture"):  # which kernels the GEMM reference ran
            assert f"{pool['architecture']} kernels" in md


def test_a_run_tracked_by_git_is_reported_elsewhere_unless_asked(
    tmp_path, monkeypatch, figures_not_drawn
):
    """The committed sample stays as committed: its report goes to results/reports/<name>."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    run = write_run(tmp_path / "results" / "sample", standard_rows())
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "results/sample"], cwd=tmp_path, check=True)
    assert main(["report", str(run)]) == 0
    assert not (run / "report.md").exists()
    assert (tmp_path / "results" / "reports" / "sample" / "report.md").is_file()
    assert main(["report", str(run), "--out", str(run)]) == 0  # asked for: written there
    assert (run / "report.md").is_file()


def test_the_report_names_what_the_run_left_out(tmp_path, capsys, figures_not_drawn):
    run = write_run(tmp_path / "run", standard_rows())
    meta = json.loads((run / "meta.json").read_text())
    meta["not_measured"] = {"torch_sdpa": "torch is not installed (pip install 'attnbench[peers]')"}
    (run / "meta.json").write_text(json.dumps(meta))
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Not measured here" in md
    assert "torch_sdpa: torch is not installed (pip install 'attnbench[peers]')" in md
    out = capsys.readouterr().out
    assert "findings:\n  - " in out and out.rstrip().splitlines()[-1].startswith("report: ")


def test_no_fastest_is_named_where_a_faster_case_was_disturbed(tmp_path):
    """At n = 512 only the slow loops are stable: they are not called fastest."""
    rows = [case_row("naive", n, 16, 1e-6 * n * n) for n in (256, 512)]
    rows += [case_row("fused", n, 16, 1e-9 * n * n) for n in (256, 512)]
    rows[-1]["unstable"] = True  # fused at n = 512: faster, but its rounds disagreed
    frame = load_runs([write_run(tmp_path / "run", rows)]).frame
    text = " ".join(findings(frame, several=False, baseline="naive"))
    assert "n = 512, no fastest can be named: fused measured faster than naive but unstable" in text
    assert "naive is fastest" not in text
    blocks = build_report(load_runs([tmp_path / "run"]), {}, "t")
    fastest = next(b[1] for b in blocks if b[0] == "table" and "fastest" in b[1].columns)
    named = dict(zip(fastest["n"], fastest["fastest"], strict=True))
    assert named == {256: "fused", 512: "none named (fused faster but unstable)"}


def test_the_report_says_which_code_each_implementation_ran(tmp_path):
    rows = standard_rows()
    for row in rows:
        if row["impl"] == "fused":
            row["variant"] = "tiled 8x32" if row["n"] >= 256 else "decode"
    frame = load_runs([write_run(tmp_path / "run", rows)]).frame
    table = variant_table(frame, several=False).set_index("variant")
    assert set(table["impl"]) == {"fused"}  # the others have one path: no row
    assert table.loc["tiled 8x32", "cases"] == len(frame.query("impl == 'fused' and n >= 256"))
    assert table.loc["decode", "cases"] == len(frame.query("impl == 'fused' and n < 256"))
