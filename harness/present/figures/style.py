"""One style per implementation, the same in every figure and every run."""

from __future__ import annotations

import zlib

import pandas as pd

import impls

# For names no registered implementation gives a STYLE: a colour and marker from a hash of the
# name (stable across runs and processes).
FALLBACK_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")
FALLBACK_MARKERS = ("P", "*", "h", "<", ">", "p", "d")


def declared_styles() -> dict[str, tuple[str, str]]:
    """(colour, marker) of each registered implementation that declares one, in the registry's
    order."""
    return {name: impl.style for name, impl in impls.registry().items() if impl.style}


def impl_style(name: str) -> dict:
    """Colour and marker of an implementation: its declared STYLE, else hashed from the name."""
    declared = declared_styles()
    if name in declared:
        color, marker = declared[name]
    else:
        key = zlib.crc32(name.encode())
        color = FALLBACK_COLORS[key % len(FALLBACK_COLORS)]
        marker = FALLBACK_MARKERS[(key // len(FALLBACK_COLORS)) % len(FALLBACK_MARKERS)]
    return {"color": color, "marker": marker}


def impl_order(frame: pd.DataFrame) -> list[str]:
    """Implementations in a stable order: those with a declared style first, in the registry's
    order, then the others by name."""
    names = list(frame["impl"].unique())
    declared = [n for n in declared_styles() if n in names]
    return declared + sorted(n for n in names if n not in declared)
