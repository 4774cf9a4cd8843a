"""Pure-Python loops that follow the seed step by step: the reference people read.

No NumPy in the arithmetic: the arrays become nested lists at the start of `run`, and every score,
weight and sum below is one Python float (double precision) operation. Slow by design.
"""

from __future__ import annotations

import math
from operator import mul

import numpy as np

DESCRIPTION = "pure-Python loops following the seed step by step (readable, slow)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"
STYLE = ("#7f7f7f", "s")  # colour and marker in every figure


def unavailable_reason() -> str | None:
    return None


def prepare(args):
    return {"args": args, "out": None}


def attend_one_query(query, keys, value_columns, scale):
    """One token's output: the softmax-weighted sum of the values it may see."""
    # Attention scores: the query's dot product with every key, scaled by 1/sqrt(d_k).
    # (sum(map(mul, a, b)) is sum(a_i * b_i), written so that Python runs it quickly.)
    scores = [scale * sum(map(mul, query, key)) for key in keys]
    # Softmax, made stable by subtracting the largest score before exponentiating.
    largest = max(scores)
    exps = [math.exp(s - largest) for s in scores]
    total = sum(exps)
    weights = [e / total for e in exps]
    # Weighted sum of the value vectors, one output feature (a column of values) at a time.
    # zip stops at the shorter list, so the weights select the visible keys.
    return [sum(map(mul, weights, column)) for column in value_columns]


def run(state):
    args = state["args"]
    # The arrays as nested lists of Python floats (part of the timed call: they are the inputs):
    # q [batch][n_q][d_k], k [batch][n_k][d_k], and the values stored feature by feature,
    # [batch][d_v][n_k], so that each output feature is one weighted sum.
    v_columns = np.swapaxes(args.v, 1, 2).tolist()
    keys = args.k.tolist()
    out = []
    for b, q in enumerate(args.q.tolist()):
        # Grouped-query attention: `group` query heads in a row share one key/value head.
        k, v = keys[b // args.group], v_columns[b // args.group]
        rows = []
        for i, query in enumerate(q):
            # Causal: query i sees keys 0..i (top-left aligned, as torch's is_causal).
            visible = i + 1 if args.causal else len(k)
            rows.append(attend_one_query(query, k[:visible], v, args.scale))
        out.append(rows)
    state["out"] = out


def fetch(state):
    return np.array(state["out"], dtype=state["args"].dtype)
