"""Crashes its worker with a segmentation fault from n >= 16 (reads address 0 via ctypes)."""

import ctypes

from _common import CAUSAL, DEVICE, DTYPES, correct, prepare, unavailable_reason  # noqa: F401

DESCRIPTION = "planted fault: segfaults for n >= 16"


def run(state):
    if state["args"].q.shape[1] >= 16:
        ctypes.string_at(0)
    state["out"] = correct(state["args"])


def fetch(state):
    return state["out"]
