"""Returns numbers of the right shape and dtype that are wrong."""

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: returns wrong numbers"


def run(state):
    state["out"] = correct(state["args"]) + 0.5


def fetch(state):
    return state["out"].astype(state["args"].dtype)
