"""`attnbench run`: the grid, the run directory, budgets, compile time apart, prediction."""

import contextlib
import io
import json
import math
import os
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from conftest import use_small_reference_workloads

from harness.cli.config import SweepConfig, apply
from harness.cli.main import main
from harness.results.cases import Case
from harness.results.rundir import RunDir
from harness.results.schema import COLUMNS, CUDA_TIMER
from harness.sweep import plan, pool, probes
from harness.sweep.plan import predict_seconds
from harness.sweep.pool import Worker, WorkerLost, _context
from harness.sweep.progress import Progress
from harness.sweep.rounds import CI_MIN_ROUNDS, calibrate, run_sweep
from harness.sweep.rows import derived
from harness.worker.serve import serve

TINY = ["--n", "8,16,32", "--d", "4,8", "--target", "0.02", "--threads", "1"]


def run_cli(*argv):
    return main(["run", *argv])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One sweep of numpy and naive over the tiny grid, for the tests that read what it wrote
    and printed; OPENBLAS_CORETYPE set, as a VM may set it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        use_small_reference_workloads(patch)
        patch.setenv("OPENBLAS_CORETYPE", "Haswell")
        assert run_cli("--impl", "numpy,naive", *TINY, "--out", str(out)) == 0
    return out, printed.getvalue()


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


def test_run_writes_all_three_files_with_a_row_per_case(tiny_run):
    out, printed = tiny_run
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 3 * 2 * 3  # a record per case after each of its 3 rounds
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 12 and set(table.status) == {"ok"}
    assert (table.samples >= 5).all()
    assert (table.gflops == table.flops / table.median_s / 1e9).all()
    assert (table.round_spread >= 1).all()  # the slowest round's median over the fastest's
    assert table.max_rel_err.max() < 1e-5
    raw = json.loads(lines[-1])  # a case's last record
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
        "method",
        "settings",
        "threading",
    ):
        assert key in meta, key
    assert meta["threads"] == 1 and meta["gemm_peak_gflops"]["float32"] > 0
    assert meta["gemm_peak_end_gflops"]["float32"] > 0  # measured again: the machine's drift
    assert meta["threading"]["numpy"]["numba_threads"] == 1
    assert (table.gemm_gflops > 0).all()  # the products measured before each round
    assert meta["method"]["round_process"] == "fresh worker per round of each case"
    assert meta["environment"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert "run directory" in printed
    assert "set in the environment (the figures hold for these): " in printed
    assert "OPENBLAS_CORETYPE=Haswell" in printed


def test_implementations_of_one_shape_are_measured_one_after_another(tiny_run):
    """Within a round, shape by shape: the implementations of a shape take turns in the same
    seconds of the machine, and smaller n come first for the prediction."""
    out, _ = tiny_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    order = [(row["rounds"], row["d"], row["n"], row["impl"]) for row in rows]
    impl_names = ("numpy", "naive")
    assert order == [
        (r, d, n, impl)
        for r in (1, 2, 3)
        for d in (4, 8)
        for n in (8, 16, 32)
        for impl in impl_names
    ]


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
    order = [(c.n, c.causal, c.impl) for c in plan.plan_cases(config, ["numpy", "naive"])]
    assert order == [
        (n, causal, impl)
        for n in (64, 128)
        for causal in (False, True)
        for impl in ("numpy", "naive")
    ]
    assert apply(SweepConfig(), {"causal": True}, "TOML").causal == (True,)
    assert apply(SweepConfig(), {"causal": [True, False]}, "TOML").causal == (False, True)


class ScriptedWorker:
    """Stands in for a worker process: logs each request. A case's round r (from 1) takes
    `times[impl][r - 1]` seconds per sample (times the machine's `slowdown` that round); the
    probe's rates are divided by the same slowdown, or by `probe_slowdown` where the probe saw
    another (a drift between the probe and the cases). `lose_at` names an (impl, n, round) whose
    worker is lost as it opens the round, `lose_in_turn` one lost in its second turn."""

    log: ClassVar[list[tuple]] = []  # ("spawn",), (impl, n, round), ("turn", impl), ("probe",)
    lose_at: ClassVar[tuple[str, int, int] | None] = None
    lose_in_turn: ClassVar[tuple[str, int, int] | None] = None
    times: ClassVar[dict[str, list[float]]] = {}
    slowdown: ClassVar[list[float]] = []
    probe_slowdown: ClassVar[list[float]] = []
    probes_lost: ClassVar[set[int]] = set()  # rounds (from 1) whose probe worker is lost
    rounds_done: ClassVar[dict[tuple, int]] = {}

    def __init__(self, threads):
        self.log.append(("spawn",))
        self.turns = 0

    def open(self, case, plan, budget_s, seed, timeout_s, inner=None):
        r = self.rounds_done[case.key] = self.rounds_done.get(case.key, 0) + 1
        assert (inner is None) == (r == 1)  # later rounds are told the first round's size
        self.case, self.round, self.inner = case, r, inner or 4
        self.log.append((case.impl, case.n, r))
        if (case.impl, case.n, r) == self.lose_at:
            raise WorkerLost("worker crashed: killed by SIGSEGV")
        return {"status": "ok", "ready": True, **({"inner_repeats": 4} if r == 1 else {})}

    def turn(self, turn_s, max_samples, timeout_s):
        """As many samples as fill the turn, at least one."""
        self.turns += 1
        self.log.append(("turn", self.case.impl))
        if (self.case.impl, self.case.n, self.round) == self.lose_in_turn and self.turns == 2:
            raise WorkerLost("worker crashed: killed by SIGKILL")
        seconds = self.times.get(self.case.impl, [1e-3] * 20)[self.round - 1]
        seconds *= self.slow(self.round)
        count = max(1, min(max_samples, math.ceil(turn_s / (seconds * self.inner))))
        return {"samples": [seconds] * count}

    def close_round(self, timeout_s):
        return {"compile_s": 0.0} if self.round == 1 else {}

    def slow(self, r):
        return self.slowdown[(r - 1) % len(self.slowdown)] if self.slowdown else 1.0

    def probe(self, dtype, size, repeats, stream_bytes, case_bytes=0, cold_cache=False):
        r = sum(1 for step in self.log if step == ("probe",)) + 1
        self.log.append(("probe",))
        if r in self.probes_lost:
            raise WorkerLost("worker crashed: killed by SIGKILL")
        slow = (
            self.probe_slowdown[(r - 1) % len(self.probe_slowdown)]
            if self.probe_slowdown
            else self.slow(r)
        )
        rates = {"gemm_rates": [100.0 / slow] * 3, "stream_gbps": [10.0 / slow]}
        if case_bytes:
            rates["bandwidth_gbps"] = [20.0 / slow] * 3
        return rates

    def kill(self):
        pass

    def close(self):
        pass


START = {"float32": {"gemm_rates": [140.0, 100.0, 60.0], "stream_gbps": [10.0]}}


def scripted_sweep(tmp_path, monkeypatch, impl_names=("numpy", "naive"), config=None, **script):
    monkeypatch.setattr(pool, "Worker", ScriptedWorker)
    monkeypatch.setattr("harness.sweep.rounds.start_probe", lambda config, repeats: START)
    monkeypatch.setattr(ScriptedWorker, "log", [])
    monkeypatch.setattr(ScriptedWorker, "rounds_done", {})
    for name in ("lose_at", "lose_in_turn", "times", "slowdown", "probe_slowdown", "probes_lost"):
        monkeypatch.setattr(ScriptedWorker, name, script.get(name, getattr(ScriptedWorker, name)))
    run = RunDir(tmp_path)
    config = config or SweepConfig(n=(64, 128), d=(8,), rounds=3, threads=1)
    rows = run_sweep(config, run, list(impl_names), {}, lambda total: Progress(total))
    return rows, ScriptedWorker.log


def test_rounds_go_over_the_grid_each_case_in_a_fresh_worker_implementations_in_turn(
    tmp_path, monkeypatch
):
    rows, log = scripted_sweep(tmp_path, monkeypatch)
    steps = [step for step in log if step[0] not in ("spawn", "turn")]
    assert steps == [  # round by round over the whole grid: a case's rounds minutes apart
        step
        for r in (1, 2, 3)
        for n in (64, 128)
        for step in (("probe",), ("numpy", n, r), ("naive", n, r))
    ]
    assert log.count(("spawn",)) == 2 * 2 * 3 + 1  # every round of every case, and the probe
    assert [(row["impl"], row["n"], row["status"], row["rounds"]) for row in rows] == [
        ("numpy", 64, "ok", 3), ("naive", 64, "ok", 3), ("numpy", 128, "ok", 3),
        ("naive", 128, "ok", 3),
    ]  # fmt: skip


def test_in_a_round_the_implementations_alternate_in_short_turns(tmp_path, monkeypatch):
    """Each implementation in its own worker, both prepared, then turns of pool.TURN_S in
    alternation until each has its share of the round: their samples come from the same
    seconds of the machine, not from one minute and the next."""
    monkeypatch.setattr(pool, "TURN_S", 0.05)  # 3 samples (60 ms) a turn: 17 turns for 1 s
    config = SweepConfig(n=(64,), d=(8,), rounds=1, threads=1)
    times = {"numpy": [5e-3], "naive": [5e-3]}  # samples of 4 calls: 20 ms
    rows, log = scripted_sweep(tmp_path, monkeypatch, config=config, times=times)
    opens = [i for i, step in enumerate(log) if len(step) == 3]
    turns = [step[1] for step in log if step[0] == "turn"]
    assert max(opens) < log.index(("turn", "numpy"))  # both prepared before the first turn
    assert turns == ["numpy", "naive"] * 17
    assert [row["samples"] for row in rows] == [51, 51]


def test_a_worker_lost_in_its_turn_fails_its_case_while_the_others_go_on(tmp_path, monkeypatch):
    config = SweepConfig(n=(64,), d=(8,), rounds=2, threads=1)
    times = {"numpy": [5e-3] * 2, "naive": [5e-3] * 2}  # 3 samples a turn, 9 turns a round
    rows, log = scripted_sweep(
        tmp_path, monkeypatch, config=config, times=times, lose_in_turn=("naive", 64, 1)
    )
    statuses = {row["impl"]: (row["status"], row.get("note"), row.get("rounds")) for row in rows}
    assert statuses["naive"] == ("failed", "worker crashed: killed by SIGKILL", None)
    assert statuses["numpy"] == ("ok", None, 2)
    round_1 = log[: log.index(("numpy", 64, 2))]
    assert round_1.count(("turn", "naive")) == 2  # lost in its second turn
    assert round_1.count(("turn", "numpy")) == 9  # numpy took the rest of its turns


def test_a_worker_lost_in_a_later_round_fails_only_its_case(tmp_path, monkeypatch):
    rows, log = scripted_sweep(tmp_path, monkeypatch, lose_at=("naive", 64, 2))
    statuses = {(row["impl"], row["n"]): (row["status"], row.get("note")) for row in rows}
    assert statuses[("numpy", 64)] == ("ok", None)
    assert statuses[("naive", 64)] == ("failed", "round 2: worker crashed: killed by SIGSEGV")
    assert ("numpy", 64, 3) in log and ("naive", 64, 3) not in log
    # naive at n = 128 had its first round before the crash: it goes on, as numpy does
    assert statuses[("naive", 128)][0] == "ok" and statuses[("numpy", 128)][0] == "ok"


def test_rows_are_written_after_every_round_so_an_interruption_keeps_them(tmp_path, monkeypatch):
    rows, _ = scripted_sweep(tmp_path, monkeypatch)
    records = RunDir(tmp_path).rows()
    assert [(r["impl"], r["n"], r["rounds"]) for r in records] == [
        (impl, n, r) for r in (1, 2, 3) for n in (64, 128) for impl in ("numpy", "naive")
    ]
    table = RunDir(tmp_path).table()  # the last record of each case
    assert list(table["rounds"]) == [3, 3, 3, 3]
    assert [row["rounds"] for row in rows] == [3, 3, 3, 3]


def test_ratios_are_formed_round_by_round_so_a_drifting_machine_cancels(tmp_path, monkeypatch):
    """The machine runs 1x, 2x and 4x slow in the three rounds; naive is always half numpy's
    time within a round. Pooled times spread 4x; the paired ratio is exactly 0.5."""
    times = {"numpy": [2e-3] * 3, "naive": [1e-3] * 3}
    config = SweepConfig(n=(64,), d=(8,), rounds=3, threads=1, baseline="numpy")
    rows, _ = scripted_sweep(
        tmp_path, monkeypatch, times=times, slowdown=[1.0, 2.0, 4.0], config=config
    )
    naive = next(row for row in rows if row["impl"] == "naive")
    assert naive["round_medians_s"] == [1e-3, 2e-3, 4e-3]
    assert (naive["ratio"], naive["ratio_low"], naive["ratio_high"]) == (0.5, 0.5, 0.5)
    assert naive["baseline"] == "numpy"
    # The median's interval from the rounds: exact bootstrap of 3 rounds spans min..max.
    assert (naive["median_low_s"], naive["median_s"], naive["median_high_s"]) == (
        1e-3, 2e-3, 4e-3
    )  # fmt: skip
    assert naive["unstable"]  # its time's interval spans far more than 20%
    # Drift-normalised: each round's median times its round's GEMM rate (100 / slowdown).
    assert naive["round_normalised"] == pytest.approx([0.1, 0.1, 0.1])
    assert naive["drift_reference"] == "gemm"
    assert naive["gemm_gflops"] == pytest.approx(50.0)  # median of 100, 50, 25 (x3 each)


def test_a_lost_probe_falls_back_to_the_start_and_never_fails_a_case(tmp_path, monkeypatch):
    rows, _ = scripted_sweep(tmp_path, monkeypatch, probes_lost={1, 2})
    assert {row["status"] for row in rows} == {"ok"}
    # The first two probes (round 1 of n = 64 and of n = 128) are lost: the start's serves.
    by_n = {row["n"]: row["round_reference_rates"] for row in rows if row["impl"] == "numpy"}
    assert by_n == {64: [140.0, 100.0, 100.0], 128: [140.0, 100.0, 100.0]}  # the fastest


def test_ci_adds_rounds_until_the_ratios_are_precise_or_max_rounds(tmp_path, monkeypatch):
    noisy = {"numpy": [1e-3] * 12, "naive": [1e-3, 1.5e-3, 0.7e-3] + [1e-3] * 9}
    config = SweepConfig(n=(64,), d=(8,), rounds=3, threads=1, ci=0.02, max_rounds=12)
    rows, _ = scripted_sweep(tmp_path, monkeypatch, times=noisy, config=config)
    rounds = rows[0]["rounds"]
    assert 3 < rounds < 12  # more rounds than asked, stopped once the ratio is within 2%
    naive = next(row for row in rows if row["impl"] == "naive")
    assert naive["ratio_high"] / naive["ratio"] - 1 <= 0.02
    assert 1 - naive["ratio_low"] / naive["ratio"] <= 0.02
    (tmp_path / "capped").mkdir()
    config = SweepConfig(n=(64,), d=(8,), rounds=3, threads=1, ci=0.001, max_rounds=5)
    always = {"numpy": [1e-3] * 12, "naive": [1e-3, 1.5e-3] * 6}
    rows, _ = scripted_sweep(tmp_path / "capped", monkeypatch, times=always, config=config)
    assert {row["rounds"] for row in rows} == {5}  # never precise: stopped at max_rounds
    (tmp_path / "steady").mkdir()
    config = SweepConfig(n=(64,), d=(8,), rounds=3, threads=1, ci=0.02, max_rounds=12)
    steady = {"numpy": [1e-3] * 12, "naive": [2e-3] * 12}
    rows, _ = scripted_sweep(tmp_path / "steady", monkeypatch, times=steady, config=config)
    assert {row["rounds"] for row in rows} == {CI_MIN_ROUNDS}  # precise at 3, trusted from 5


def test_the_cpu_peak_fraction_is_for_cpu_rows_only():
    case = Case("any", 1024, 64, "float32")
    cpu = derived(case, {"median_s": 0.01, "timer": "perf_counter"}, [100.0])
    gpu = derived(case, {"median_s": 0.01, "timer": CUDA_TIMER}, [100.0])
    assert cpu["peak_fraction"] == pytest.approx(case.flops / 0.01 / 1e9 / 100.0)
    assert "peak_fraction" not in gpu and "gemm_gflops" not in gpu
    assert gpu["gflops"] == cpu["gflops"]
    assert "peak_fraction" not in derived(case, {"median_s": 0.01})  # no peak measured


def test_the_peak_is_the_median_product_and_its_best_is_kept_beside_it():
    """Medians on both sides of the fraction: a best-of peak would set the kernel's typical
    speed against the matrix product's luckiest moment."""
    case = Case("any", 1024, 64, "float32")
    row = derived(case, {"median_s": 0.01}, [70.0, 100.0, 80.0, 120.0, 90.0])
    assert row["gemm_gflops"] == 90.0 and row["gemm_best_gflops"] == 120.0
    assert row["gemm_rates"] == [70.0, 100.0, 80.0, 120.0, 90.0]  # each product, on record
    assert row["peak_fraction"] == pytest.approx(row["gflops"] / 90.0)


def test_the_reference_workloads_are_measured_in_a_real_worker(tmp_path):
    out = tmp_path / "run"
    assert run_cli("--impl", "numpy", "--n", "8,16", "--d", "4", "--target", "0.02",
                   "--threads", "1", "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out / "results.csv")
    assert (table.gemm_gflops > 0).all()
    assert (table.peak_fraction == table.gflops / table.gemm_gflops).all()
    for line in (out / "results.jsonl").read_text().splitlines():
        # each product on record, PEAK_REPEATS before each round so far, and the peak their
        # median: measured beside the case, not the start-of-run figure (which a median of
        # 48-microsecond products can equal by chance, so that is not compared)
        row = json.loads(line)
        assert len(row["gemm_rates"]) == row["rounds"] * probes.PEAK_REPEATS
        assert row["gemm_gflops"] == pytest.approx(float(np.median(row["gemm_rates"])))
        assert row["gemm_best_gflops"] == max(row["gemm_rates"])
        assert len(row["round_normalised"]) == row["rounds"]
        assert all(rate > 0 for rate in row["round_reference_rates"])


def test_the_calibration_predicts_from_its_fastest_sample():
    """Two samples of three disturbed 400x: the prediction follows the undisturbed one."""

    class DisturbedWorkers:
        def round(self, cases, plan, config, inners):
            return {case: {"status": "ok", "round_samples_s": [0.4, 1e-3, 0.5]} for case in cases}

    case = Case("numpy", 16_384, 64)
    state = plan.SweepState()
    calibrate(case, DisturbedWorkers(), SweepConfig(), state)
    assert state.times[plan.series_key(case)] == [(plan.CALIBRATION_N, 1e-3)]


def test_a_series_that_starts_large_is_predicted_from_a_quick_calibration(tmp_path, monkeypatch):
    """No blind start: naive at n = 100000 is timed at n = 128 first (1 ms), predicted at
    (100000 / 128)^2 times that, 610 s per call, and skipped at once with the prediction."""
    config = SweepConfig(n=(100_000,), d=(8,), rounds=3, threads=1)
    rows, log = scripted_sweep(
        tmp_path, monkeypatch, impl_names=("naive",), config=config, times={"naive": [1e-3] * 3}
    )
    assert [step for step in log if step[0] == "naive"] == [("naive", plan.CALIBRATION_N, 1)]
    (row,) = rows
    assert row["status"] == "skipped" and row["n"] == 100_000
    assert row["predicted_s"] == pytest.approx(1e-3 * (100_000 / 128) ** 2)
    assert "per call > budget 2 s" in row["note"]


def test_a_worker_ends_quietly_when_the_main_process_left_before_its_first_word():
    """SIGTERM while a worker starts: its hello meets a closed pipe (a broken pipe, not an
    end of file), and it ends with status 0, no traceback."""
    context = _context()
    conn, child_conn = context.Pipe()
    conn.close()  # the main process's end, gone before the worker speaks
    process = context.Process(target=serve, args=(child_conn, 1, dict(os.environ)), daemon=True)
    process.start()
    child_conn.close()
    process.join(60)
    assert process.exitcode == 0


def test_a_worker_ends_quietly_when_the_main_process_left_its_answer_unread():
    """A main process that ends (SIGTERM, a crash) with an answer unread resets the pipe: the
    worker's next read fails with a reset, not an end of file, and it ends all the same, with
    status 0 (no traceback on the user's terminal)."""
    worker = Worker(1)
    worker._send(
        {"probe_dtype": "float64", "size": 8, "repeats": 1, "stream_bytes": 4096}
        | {"case_bytes": 0, "cold_cache": False}
    )
    assert worker.conn.poll(60)  # the answer is there, and stays unread
    worker.conn.close()
    worker.process.join(30)
    assert worker.process.exitcode == 0
