"""Never returns for n >= 16."""

import time

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: sleeps forever for n >= 16"


def run(state):
    while state["args"].q.shape[1] >= 16:
        time.sleep(1)
    state["out"] = correct(state["args"])


def fetch(state):
    return state["out"]
