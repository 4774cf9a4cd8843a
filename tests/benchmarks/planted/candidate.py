"""numba_parallel plus ATTNBENCH_PLANTED_EXTRA (a fraction, default 0) of its query rows run
again in every call: a planted slowdown for tests/benchmarks/reproducibility.sh."""

import dataclasses
import os

from impls import numba_parallel as base

DESCRIPTION = "numba_parallel with planted extra work (ATTNBENCH_PLANTED_EXTRA)"
DTYPES = base.DTYPES
CAUSAL = base.CAUSAL
DEVICE = "cpu"
EXTRA = float(os.environ.get("ATTNBENCH_PLANTED_EXTRA", "0"))


def unavailable_reason():
    return base.unavailable_reason()


def prepare(args):
    state = {"main": base.prepare(args), "extra": None}
    rows = round(EXTRA * args.q.shape[1])
    if rows:
        state["extra"] = base.prepare(dataclasses.replace(args, q=args.q[:, :rows]))
    return state


def run(state):
    base.run(state["main"])
    if state["extra"] is not None:
        base.run(state["extra"])


def fetch(state):
    return base.fetch(state["main"])
