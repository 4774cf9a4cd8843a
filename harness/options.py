"""Parsing and checking of user-given options: each error names the option and the bad value."""

from __future__ import annotations

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
    """Named implementations (default: all registered, or all available here)."""
    if text is None:
        chosen = list(impls.registry().values())
        return [i for i in chosen if i.available] if only_available else chosen
    selected = []
    for name in split_list("--impl", text):
        try:
            selected.append(impls.get(name))
        except impls.UnknownImplementationError as exc:
            raise UsageError(f"--impl: {exc}") from None
    return selected
