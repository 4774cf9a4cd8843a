"""The columns of a row of results, their schema version, and older runs read as this one."""

from __future__ import annotations

from harness.results.cases import CASE_FIELDS, INTEGER_FIELDS

# 2: rounds in fresh workers, intervals, ratios, drift-normalised rounds
# 3: cases gained kv_heads and n_q (grouped-query attention, decode), rows bytes and bandwidth
SCHEMA_VERSION = 3
CASE_COLUMNS = list(CASE_FIELDS)
LEGACY_CASE_COLUMNS = ["impl", "n", "d", "dtype", "batch", "heads", "causal"]  # schema 1 and 2
COLUMNS = [
    *CASE_COLUMNS,
    "status",  # ok, skipped, failed, disagrees
    "median_s",
    "median_low_s",  # the median's 95% interval, from whole rounds (harness/analysis/stats.py)
    "median_high_s",
    "baseline",  # the implementation `ratio` is to
    "ratio",  # median over rounds of time / the baseline's time in the same round
    "ratio_low",  # its 95% interval
    "ratio_high",
    "normalised",  # median over rounds of time x the round's reference rate (drift removed)
    "drift_reference",  # gemm, stream (the reference workload that rate is of) or none (GPU)
    "iqr_s",
    "min_s",
    "mean_s",
    "max_s",
    "samples",
    "inner_repeats",
    "rounds",  # the samples came in this many rounds, interleaved with the other implementations
    "unstable",  # the median's interval spans more than 20% of it
    "round_spread",  # the slowest round's median / the fastest's (harness/worker/timing.py)
    "timer",  # perf_counter, or CUDA_TIMER for GPU rows
    "first_call_s",
    "compile_s",
    "compile_source",  # compiled, disk cache, none
    "variant",  # which code path the implementation ran (its `variant` hook), or empty
    "transfer_s",
    "flops",
    "gflops",
    "bytes",  # q, K and V (once per key/value head) read, the output written
    "gbps",  # bytes / median_s
    "bandwidth_gbps",  # streaming reads of as many bytes, alongside, same cache state: median
    "bandwidth_best_gbps",  # the median over rounds of each round's fastest of those reads
    "bandwidth_fraction",  # gbps / bandwidth_gbps
    "bound",  # memory or compute: arithmetic intensity against gemm_gflops / bandwidth_gbps
    "peak_fraction",  # gflops / gemm_gflops; CPU rows only
    "gemm_gflops",  # the CPU matrix-product peak it is a fraction of (see harness/sweep/probes.py)
    "gemm_best_gflops",  # the fastest of the products whose median is gemm_gflops
    "peak_mem_bytes",
    "score_matrix_bytes",
    "max_abs_err",
    "max_rel_err",
    "tolerance",
    "checked_rows",
    "predicted_s",
    "note",
]
INTEGER_COLUMNS = [
    *INTEGER_FIELDS,
    "samples",
    "inner_repeats",
    "rounds",
    "peak_mem_bytes",
    "score_matrix_bytes",
    "bytes",
]
CUDA_TIMER = "cuda events"  # the timer of GPU rows: the peak fraction (a CPU's) does not apply


def with_case_defaults(row: dict) -> dict:
    """A row written before cases had kv_heads and n_q (schema 2 and older): they were the
    heads and n."""
    row.setdefault("kv_heads", row["heads"])
    row.setdefault("n_q", row["n"])
    return row


def migrate(meta: dict) -> dict:
    """An older run read as this schema. Schema 2 differs only in its rows, which lack kv_heads
    and n_q (`with_case_defaults`). A schema-1 run (rounds in one worker per implementation, no
    intervals, no reference workload per round) is another method: its meta says so, and what
    it lacks stays absent."""
    if meta["schema_version"] >= 2:
        return {**meta, "schema_version": SCHEMA_VERSION}
    return {
        **meta,
        "schema_version": SCHEMA_VERSION,
        "migrated_from": meta["schema_version"],
        "method": {
            "rounds": meta.get("settings", {}).get("rounds"),
            "round_process": "one worker per implementation for the whole sweep",
            "statistic": "median",
            "interval": None,
            "references": {},
        },
    }
