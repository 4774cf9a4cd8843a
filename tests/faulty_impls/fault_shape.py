"""Returns the wrong shape and dtype."""

import numpy as np
from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: returns the wrong shape and dtype"


def run(state):
    state["out"] = correct(state["args"])[:, 1:].astype(np.float16)


def fetch(state):
    return state["out"]
