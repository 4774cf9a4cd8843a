"""`attnbench new NAME`: a new implementation that passes the conformance suite as written."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import impls

TEMPLATE = '''"""{name}: describe in a sentence what makes this implementation different.

Written by `attnbench new {name}` as a working NumPy starting point: it passes the conformance
tests as it stands. Change `prepare`, `run` and `fetch`; keep the module-level names.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "{name}: a NumPy starting point (edit me)"
DTYPES = ("float32", "float64")  # drop one if your code does not support it
CAUSAL = True  # False if the causal mask is not supported
DEVICE = "cpu"  # "cuda" for a GPU implementation


def unavailable_reason() -> str | None:
    """None when this can run here; otherwise why not, in words (a missing package, no GPU)."""
    # Import optional dependencies here, not at module level, and report a failure:
    #     try:
    #         import mylib  # noqa: F401
    #     except ImportError:
    #         return "mylib is not installed (pip install mylib)"
    return None


def prepare(args):
    """Untimed set-up of what depends only on shapes, dtypes and flags: allocation, JIT
    compilation, plans (a GPU implementation also copies the inputs to the device). Anything
    that reads the values of q, k or v belongs in `run`: the conformance suite checks it.

    args.q (batch, n_q, d_k), args.k (batch / args.group, n_k, d_k), args.v (batch /
    args.group, n_k, d_v) are checked, finite, of one dtype: with grouped-query attention
    (args.group > 1) query entry b attends with key/value entry b // args.group.
    args.causal is a bool; args.scale a positive float.
    """
    return {{"args": args, "out": None}}


def run(state) -> None:
    """The timed part. Return only when the result is complete (synchronise a GPU here)."""
    args = state["args"]
    # Each key/value entry once per query entry that uses it (np.repeat copies: a faster
    # implementation reads the shared entry in place).
    k = np.repeat(args.k, args.group, axis=0)
    v = np.repeat(args.v, args.group, axis=0)
    scores = (args.q @ np.swapaxes(k, 1, 2)) * args.scale  # (batch, n_q, n_k)
    if args.causal:
        # Top-left aligned, as torch's is_causal: query i sees keys 0..i.
        n_q, n_k = scores.shape[1:]
        scores[:, np.triu(np.ones((n_q, n_k), dtype=bool), k=1)] = -np.inf
    scores -= scores.max(axis=2, keepdims=True)  # stable softmax: subtract the row maximum
    weights = np.exp(scores)
    weights /= weights.sum(axis=2, keepdims=True)
    state["out"] = weights @ v  # (batch, n_q, d_v)


def fetch(state) -> np.ndarray:
    """The result as a NumPy array (batch, n_q, d_v) of the input's dtype."""
    return state["out"]
'''

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def impls_dir() -> Path:
    return Path(impls.__file__).parent


def create_implementation(name: str, directory: Path | None = None) -> Path:
    """Write impls/NAME.py from the template; refuse a bad or taken name."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"NAME: expected a lower-case Python identifier (letters, digits, _), got {name!r}"
        )
    if name in impls.names():
        raise ValueError(f"NAME: an implementation called {name!r} already exists")
    path = (directory or impls_dir()) / f"{name}.py"
    if path.exists():
        raise ValueError(f"NAME: {path} already exists")
    path.write_text(TEMPLATE.format(name=name))
    return path
