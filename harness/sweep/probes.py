"""How fast the machine is, that minute: the reference workloads, measured at the start and the
end of a run and before every round of every shape.
"""

from __future__ import annotations

import statistics

from harness.cli.config import SweepConfig
from harness.results.cases import Case
from harness.sweep.pool import Worker, Workers

# The reference workloads measured before every round of every shape, in a worker of its own:
# PEAK_REPEATS products of PEAK_SIZE^3 (their median is also the CPU peak a case's
# peak_fraction divides by: a median, as the times are) and as many streaming reads.
PEAK_SIZE = 2048
STREAM_BYTES = 64 << 20  # over the L2 of the machines seen, cheap to read (about 5 ms)
PEAK_REPEATS = 3
START_PEAK_REPEATS = 5  # the start and the end of a run: how far the machine drifted


def start_probe(config: SweepConfig, repeats: int) -> dict[str, dict]:
    """The reference workloads per dtype, in a worker with the sweep's threads."""
    helper = Worker(config.threads)
    try:
        return {
            dtype: helper.probe(dtype, PEAK_SIZE, repeats, STREAM_BYTES) for dtype in config.dtype
        }
    finally:
        helper.close()


def peak_summary(probes: dict[str, dict]) -> dict[str, float]:
    return {dtype: statistics.median(p["gemm_rates"]) for dtype, p in probes.items()}


def round_probe(workers: Workers, case: Case, cold_cache: bool) -> dict | None:
    """The references before a round of `case`'s shape, and the bandwidth of reading as many
    bytes as its cases, in their cache state; None if the probe worker was lost."""
    return workers.probe(case.dtype, PEAK_SIZE, PEAK_REPEATS, STREAM_BYTES, case.bytes, cold_cache)


def described() -> dict:
    """The reference workloads in words, for the method recorded in meta.json."""
    return {
        "references": {
            "gemm": f"{PEAK_REPEATS} products of {PEAK_SIZE}^3 before each round, the fastest",
            "stream": f"{PEAK_REPEATS} streaming reads of {STREAM_BYTES >> 20} MiB before each "
            "round, the fastest",
        },
        "bandwidth": f"{PEAK_REPEATS} reads of each shape's bytes by every thread before each "
        "of its rounds, in the same cache state; the median over rounds of each round's median "
        "(bandwidth_best_gbps: of each round's fastest)",
    }
