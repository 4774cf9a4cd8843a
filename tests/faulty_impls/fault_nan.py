"""Returns NaN in one element."""

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: returns a NaN"


def run(state):
    out = correct(state["args"]).astype(state["args"].dtype)
    out[0, -1, 0] = float("nan")
    state["out"] = out


def fetch(state):
    return state["out"]
