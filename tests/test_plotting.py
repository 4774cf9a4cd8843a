"""Plots: the content of each figure (lines, labels, units, scales, exponents, peak, markers for
cases without a valid timing), checked through matplotlib's objects on synthetic runs.

`write_run` and `case_row` build run directories with known timings; test_report and
test_compare use them too.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.analysis import stats
from harness.analysis.runs import fit_exponent, load_runs
from harness.cli.main import main
from harness.present.figures.agreement import agreement_figure
from harness.present.figures.compile_time import compile_figure
from harness.present.figures.memory import memory_figure
from harness.present.figures.speedup import speedup_figure
from harness.present.figures.style import declared_styles, impl_style
from harness.present.figures.throughput import throughput_figure
from harness.present.figures.time_vs_d import fixed_n, time_vs_d_figure
from harness.present.figures.time_vs_n import time_vs_n_figure
from harness.present.plots import figures, save_figure
from harness.results.cases import Case
from harness.results.rundir import RunDir
from harness.results.schema import CUDA_TIMER

PEAKS = {"float32": 100.0, "float64": 50.0}
NOISE = (0.98, 0.99, 1.0, 1.01, 1.02)  # samples around the median: the median is exact


def case_row(
    impl,
    n,
    d,
    time_s=None,
    dtype="float32",
    status="ok",
    mem=None,
    err=1e-7,
    note="",
    samples_s=None,
    compile_s=0.0,
    compile_source="none",
    timer="perf_counter",
    rounds_s=None,
    reference_rates=None,
):
    """One results.jsonl record, as the sweep writes it. The samples come in rounds
    (`rounds_s`, or the samples cut into three), each with its reference rate (default 100)."""
    case = Case(impl, n, d, dtype)
    row = {
        **case.to_dict(),
        "status": status,
        "note": note,
        "flops": case.flops,
        "score_matrix_bytes": case.score_matrix_bytes,
        "tolerance": 1e-5,
        "max_rel_err": err,
        "max_abs_err": err,
    }
    if status in ("ok", "disagrees"):
        if rounds_s is None:
            samples = list(samples_s) if samples_s is not None else [time_s * f for f in NOISE]
            rounds_s = [list(chunk) for chunk in np.array_split(samples, 3) if len(chunk)]
        samples = [s for r in rounds_s for s in r]
        round_medians = [float(np.median(r)) for r in rounds_s]
        rates = reference_rates or [100.0] * len(rounds_s)
        interval = stats.pooled_median(rounds_s)
        row.update(
            rounds=len(rounds_s),
            round_medians_s=round_medians,
            round_samples_s=[list(r) for r in rounds_s],
            round_reference_rates=rates,
            round_normalised=[t * r for t, r in zip(round_medians, rates, strict=True)],
            median_low_s=interval.low,
            median_high_s=interval.high,
            round_spread=max(round_medians) / min(round_medians),
            drift_reference="gemm",
        )
        median = float(np.median(samples))
        q25, q75 = np.percentile(samples, [25, 75])
        row.update(
            median_s=median,
            iqr_s=q75 - q25,
            min_s=min(samples),
            max_s=max(samples),
            mean_s=float(np.mean(samples)),
            samples=len(samples),
            samples_s=samples,
            first_call_s=median + compile_s,
            compile_s=compile_s,
            compile_source=compile_source,
            timer=timer,
            peak_mem_bytes=mem,
            gflops=case.flops / median / 1e9,
            peak_fraction=case.flops / median / 1e9 / PEAKS[dtype],
        )
    return row


def write_run(path, rows, machine="box", threads=4, peaks=PEAKS):
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    run.write_meta(
        {
            "machine": {"id": machine, "cpu": f"{machine.title()} CPU 3000", "arch": "x86_64"},
            "threads": threads,
            "gemm_peak_gflops": peaks,
            "settings": {"n": sorted({r["n"] for r in rows}), "d": sorted({r["d"] for r in rows})},
            "started": "2026-01-01T00:00:00+00:00",
        }
    )
    for row in rows:
        run.append(row)
    run.write_csv()
    return path


NS = (64, 128, 256, 512, 1024)


def standard_rows(dtype="float32", scale=1.0):
    """numpy: 1e-9 n^2 d s, O(n^2) memory; fused: 4e-7 n d s, O(n) memory, faster above n = 400;
    naive: 1e-6 n^2 d, skipped from n = 512 on; fused disagrees at n = 1024, d = 32."""
    rows = []
    for d in (32, 64):
        for n in NS:
            rows.append(case_row("numpy", n, d, scale * 1e-9 * n * n * d, dtype, mem=8 * n * n))
            if n == 1024 and d == 32:
                rows.append(
                    case_row(
                        "fused",
                        n,
                        d,
                        4e-7 * n * d,
                        dtype,
                        status="disagrees",
                        mem=64 * n,
                        err=1e-2,
                        note="max_rel_err 0.01 > tolerance",
                    )
                )
            else:
                rows.append(
                    case_row(
                        "fused",
                        n,
                        d,
                        scale * 4e-7 * n * d,
                        dtype,
                        mem=64 * n,
                        compile_s=1.5,
                        compile_source="compiled",
                    )
                )
            if n < 512:
                rows.append(case_row("naive", n, d, scale * 1e-6 * n * n * d, dtype, mem=4 * n * n))
            else:
                rows.append(
                    case_row(
                        "naive",
                        n,
                        d,
                        dtype=dtype,
                        status="skipped",
                        note="predicted 9 s per call > budget 2 s",
                    )
                )
    return rows


@pytest.fixture
def runs(tmp_path):
    return load_runs([write_run(tmp_path / "run", standard_rows())])


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_style_is_the_one_an_implementation_declares_and_stable_for_others():
    from impls import numpy_vectorized

    color, marker = numpy_vectorized.STYLE
    assert impl_style("numpy") == {"color": color, "marker": marker}
    declared = declared_styles()
    assert {"naive", "numpy", "numba_parallel", "numba_cuda", "torch_sdpa"} <= set(declared)
    assert len({color for color, _ in declared.values()}) == len(declared)
    assert impl_style("my_impl") == impl_style("my_impl")
    # the same in a fresh process (no dependence on hash randomisation)
    code = "from harness.present.figures.style import impl_style; print(impl_style('my_impl'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(impl_style("my_impl"))


def test_importing_plotting_has_no_side_effects():
    code = (
        "import sys, harness.present.plots, harness.present.report, harness.present.comparison; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exponent_is_fitted_over_the_largest_sizes():
    n = np.array([64, 128, 256, 512, 1024])
    assert fit_exponent(n, 3e-9 * n**2.0) == pytest.approx(2.0)
    kinked = np.where(n < 256, 1e-3 * n, 1e-3 * 256 * (n / 256) ** 2)  # linear, then quadratic
    assert fit_exponent(n, kinked) == pytest.approx(2.0)
    assert fit_exponent(n, kinked, points=5) < 1.9
    assert fit_exponent([64], [1.0]) is None
    assert fit_exponent([64, 128], [0.0, 1.0]) is None


def test_time_vs_n_has_a_line_per_impl_with_its_exponent_units_and_log_axes(runs):
    fig = time_vs_n_figure(runs, "float32")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2  # a panel per d
    ax = axes[0]
    labels = lines_by_label(ax)
    assert labels.keys() >= {
        r"numpy  $\propto n^{2.00}$",
        r"fused  $\propto n^{1.00}$",
        r"naive  $\propto n^{2.00}$",
    }
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "(tokens)" in ax.get_xlabel() and "(s)" in ax.get_ylabel()
    assert ax.get_title().startswith("d = 32")
    title = fig._suptitle.get_text()
    assert "float32" in title and "4 threads" in title and "Box CPU 3000" in title
    assert len(ax.collections) == 3  # a band per line: the median's interval
    from matplotlib.colors import to_rgb

    numpy_color = to_rgb(impl_style("numpy")["color"])
    band = next(c for c in ax.collections if tuple(c.get_facecolor()[0][:3]) == numpy_color)
    band = band.get_paths()[0].vertices[:, 1]
    numpy_times = 1e-9 * np.array(NS) ** 2 * 32
    # The samples (x 0.98 .. 1.02) come in rounds of (0.98, 0.99), (1.0, 1.01), (1.02): a
    # resample of round 3 three times (probability 1/27 > 2.5%) has the pooled median 1.02.
    assert band.max() == pytest.approx(numpy_times.max() * 1.02)


def test_disagreeing_and_skipped_cases_are_marked_not_drawn_as_timings(runs):
    ax = time_vs_n_figure(runs, "float32").axes[0]
    fused = lines_by_label(ax)[r"fused  $\propto n^{1.00}$"]
    assert list(fused.get_xdata()) == [64, 128, 256, 512]  # n=1024 disagrees: not a timing
    markers = {line.get_marker(): line for line in ax.get_lines() if line.get_linestyle() == "None"}
    assert list(markers["x"].get_xdata()) == [512, 1024]  # naive skipped
    assert markers["x"].get_color() == impl_style("naive")["color"]
    assert list(markers[r"$\neq$"].get_xdata()) == [1024]
    assert markers[r"$\neq$"].get_color() == impl_style("fused")["color"]
    # the markers sit in a strip above every timing
    assert markers["x"].get_ydata()[0] > 0.8
    texts = legend_texts(ax)
    assert any(t.startswith("skipped") for t in texts)
    assert any(t.startswith("disagrees") for t in texts)


def test_throughput_has_the_measured_peak_as_a_line(runs):
    ax = throughput_figure(runs, "float32").axes[0]
    peak = next(line for line in ax.get_lines() if "peak" in line.get_label())
    assert list(peak.get_ydata()) == [100.0, 100.0]
    assert "100 GFLOP/s" in peak.get_label()
    numpy = lines_by_label(ax)["numpy"]
    assert numpy.get_ydata() == pytest.approx(
        4 * np.array(NS) * 32 / (1e-9 * 32) / 1e9 / np.array(NS)
    )
    assert "GFLOP/s" in ax.get_ylabel() and ax.get_yscale() == "log"


def test_a_gpu_run_draws_no_cpu_peak(tmp_path):
    rows = [case_row("gpu", n, 32, 1e-12 * n * n, timer=CUDA_TIMER) for n in NS]
    gpu = write_run(tmp_path / "gpu", rows, machine="gpubox")
    ax = throughput_figure(load_runs([gpu]), "float32").axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["gpu"]
    cpu = write_run(tmp_path / "cpu", standard_rows(), machine="box")
    ax = throughput_figure(load_runs([cpu, gpu]), "float32").axes[0]
    peaks = [line.get_label() for line in ax.get_lines() if "peak" in line.get_label()]
    assert len(peaks) == 1 and "@ box" in peaks[0]  # the CPU run's peak only


def test_speedup_is_the_baseline_time_over_each_time(runs):
    ax = speedup_figure(runs, "float32", "numpy").axes[1]  # d = 64
    lines = lines_by_label(ax)
    assert lines["numpy"].get_ydata() == pytest.approx([1.0] * len(NS))
    assert "naive" not in lines  # 1000x slower: it would squeeze the axis, so it is named
    assert any("naive: 0.001× (left out)" in text.get_text() for text in ax.texts)
    n = np.array(NS)
    assert lines["fused"].get_ydata() == pytest.approx(1e-9 * n * n / (4e-7 * n))
    assert "speedup over numpy" in ax.get_ylabel()


def test_time_vs_d_uses_the_largest_n_where_most_are_ok(runs):
    frame = runs.frame
    assert fixed_n(frame) == 512  # at 1024 only numpy is ok at every d (fused disagrees once)
    fig = time_vs_d_figure(runs, "float32")
    assert "n = 512" in fig._suptitle.get_text()
    ax = fig.axes[0]
    numpy = next(line for label, line in lines_by_label(ax).items() if label.startswith("numpy"))
    assert list(numpy.get_xdata()) == [32, 64]
    assert ax.get_xlabel() == "head dimension d"
    assert "naive: no valid timing" in legend_texts(ax)


def test_memory_has_its_slope_and_the_score_matrix_for_reference(runs):
    ax = memory_figure(runs, "float32").axes[0]
    labels = lines_by_label(ax)
    assert r"numpy  $\propto n^{2.00}$" in labels and r"fused  $\propto n^{1.00}$" in labels
    scores = next(line for label, line in labels.items() if "score matrix" in label)
    assert list(scores.get_ydata()) == [4 * n * n for n in NS]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "(bytes)" in ax.get_ylabel()


def test_agreement_draws_errors_per_dtype_with_tolerance_and_rings_disagreements(tmp_path):
    rows = standard_rows("float32") + standard_rows("float64")
    runs = load_runs([write_run(tmp_path / "run", rows)])
    fig = agreement_figure(runs)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "float32, d = 32",
        "float32, d = 64",
        "float64, d = 32",
        "float64, d = 64",
    ]
    ax = axes[0]
    tolerance = lines_by_label(ax)["tolerance"]
    assert list(tolerance.get_ydata()) == [1e-5] * len(NS)
    assert lines_by_label(ax)["fused"].get_ydata()[-1] == pytest.approx(
        1e-2
    )  # drawn: it's the finding
    rings = [line for line in ax.get_lines() if line.get_markeredgecolor() == "red"]
    assert [list(r.get_xdata()) for r in rings if len(r.get_xdata())] == [[1024]]
    assert "disagrees: error above tolerance" in legend_texts(ax)
    assert ax.get_yscale() == "log" and "relative" in ax.get_ylabel()


def test_compile_figure_has_a_bar_per_impl_and_dtype_labelled_with_its_source(runs):
    ax = compile_figure(runs).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["naive", "numpy", "fused"]
    bars = ax.patches
    assert len(bars) == 3
    heights = sorted(b.get_y() + b.get_height() for b in bars)
    assert heights[-1] == pytest.approx(1.5)
    texts = [t.get_text() for t in ax.texts]
    assert "1.5 s\ncompiled" in texts
    assert "(s)" in ax.get_ylabel() and ax.get_yscale() == "log"


def test_several_runs_are_told_apart_by_machine(tmp_path):
    a = write_run(tmp_path / "a", standard_rows(), machine="alpha")
    b = write_run(tmp_path / "b", standard_rows(scale=2.0), machine="beta", threads=16)
    runs = load_runs([a, b])
    ax = time_vs_n_figure(runs, "float32").axes[0]
    numpy = {label: line for label, line in lines_by_label(ax).items() if label.startswith("numpy")}
    assert set(numpy) == {r"numpy @ alpha  $\propto n^{2.00}$", r"numpy @ beta  $\propto n^{2.00}$"}
    styles = {line.get_linestyle() for line in numpy.values()}
    colors = {line.get_color() for line in numpy.values()}
    assert len(styles) == 2 and len(colors) == 1
    title = ax.figure._suptitle.get_text()
    assert (
        "alpha: Alpha CPU 3000, 4 threads" in title and "beta: Beta CPU 3000, 16 threads" in title
    )
    # two runs of one machine keep apart by directory name
    c = write_run(tmp_path / "c", standard_rows())
    d = write_run(tmp_path / "d", standard_rows())
    assert set(load_runs([c, d]).metas) == {"box (c)", "box (d)"}


def test_figure_titles_name_the_cpu_past_its_brand(tmp_path):
    """Zen 4 and Zen 5 VMs both call themselves "AMD EPYC": the title adds family, model and
    the widest vectors from the run's cpu_signature (runs without one keep the brand)."""
    run = write_run(tmp_path / "zen5", standard_rows())
    meta = json.loads((run / "meta.json").read_text())
    meta["machine"].update(
        cpu="AMD EPYC", cpu_signature="AuthenticAMD, family 26, model 2, stepping 1; AVX-512"
    )
    (run / "meta.json").write_text(json.dumps(meta))
    title = time_vs_n_figure(load_runs([run]), "float32").axes[0].figure._suptitle.get_text()
    assert "AMD EPYC (family 26 model 2, AVX-512), 4 threads" in title


def test_figures_and_files(runs, tmp_path):
    built, notes = figures(runs)
    assert set(built) == {
        "time_vs_n_float32",
        "throughput_float32",
        "speedup_float32",
        "time_vs_d_float32",
        "memory_float32",
        "agreement",
        "compile_time",
    }
    assert notes == []
    png, svg = save_figure(built["time_vs_n_float32"], tmp_path / "out", "time")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:1000]
    _, notes = figures(
        load_runs(
            [write_run(tmp_path / "nonumpy", [case_row("fused", n, 32, 1e-6 * n) for n in NS])]
        )
    )
    assert notes == [
        "no time-vs-d figure for float32: the run has one d",
        "no speedup plot: the default baseline numpy is not in the run; choose one with "
        "--baseline (fused)",
    ]


def test_plot_command(tmp_path, capsys):
    run = write_run(tmp_path / "run", standard_rows())
    out = tmp_path / "plots"
    assert main(["plot", str(run), "--out", str(out), "--baseline", "fused"]) == 0
    assert (out / "speedup_float32.png").is_file() and (out / "compile_time.svg").is_file()
    assert len(list(out.glob("*.png"))) == 7
    assert main(["plot", str(run), "--baseline", "nope"]) == 2
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert main(["plot", str(run), "--n-fixed", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("attnbench plot: error: ") for line in err)
    assert "--baseline" in err[0] and "no such run directory" in err[1] and "--n-fixed" in err[2]
