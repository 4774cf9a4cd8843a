"""`attnbench run`: the grid, the run directory, budgets, compile time apart, prediction."""

import json
import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from harness import sweep
from harness.cases import Case
from harness.cli import main
from harness.config import SweepConfig, apply
from harness.results import COLUMNS, CUDA_TIMER, RunDir
from harness.sweep import Progress, predict_seconds
from harness.worker import ROUND_DONE, WorkerLost

TINY = ["--n", "8,16,32", "--d", "4,8", "--target", "0.02", "--threads", "1"]


def run_cli(*argv):
    return main(["run", *argv])


def test_prediction_from_two_points_uses_their_slope():
    case = Case("x", 256, 8)
    assert predict_seconds(case, [(64, 1e-3), (128, 4e-3)]) == pytest.approx(16e-3)


def test_prediction_from_one_point_assumes_n_squared():
    assert predict_seconds(Case("x", 200, 8), [(100, 1.0)]) == pytest.approx(4.0)


def test_prediction_slope_is_clamped_and_needs_smaller_cases():
    flat = [(64, 1.0), (128, 1.0)]
    assert predict_seconds(Case("x", 256, 8), flat) == pytest.approx(2.0)  # slope 0 -> 1
    steep = [(64, 1.0), (128, 100.0)]
    assert predict_seconds(Case("x", 256, 8), steep) == pytest.approx(800.0)  # slope 6.6 -> 3
    assert predict_seconds(Case("x", 64, 8), [(128, 1.0)]) is None


def test_flop_count_is_explicit():
    assert Case("x", 1024, 64, batch=2, heads=4).flops == 4 * 2 * 4 * 1024 * 1024 * 64
    assert Case("x", 1024, 64, causal=True).flops == 2 * 1024 * 1024 * 64


def test_run_writes_all_three_files_with_a_row_per_case(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--impl", "numpy,naive", *TINY, "--out", str(out)) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * 2
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 12 and set(table.status) == {"ok"}
    assert (table.samples >= 5).all()
    assert (table.gflops == table.flops / table.median_s / 1e9).all()
    assert (table.round_spread >= 1).all()  # the slowest round's median over the fastest's
    assert table.max_rel_err.max() < 1e-5
    raw = json.loads(lines[0])
    assert len(raw["samples_s"]) == raw["samples"] >= 5  # pooled from the rounds
    assert raw["rounds"] == 3
    assert raw["median_s"] == pytest.approx(float(np.median(raw["samples_s"])), rel=1e-12)
    meta = json.loads((out / "meta.json").read_text())
    for key in (
        "schema_version",
        "machine",
        "versions",
        "blas",
        "threads",
        "git",
        "command",
        "started",
        "ended",
        "gemm_peak_gflops",
        "settings",
        "threading",
    ):
        assert key in meta, key
    assert meta["threads"] == 1 and meta["gemm_peak_gflops"]["float32"] > 0
    assert meta["gemm_peak_end_gflops"]["float32"] > 0  # measured again: the machine's drift
    assert meta["threading"]["numpy"]["numba_threads"] == 1
    assert (table.gemm_gflops == meta["gemm_peak_gflops"]["float32"]).all()  # tiny: the start's
    assert "run directory" in capsys.readouterr().out


def test_implementations_of_one_shape_are_measured_one_after_another(tmp_path):
    """Case-major order: the ratio of two implementations is taken on the same minute of the
    machine, not minutes apart, and smaller n still come first for the prediction."""
    out = tmp_path / "run"
    assert run_cli("--impl", "numpy,naive", *TINY, "--out", str(out)) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    order = [(row["d"], row["n"], row["impl"]) for row in rows]
    impl_names = ("numpy", "naive")
    assert order == [(d, n, impl) for d in (4, 8) for n in (8, 16, 32) for impl in impl_names]


def test_naive_loops_are_skipped_past_the_budget_with_the_prediction(tmp_path):
    out = tmp_path / "run"
    argv = [
        "--impl",
        "naive",
        "--n",
        "16,32,64,128,256,512",
        "--d",
        "16",
        "--target",
        "0.02",
        "--budget",
        "0.02",
        "--out",
        str(out),
    ]
    assert run_cli(*argv) == 0
    table = pd.read_csv(out / "results.csv")
    skipped = table[table.status == "skipped"]
    assert len(skipped) >= 2 and skipped.n.min() > table[table.status == "ok"].n.max()
    assert skipped.predicted_s.notna().all()
    # The first case over budget may be predicted just under it and caught by its one warm
    # call ("one call took ..."); every later one is skipped on its prediction, never run.
    assert skipped.note.str.contains("> budget 0.02 s").all()
    assert skipped.note.iloc[1:].str.contains(r"^predicted .* per call > budget").all()


def test_compile_time_is_reported_apart_from_run_time(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(
            "--impl",
            "numba_parallel",
            "--n",
            "32,64",
            "--d",
            "8",
            "--target",
            "0.05",
            "--out",
            str(out),
        )
        == 0
    )
    table = pd.read_csv(out / "results.csv")
    assert set(table.status) == {"ok"}
    assert table.compile_s.notna().all()
    first = table.iloc[0]
    assert first.compile_source in ("compiled", "disk cache")
    # The first call (with compilation) never enters the samples: it is far above the median.
    assert first.first_call_s > first.median_s
    samples = json.loads((out / "results.jsonl").read_text().splitlines()[0])["samples_s"]
    assert max(samples) < first.first_call_s


def test_sweep_budget_skips_what_does_not_fit(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(
            "--impl",
            "naive",
            "--n",
            "8,16,32,64,128",
            "--d",
            "8",
            "--target",
            "0.2",
            "--sweep-budget",
            "0.5",
            "--out",
            str(out),
        )
        == 0
    )
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 5
    assert table.note.fillna("").str.contains("left of the sweep budget").any()


def test_an_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run_cli("--impl", "numpy", "--n", "8", "--d", "4", "--target", "0.01", "--out", str(out))
        == 0
    )
    assert run_cli("--impl", "numpy", "--n", "8", "--d", "4", "--out", str(out)) == 2
    assert "use --resume" in capsys.readouterr().err


def test_settings_come_from_a_toml_file_and_flags_win(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        'impl = ["numpy"]\nn = [8, 16]\nd = "4"\ntarget = 0.01\ndtype = ["float64"]\n'
    )
    out = tmp_path / "run"
    assert run_cli("--config", str(config), "--n", "8", "--out", str(out)) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table.n) == [8] and set(table.dtype) == {"float64"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["n"] == [8] and math.isclose(meta["settings"]["target_s"], 0.01)


def test_both_masks_of_a_shape_are_measured_one_after_the_other():
    """`--causal both`: the causal speed-up is a ratio taken in the same minute, not across
    two sweeps and the machine's phases."""
    config = apply(SweepConfig(n=(64, 128), d=(8,)), {"causal": "both"}, "command line")
    assert config.causal == (False, True)
    order = [(c.n, c.causal, c.impl) for c in sweep.plan_cases(config, ["numpy", "naive"])]
    assert order == [
        (n, causal, impl)
        for n in (64, 128)
        for causal in (False, True)
        for impl in ("numpy", "naive")
    ]
    assert apply(SweepConfig(), {"causal": True}, "TOML").causal == (True,)
    assert apply(SweepConfig(), {"causal": [True, False]}, "TOML").causal == (False, True)


class ScriptedWorker:
    """Stands in for a worker process: logs each request; `lose_at` names a (impl, round) whose
    worker is lost there."""

    log: ClassVar[list[tuple[str, int, int]]] = []  # (impl, n, round), or ("peak", size, repeats)
    lose_at: ClassVar[tuple[str, int] | None] = None
    peaks: ClassVar[list[float | None]] = []  # the rates it answers in turn; None: it is lost

    def __init__(self, threads):
        self.case, self.round = None, 0

    def measure(self, case, plan, budget_s, seed, timeout_s, rounds):
        self.case, self.round, self.rounds = case, 0, rounds
        return self.next_round(timeout_s)

    def next_round(self, timeout_s):
        self.round += 1
        self.log.append((self.case.impl, self.case.n, self.round))
        if (self.case.impl, self.round) == self.lose_at:
            raise WorkerLost("worker crashed: killed by SIGSEGV")
        if self.round < self.rounds:
            return ROUND_DONE
        return {"status": "ok", "median_s": 1e-3, "samples": 2 * self.rounds}

    def gemm_rates(self, dtype, size, repeats):
        self.log.append(("peak", size, repeats))
        rates = self.peaks.pop(0)
        if rates is None:
            raise WorkerLost("worker crashed: killed by SIGKILL")
        return rates

    def close(self):
        pass


ROUND_PEAKS = ([90.0, 80.0, 130.0], [120.0, 105.0, 106.0], [110.0, 85.0, 99.0])


def scripted_sweep(tmp_path, monkeypatch, lose_at=None, peaks=ROUND_PEAKS):
    monkeypatch.setattr(sweep, "Worker", ScriptedWorker)
    monkeypatch.setattr(sweep, "measure_gemm", lambda config: {"float32": [140.0, 100.0, 60.0]})
    monkeypatch.setattr(ScriptedWorker, "log", [])
    monkeypatch.setattr(ScriptedWorker, "lose_at", lose_at)
    monkeypatch.setattr(ScriptedWorker, "peaks", list(peaks))
    run = RunDir(tmp_path)
    config = SweepConfig(n=(64, 128), d=(8,), rounds=3, threads=1)
    rows = sweep.run_sweep(config, run, ["numpy", "naive"], {}, lambda total: Progress(total))
    return rows, ScriptedWorker.log


def test_rounds_interleave_the_implementations_of_one_shape(tmp_path, monkeypatch):
    rows, log = scripted_sweep(tmp_path, monkeypatch)
    assert log == [
        (impl, n, r) for n in (64, 128) for r in (1, 2, 3) for impl in ("numpy", "naive")
    ]
    assert [(row["impl"], row["n"], row["status"]) for row in rows] == [
        ("numpy", 64, "ok"), ("naive", 64, "ok"), ("numpy", 128, "ok"), ("naive", 128, "ok")
    ]  # fmt: skip


def test_a_worker_lost_in_a_later_round_fails_only_its_case(tmp_path, monkeypatch):
    rows, log = scripted_sweep(tmp_path, monkeypatch, lose_at=("naive", 2))
    statuses = {(row["impl"], row["n"]): (row["status"], row.get("note")) for row in rows}
    assert statuses[("numpy", 64)] == ("ok", None)
    assert statuses[("naive", 64)] == ("failed", "worker crashed: killed by SIGSEGV")
    assert ("numpy", 64, 3) in log and ("naive", 64, 3) not in log
    # after a crash, the larger cases of that implementation are skipped, the others measured
    assert statuses[("naive", 128)][0] == "skipped" and statuses[("numpy", 128)][0] == "ok"


def test_large_cpu_shapes_get_the_peak_measured_before_each_round(tmp_path, monkeypatch):
    """The peak fraction of a large case divides by the median matrix-product rate measured in
    its own rounds, not by the start-of-run one minutes away; small shapes keep the latter."""
    monkeypatch.setattr(sweep, "PEAK_ALONGSIDE_MIN_FLOPS", Case("numpy", 128, 8).flops)
    rows, log = scripted_sweep(tmp_path, monkeypatch)
    peak = ("peak", sweep.PEAK_SIZE, sweep.PEAK_REPEATS)
    small = [(impl, 64, r) for r in (1, 2, 3) for impl in ("numpy", "naive")]
    large = [step for r in (1, 2, 3) for step in (peak, ("numpy", 128, r), ("naive", 128, r))]
    assert log == small + large
    for row in rows:
        large = row["n"] == 128
        # the median of the nine products of its rounds, or of the start's five
        assert row["gemm_gflops"] == (105.0 if large else 100.0)
        assert row["gemm_best_gflops"] == (130.0 if large else 140.0)
        assert row["peak_fraction"] == pytest.approx(row["gflops"] / row["gemm_gflops"])


def test_a_lost_peak_worker_is_replaced_and_never_fails_a_case(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "PEAK_ALONGSIDE_MIN_FLOPS", Case("numpy", 128, 8).flops)
    rows, log = scripted_sweep(tmp_path, monkeypatch, peaks=(None, [95.0, 97.0, 93.0], None))
    assert log.count(("peak", sweep.PEAK_SIZE, sweep.PEAK_REPEATS)) == 3  # a new one each round
    assert {row["status"] for row in rows} == {"ok"}
    assert {row["gemm_gflops"] for row in rows if row["n"] == 128} == {95.0}
    (tmp_path / "all-lost").mkdir()
    rows, _ = scripted_sweep(tmp_path / "all-lost", monkeypatch, peaks=(None, None, None))
    assert {row["gemm_gflops"] for row in rows} == {100.0}  # the start-of-run peak serves


def test_the_cpu_peak_fraction_is_for_cpu_rows_only():
    case = Case("any", 1024, 64, "float32")
    cpu = sweep.derived(case, {"median_s": 0.01, "timer": "perf_counter"}, [100.0])
    gpu = sweep.derived(case, {"median_s": 0.01, "timer": CUDA_TIMER}, [100.0])
    assert cpu["peak_fraction"] == pytest.approx(case.flops / 0.01 / 1e9 / 100.0)
    assert "peak_fraction" not in gpu and "gemm_gflops" not in gpu
    assert gpu["gflops"] == cpu["gflops"]
    assert "peak_fraction" not in sweep.derived(case, {"median_s": 0.01})  # no peak measured


def test_the_peak_is_the_median_product_and_its_best_is_kept_beside_it():
    """Medians on both sides of the fraction: a best-of peak would set the kernel's typical
    speed against the matrix product's luckiest moment."""
    case = Case("any", 1024, 64, "float32")
    row = sweep.derived(case, {"median_s": 0.01}, [70.0, 100.0, 80.0, 120.0, 90.0])
    assert row["gemm_gflops"] == 90.0 and row["gemm_best_gflops"] == 120.0
    assert row["gemm_rates"] == [70.0, 100.0, 80.0, 120.0, 90.0]  # each product, on record
    assert row["peak_fraction"] == pytest.approx(row["gflops"] / 90.0)


def test_the_peak_alongside_is_measured_in_a_real_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "PEAK_ALONGSIDE_MIN_FLOPS", 0)
    monkeypatch.setattr(sweep, "PEAK_SIZE", 256)  # a quick product; the rule is the same
    out = tmp_path / "run"
    assert run_cli("--impl", "numpy", "--n", "8,16", "--d", "4", "--target", "0.02",
                   "--threads", "1", "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out / "results.csv")
    start = json.loads((out / "meta.json").read_text())["gemm_peak_gflops"]["float32"]
    assert (table.gemm_gflops > 0).all() and (table.gemm_gflops != start).all()
    assert (table.peak_fraction == table.gflops / table.gemm_gflops).all()
    for line in (out / "results.jsonl").read_text().splitlines():
        row = json.loads(line)  # each product on record: three before each of the 3 rounds
        assert len(row["gemm_rates"]) == 3 * sweep.PEAK_REPEATS
        assert row["gemm_gflops"] == pytest.approx(float(np.median(row["gemm_rates"])))
        assert row["gemm_best_gflops"] == max(row["gemm_rates"])


def test_resuming_a_run_from_before_the_rates_keeps_its_start_peak(tmp_path, monkeypatch):
    """Its first rows were divided by that peak: measuring a new one would mix two yardsticks."""
    measured = []
    monkeypatch.setattr(sweep, "Worker", ScriptedWorker)
    monkeypatch.setattr(
        sweep, "measure_gemm", lambda config: measured.append(1) or {"float32": [50.0]}
    )
    monkeypatch.setattr(ScriptedWorker, "log", [])
    monkeypatch.setattr(ScriptedWorker, "lose_at", None)
    config = SweepConfig(n=(64,), d=(8,), rounds=1, threads=1)
    meta = {"gemm_peak_gflops": {"float32": 123.0}}
    sweep.run_sweep(config, RunDir(tmp_path), ["numpy"], meta, lambda total: Progress(total))
    assert [row["gemm_gflops"] for row in RunDir(tmp_path).rows()] == [123.0]
    assert meta["gemm_peak_gflops"] == {"float32": 123.0}
    assert len(measured) == 1 and meta["gemm_peak_end_gflops"] == {"float32": 50.0}  # the end's
