"""Parsing and checking of user-given options: each error names the option and the bad value."""

from __future__ import annotations

import difflib
import math

import impls


class UsageError(Exception):
    """A user's mistake: shown as one line, never as a traceback."""


def split_list(option: str, text: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",")]
    if not text or any(not item for item in items):
        raise UsageError(f"{option}: expected a comma-separated list, got {text!r}")
    return items


def parse_positive_int(option: str, value) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{option}: expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise UsageError(f"{option}: expected a positive integer, got {value!r}")
    return number


def parse_non_negative_int(option: str, value) -> int:
    """A seed for NumPy's generator, or a count where 0 means "the default": an integer >= 0."""
    if isinstance(value, (bool, float)):
        raise UsageError(f"{option}: expected a non-negative integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{option}: expected a non-negative integer, got {value!r}") from None
    if number < 0:
        raise UsageError(f"{option}: expected a non-negative integer, got {value!r}")
    return number


def parse_int_list(option: str, text: str) -> list[int]:
    return [parse_positive_int(option, item) for item in split_list(option, text)]


def parse_dtype_list(text: str) -> list[str]:
    dtypes = split_list("--dtype", text)
    for dtype in dtypes:
        if dtype not in impls.SUPPORTED_DTYPES:
            raise UsageError(
                f"--dtype: expected {' or '.join(impls.SUPPORTED_DTYPES)}, got {dtype!r}"
            )
    return dtypes


def parse_impl_list(text: str | None, only_available: bool) -> list[impls.Implementation]:
    """Named implementations from a comma-separated --impl (default: see resolve_impls)."""
    return resolve_impls(None if text is None else split_list("--impl", text), only_available)


def resolve_impls(names, only_available: bool) -> list[impls.Implementation]:
    """The named implementations; None: every registered one (or every one available here)."""
    if names is None:
        chosen = list(impls.registry().values())
        return [i for i in chosen if i.available] if only_available else chosen
    registered = impls.names()
    unknown = [name for name in names if name not in registered]
    if unknown:
        guesses = []
        for name in unknown:
            close = difflib.get_close_matches(name, registered, n=1)
            guesses.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        raise UsageError(
            f"--impl: unknown implementation{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(guesses)}; valid names: {', '.join(registered)}"
        )
    return [impls.get(name) for name in names]


def parse_threshold(text: str) -> float:
    """`attnbench compare --threshold`: "5%" or "0.05" -> 0.05."""
    return parse_fraction("--threshold", text, allow_zero=True)


def parse_fraction(option: str, text, allow_zero: bool = False) -> float:
    """ "5%" or "0.05" -> 0.05. A bare number of 1 or more is refused as ambiguous."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise UsageError(
            f"{option}: expected a percentage like 5% or a fraction like 0.05, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{option}: expected a positive finite value, got {text!r}")
    if not percent and value >= 1:
        raise UsageError(
            f"{option}: {text!r} would mean {value:.0%}; write {raw}% for "
            f"{value:g} percent or a fraction below 1 like 0.05"
        )
    return value / 100 if percent else value
