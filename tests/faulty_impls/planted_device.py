"""A CPU stand-in with the GPU hooks, so that the sweep's event-timer path runs without a GPU.

`event_time_s` reports a fixed 1 ms per run, `transfer_s` what prepare and the last fetch
"copied" (0.25 ms each), `device_memory_bytes` the arrays it holds; `is_simulated` is true
when ATTNBENCH_PLANTED_SIMULATED=1.
"""

import os

from _common import CAUSAL, DTYPES, correct, unavailable_reason  # noqa: F401

DESCRIPTION = "planted: CPU stand-in exposing event_time_s, transfer_s, device_memory_bytes"
DEVICE = "cuda"
EVENT_S = 1e-3
COPY_S = 2.5e-4


def prepare(args):
    return {"args": args, "out": None, "h2d_s": COPY_S, "d2h_s": 0.0}


def run(state):
    state["out"] = correct(state["args"]).astype(state["args"].dtype)


def fetch(state):
    state["d2h_s"] = COPY_S
    return state["out"]


def event_time_s(state) -> float:
    run(state)
    return EVENT_S


def transfer_s(state) -> float:
    return state["h2d_s"] + state["d2h_s"]


def device_memory_bytes(state) -> int:
    args = state["args"]
    return int(args.q.nbytes + args.k.nbytes + args.v.nbytes + state["out"].nbytes)


def is_simulated() -> bool:
    return os.environ.get("ATTNBENCH_PLANTED_SIMULATED") == "1"
