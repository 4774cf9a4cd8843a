"""One style per implementation, the same in every figure and every run."""

from __future__ import annotations

import zlib

import pandas as pd

# Known names are fixed, others get a colour and marker from a hash of the name (stable across
# runs and processes).
KNOWN_STYLES = {
    "naive": ("#7f7f7f", "s"),
    "numpy": ("#1f77b4", "o"),
    "numba_parallel": ("#ff7f0e", "^"),
    "numba_cuda": ("#2ca02c", "D"),
    "torch_sdpa": ("#d62728", "v"),
}
FALLBACK_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")
FALLBACK_MARKERS = ("P", "*", "h", "<", ">", "p", "d")


def impl_style(name: str) -> dict:
    """Colour and marker of an implementation, fixed for known names, hashed for others."""
    if name in KNOWN_STYLES:
        color, marker = KNOWN_STYLES[name]
    else:
        key = zlib.crc32(name.encode())
        color = FALLBACK_COLORS[key % len(FALLBACK_COLORS)]
        marker = FALLBACK_MARKERS[(key // len(FALLBACK_COLORS)) % len(FALLBACK_MARKERS)]
    return {"color": color, "marker": marker}


def impl_order(frame: pd.DataFrame) -> list[str]:
    """Implementations in a stable order: known names first, in the style table's order."""
    names = list(frame["impl"].unique())
    known = [n for n in KNOWN_STYLES if n in names]
    return known + sorted(n for n in names if n not in KNOWN_STYLES)
