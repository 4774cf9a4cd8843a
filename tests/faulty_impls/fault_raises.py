"""Raises from run for n >= 16."""

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: raises for n >= 16"


def run(state):
    if state["args"].q.shape[1] >= 16:
        raise RuntimeError("planted failure in run")
    state["out"] = correct(state["args"])


def fetch(state):
    return state["out"]
