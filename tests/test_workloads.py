"""Workloads as they are used: grouped-query heads, decode against a KV cache, token budgets,
cold caches, and the bytes a case moves beside its FLOPs."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_plotting import case_row, write_run
from test_sweep import scripted_sweep

from harness.cli.config import SweepConfig, apply, load_config, presets
from harness.cli.main import main
from harness.cli.options import UsageError
from harness.results.cases import Case
from harness.results.rundir import RunDir
from harness.sweep import plan
from harness.sweep.rows import derived
from harness.worker import caches, references
from harness.worker.inputs import case_inputs
from harness.worker.references import read_rates
from harness.worker.timing import SamplingPlan, cpu_sampler, take_samples

# --- what a case is -----------------------------------------------------------------------


def test_a_case_is_self_attention_unless_told_otherwise():
    case = Case("numpy", n=512, d=64, heads=8)
    assert (case.kv_heads, case.n_q) == (8, 512)
    assert Case("numpy", 512, 64, heads=8, kv_heads=2, n_q=1).key != case.key


def test_decode_moves_the_cache_once_per_key_value_head():
    """32 query heads, 8 key/value heads, d = 128, one query against 4096 keys, float32:
    q 32 x 128, K and V 8 x 4096 x 128 each, output 32 x 128, 4 bytes each."""
    case = Case("numpy", n=4096, d=128, heads=32, kv_heads=8, n_q=1)
    assert case.bytes == 4 * (32 * 128 + 2 * 8 * 4096 * 128 + 32 * 128)
    assert case.flops == 4 * 32 * 1 * 4096 * 128
    assert case.score_matrix_bytes == 4096 * 4


def test_causal_flops_count_the_pairs_the_mask_lets_through():
    square = Case("numpy", n=100, d=8, causal=True)
    assert square.flops == 4 * 100 * 100 / 2 * 8  # the usual half of a square
    few_queries = Case("numpy", n=100, d=8, causal=True, n_q=3)  # rows see 1, 2, 3 keys
    assert few_queries.flops == 4 * (1 + 2 + 3) * 8
    more_queries = Case("numpy", n=3, d=8, causal=True, n_q=5)  # 1, 2, 3, 3, 3
    assert more_queries.flops == 4 * 12 * 8


def test_a_case_at_another_n_keeps_a_fixed_query_length():
    assert Case("numpy", n=4096, d=64, n_q=1).at_n(128) == Case("numpy", 128, 64, n_q=1)
    assert Case("numpy", n=4096, d=64).at_n(128) == Case("numpy", 128, 64)


def test_case_inputs_have_the_grouped_shapes():
    q, k, v = case_inputs(Case("numpy", n=50, d=16, batch=2, heads=6, kv_heads=3, n_q=2))
    assert q.shape == (2, 6, 2, 16) and k.shape == v.shape == (2, 3, 50, 16)


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"heads": 32, "kv_heads": 5}, "--kv-heads: expected a divisor of --heads (32)"),
        ({"tokens": 1000, "n": "512,2048"}, "--tokens: expected at least the longest --n (2048)"),
        ({"tokens": 4096, "batch": 2}, "give --tokens or --batch, not both"),
        ({"n_q": 0.5}, "--n-q: expected a non-negative integer"),
        ({"kv_heads": -2}, "--kv-heads: expected a non-negative integer"),
        ({"cold_cache": "yes"}, "--cold-cache: expected true or false"),
    ],
)
def test_settings_that_do_not_fit_together_are_refused(values, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply(SweepConfig(), values, "command line")


def test_a_token_budget_sets_each_cases_batch():
    config = SweepConfig(n=(512, 2048, 4096), d=(64,), tokens=16384)
    assert [(c.n, c.batch) for c in plan.plan_cases(config, ["numpy"])] == [
        (512, 32), (2048, 8), (4096, 4),
    ]  # fmt: skip


def test_decode_plans_one_query_against_each_cache_length():
    config = SweepConfig(n=(1024, 4096), d=(128,), heads=32, kv_heads=8, n_q=1)
    cases = plan.plan_cases(config, ["numpy"])
    assert [(c.n, c.n_q, c.heads, c.kv_heads) for c in cases] == [
        (1024, 1, 32, 8), (4096, 1, 32, 8),
    ]  # fmt: skip
    # a cache twice as long is predicted twice as slow, not four times
    assert plan.predict_seconds(cases[1], [(1024, 1e-3)]) == pytest.approx(4e-3)


def test_presets_are_named_workloads_and_flags_win(tmp_path):
    decode = load_config({}, project_dir=tmp_path, preset="decode-gqa")
    assert (decode.heads, decode.kv_heads, decode.n_q, decode.d) == (32, 8, 1, (128,))
    assert load_config({"n": "4096"}, project_dir=tmp_path, preset="decode-gqa").n == (4096,)
    assert all(table.get("description") for table in presets(tmp_path).values())


def test_a_project_defines_its_own_presets(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.attnbench]\nrounds = 2\n"
        "[tool.attnbench.presets.tiny-decode]\nn_q = 1\nn = [64]\nd = [8]\n"
    )
    config = load_config({}, project_dir=tmp_path, preset="tiny-decode")
    assert (config.n_q, config.n, config.rounds) == (1, (64,), 2)
    with pytest.raises(UsageError, match="unknown preset 'nope'; valid names: decode-gqa"):
        load_config({}, project_dir=tmp_path, preset="nope")


# --- measuring --------------------------------------------------------------------------------


def test_bytes_beside_flops_and_which_limit_a_case_is_near():
    """4 MB in 1 ms is 4 GB/s, 20% of a 20 GB/s read; 8 MFLOP per 4 MB is 2 FLOPs per byte,
    below the balance of a 100 GFLOP/s, 20 GB/s machine (5 FLOPs per byte): memory-bound."""
    case = Case("numpy", n=4000, d=125, n_q=1)
    assert case.bytes == 4_001_000 and case.flops == 2_000_000
    out = derived(case, {"median_s": 1e-3}, peak_rates=[100.0] * 3, read_rates=[[20.0] * 3] * 3)
    assert out["gbps"] == pytest.approx(4.001)
    assert out["bandwidth_gbps"] == 20.0 and out["bandwidth_fraction"] == pytest.approx(0.20005)
    assert out["bound"] == "memory"
    square = Case("numpy", n=4096, d=128)  # self-attention: 1024 FLOPs per byte moved
    assert derived(square, {"median_s": 1.0}, [100.0], [[20.0]])["bound"] == "compute"


def test_the_bandwidth_is_a_typical_read_as_the_time_is_a_typical_call():
    """Each round's median read, then the median over rounds (as the case's time is a median);
    the median of each round's fastest read is kept beside it."""
    case = Case("numpy", n=4000, d=125, n_q=1)
    reads = [[10.0, 20.0, 30.0], [20.0, 22.0, 40.0], [5.0, 25.0, 26.0]]
    out = derived(case, {"median_s": 1e-3}, [100.0], reads)
    assert out["bandwidth_gbps"] == 22.0 and out["bandwidth_best_gbps"] == 30.0
    assert out["bandwidth_fraction"] == pytest.approx(4.001 / 22.0)
    assert out["bandwidth_rates"] == reads


def test_cold_cache_samples_time_each_call_after_an_untimed_eviction():
    ticks = iter(range(100))
    events = []

    def clock():
        events.append("tick")
        return next(ticks)

    sample = cpu_sampler(
        lambda: events.append("call"), clock, before=lambda: events.append("evict")
    )
    assert sample(2) == 2  # one tick per call: the evictions are outside the timed spans
    assert events == ["evict", "tick", "call", "tick", "evict", "tick", "call", "tick"]
    plan = SamplingPlan(min_sample_s=0.02, target_s=0.0, min_samples=3, cold_cache=True)
    assert plan.calls_per_sample(1e-6) == 1 and plan.per_round(3).cold_cache
    samples, inner = take_samples(lambda inner: inner * 1e-6, plan, 1e-6)
    assert inner == 1 and len(samples) == 3


def counted_reads(monkeypatch, events: list) -> None:
    read = references._parallel_read
    counted = lambda x, chunks: events.append("read") or read(x, chunks)  # noqa: E731
    monkeypatch.setattr(references, "_parallel_read", counted)


def test_a_warm_reads_sample_is_64_mib_in_at_most_256_reads(monkeypatch):
    events = []
    counted_reads(monkeypatch, events)
    rates = read_rates(1 << 20, 2)
    assert len(events) == 1 + 2 * 64  # one to warm up, then 64 reads of 1 MiB a sample
    events.clear()
    rates += read_rates(4096, 2)
    assert len(events) == 1 + 2 * 256  # not 16384: each read of 4 KiB costs its launch
    assert all(math.isfinite(r) and r > 0 for r in rates)


def test_a_cold_read_finds_the_caches_evicted(monkeypatch):
    events = []
    counted_reads(monkeypatch, events)
    monkeypatch.setattr(references, "evict_caches", lambda: events.append("evict"))
    rates = read_rates(1 << 20, 2, cold_cache=True)
    assert events == ["read", "evict", "read", "evict", "read"]
    assert len(rates) == 2 and all(math.isfinite(r) and r > 0 for r in rates)


def test_a_sweep_records_bytes_bandwidth_and_the_bound(tmp_path, monkeypatch):
    config = SweepConfig(n=(64, 128), d=(8,), heads=4, kv_heads=2, n_q=1, rounds=2, threads=1)
    rows, _ = scripted_sweep(tmp_path, monkeypatch, config=config)
    for row in rows:
        assert (row["n_q"], row["kv_heads"]) == (1, 2)
        assert row["bytes"] == Case("numpy", row["n"], 8, heads=4, kv_heads=2, n_q=1).bytes
        assert row["bandwidth_gbps"] == 20.0  # the scripted reads, before each round
        assert row["bandwidth_fraction"] == pytest.approx(row["gbps"] / 20.0)
        assert row["bound"] in ("memory", "compute")


def test_rows_written_before_grouped_heads_read_as_self_attention(tmp_path):
    old = {"impl": "numpy", "n": 64, "d": 8, "dtype": "float32", "batch": 1, "heads": 2}
    (tmp_path / "results.jsonl").write_text(json.dumps({**old, "causal": False}) + "\n")
    (row,) = RunDir(tmp_path).rows()
    assert (row["kv_heads"], row["n_q"]) == (2, 64)


def test_a_real_decode_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--impl", "numpy,numba_parallel", "--n", "256", "--d", "16", "--heads", "4"]
    argv += ["--kv-heads", "2", "--n-q", "1", "--rounds", "1", "--target", "0.05", "--out"]
    assert main([*argv, str(out)]) == 0
    frame = RunDir(out).table()
    assert set(frame["status"]) == {"ok"}
    assert set(frame["n_q"]) == {1} and set(frame["kv_heads"]) == {2}
    assert (frame["bandwidth_fraction"] > 0).all() and np.isfinite(frame["gbps"]).all()
    assert "n_q=1" in capsys.readouterr().out


def test_the_report_of_a_decode_run_draws_and_tabulates_bytes_per_second(tmp_path, capsys):
    """numba_parallel moves its bytes at 15 GB/s, numpy at 5, beside a 30 GB/s read: 50% and
    17%; both are memory-bound, so neither is listed against the matrix-product peak."""
    rows = []
    for impl, gbps in (("numba_parallel", 15.0), ("numpy", 5.0)):
        for n in (1024, 2048, 4096):
            case = Case(impl, n, 64, heads=8, kv_heads=2, n_q=1)
            row = case_row(impl, n, 64, time_s=case.bytes / gbps / 1e9)
            row.update(
                case.to_dict(),
                **derived(case, {"median_s": row["median_s"]}, [100.0] * 3, [[30.0] * 3] * 3),
            )
            rows.append(row)
    run = write_run(tmp_path / "decode", rows)
    assert main(["report", str(run), "--baseline", "numpy"]) == 0
    assert (run / "bandwidth_float32.png").is_file()
    md = (run / "report.md").read_text()
    assert "| float32, d=64, heads 8, kv heads 2, n_q 1 | 4096 | 30 | 15 (50%) | 5 (17%) |" in md
    assert "numba_parallel 15 GB/s (50%), numpy 5 GB/s (17%) of a typical streaming read" in md
    assert "Best fraction of the CPU matrix-product peak" not in md
    assert "memory-bound: numba_parallel 15 GB/s" in capsys.readouterr().out  # findings printed


def test_findings_say_which_sizes_are_memory_bound_and_which_compute_bound():
    from harness.analysis.findings import bound_findings

    shape = {"machine": "box", "dtype": "float32", "d": 64, "workload": "", "causal": False}
    frame = pd.DataFrame(
        [
            {**shape, "impl": impl, "n": n, "status": "ok", "median_s": 1e-3, "bound": bound}
            for impl in ("numpy", "numba_parallel")
            for n, bound in ((256, "compute"), (1024, "memory"), (4096, "memory"))
        ]
    )
    (line,) = bound_findings(frame, several=False)
    assert line.startswith(
        "float32, d=64: memory-bound at n = 1024, 4096, compute-bound at n = 256"
    )
    assert bound_findings(frame[frame["n"] > 256], several=False) == []  # one kind: said elsewhere


def test_an_eviction_writes_four_times_the_last_level_cache(monkeypatch):
    """As triton's do_bench does for a GPU's L2; 128 MiB where the size is unknown or small."""
    reported = caches.last_level_cache_bytes()
    assert reported is None or reported > 0  # what Linux reports, or None where it says nothing
    monkeypatch.setattr(caches, "_eviction_buffer", caches._eviction_buffer.__wrapped__)
    monkeypatch.setattr(caches, "last_level_cache_bytes", lambda: 48 << 20)
    assert caches._eviction_buffer().nbytes == 4 * (48 << 20)
    monkeypatch.setattr(caches, "last_level_cache_bytes", lambda: None)
    assert caches._eviction_buffer().nbytes == caches.EVICT_MIN_BYTES
    written = np.full(1 << 20, -1, np.float32)
    monkeypatch.setattr(caches, "_eviction_buffer", lambda: written)
    caches.evict_caches()
    assert set(np.unique(written)) == set(range(16))  # every chunk written, by every thread
