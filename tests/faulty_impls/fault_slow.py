"""Correct, but each call takes 0.1 s: lets a test interrupt a sweep midway."""

import time

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted: correct but slow (0.1 s per call)"


def run(state):
    time.sleep(0.1)
    state["out"] = correct(state["args"])


def fetch(state):
    return state["out"].astype(state["args"].dtype)
