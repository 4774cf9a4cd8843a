"""One registry of implementations, found rather than listed.

Sources, in order: every public module or subpackage of this package (a new file is a new
implementation), every directory named in the ATTNBENCH_IMPLS_PATH environment variable
(os.pathsep-separated; used for out-of-tree and test-only implementations), and the
`attnbench.impls` entry-point group (third-party packages). Each module exposes the same small
surface:

    NAME = "my_impl"            # optional, defaults to the module name
    DESCRIPTION = "one line"
    DTYPES = ("float32", "float64")
    CAUSAL = True               # supports the causal mask
    DEVICE = "cpu"              # or "cuda"
    def unavailable_reason() -> str | None: ...   # None when it can run here
    def prepare(args: AttentionArgs) -> state: ...  # allocate, compile: never timed
    def run(state) -> None: ...                      # the timed part; returns when complete
    def fetch(state) -> np.ndarray: ...              # (batch, n_q, d_v), the input's dtype

The timing rule: `prepare` does only what depends on shapes, dtypes and flags (allocation,
compilation, plans; a GPU implementation also copies the inputs to the device, reported as
transfer_s); every step that reads the values of q, k or v happens in `run`, which is timed.
Optional hooks (OPTIONAL_HOOKS), reached through `Implementation` and `PreparedCall` so that
the harness never names a module: `variant(state)` says which of its code paths a prepared
call runs (a register tile, a vector width), for the report; `release_workspace()` frees
scratch a module keeps between calls (called before its memory is measured); `is_simulated()`
says its device is a simulator (correct, but its times mean nothing); and for GPU
implementations `event_time_s(state)`, `transfer_s(state)` and `device_memory_bytes(state)`.
Optional attributes: `STYLE = (colour, marker)`, the implementation's look in every figure
(others get one from a hash of the name), and `SIMULATOR_MAX_N`, the largest n its simulated
device is asked to run in the tests.

A module that fails to import is still registered, as unavailable with its error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from impls._inputs import AttentionArgs, check_attention_args

ENTRY_POINT_GROUP = "attnbench.impls"
PATH_ENV = "ATTNBENCH_IMPLS_PATH"
REQUIRED = (
    "DESCRIPTION",
    "DTYPES",
    "CAUSAL",
    "DEVICE",
    "unavailable_reason",
    "prepare",
    "run",
    "fetch",
)
DEVICES = ("cpu", "cuda")
# Ratios are to the first of these a run measured, unless it names its own baseline: torch's
# SDPA, the peer users compare with, else the NumPy version, which runs everywhere.
DEFAULT_BASELINES = ("torch_sdpa", "numpy")
OPTIONAL_HOOKS = (
    "variant",
    "release_workspace",
    "is_simulated",
    "event_time_s",
    "transfer_s",
    "device_memory_bytes",
)


class UnknownImplementationError(LookupError):
    """Raised for a name that is not registered; the message lists the valid ones."""


class ImplementationUnavailableError(RuntimeError):
    """Raised when an implementation is asked to run where it cannot."""


class ImplementationError(RuntimeError):
    """Raised when an implementation breaks its contract (wrong output shape or dtype)."""


@dataclass(frozen=True)
class PreparedCall:
    """A call made ready by `prepare`: `run` is the part worth timing, `fetch` returns NumPy."""

    impl: Implementation
    args: AttentionArgs
    state: Any = field(repr=False)

    def run(self) -> None:
        self.impl.module.run(self.state)

    @property
    def timed_on_device(self) -> bool:
        """Whether the implementation times its own runs on its device (CUDA events)."""
        return self.impl.has_hook("event_time_s")

    def event_time_s(self) -> float:
        """One run timed on the device, in seconds (only where timed_on_device)."""
        return float(self.impl.module.event_time_s(self.state))

    def variant(self) -> str:
        """Which of its code paths this call runs, in the implementation's words ("" if it has
        one only)."""
        return str(self.impl.module.variant(self.state)) if self.impl.has_hook("variant") else ""

    def transfer_s(self) -> float | None:
        """Host <-> device copies of this call, or None for a CPU implementation."""
        if not self.impl.has_hook("transfer_s"):
            return None
        return float(self.impl.module.transfer_s(self.state))

    def device_memory_bytes(self) -> int | None:
        """What the call holds on its device, or None where its memory is the host's."""
        if not self.impl.has_hook("device_memory_bytes"):
            return None
        return int(self.impl.module.device_memory_bytes(self.state))

    def fetch(self) -> np.ndarray:
        out = self.impl.module.fetch(self.state)
        expected = (self.args.q.shape[0], self.args.q.shape[1], self.args.v.shape[2])
        if not isinstance(out, np.ndarray):
            raise ImplementationError(
                f"{self.impl.name}: fetch returned {type(out).__name__}, expected a NumPy array"
            )
        if out.shape != expected:
            raise ImplementationError(
                f"{self.impl.name}: fetch returned shape {out.shape}, expected {expected}"
            )
        if out.dtype != self.args.dtype:
            raise ImplementationError(
                f"{self.impl.name}: fetch returned dtype {out.dtype}, expected {self.args.dtype}"
            )
        return out.reshape(self.args.out_shape)


@dataclass(frozen=True)
class Implementation:
    """What the registry knows of one implementation; the module holds the code."""

    name: str
    description: str
    dtypes: tuple[str, ...]
    supports_causal: bool
    device: str
    source: str
    module: ModuleType | None = field(default=None, repr=False, compare=False)
    import_error: str | None = None
    style: tuple[str, str] | None = None
    simulator_max_n: int | None = None

    def unavailable_reason(self) -> str | None:
        """None when it can run here, otherwise why not, in words."""
        if self.import_error is not None:
            return self.import_error
        try:
            return self.module.unavailable_reason()
        except Exception as exc:  # noqa: BLE001 - a broken availability check is a reason too
            return f"availability check failed: {type(exc).__name__}: {exc}"

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def check_supported(self, args: AttentionArgs) -> None:
        if args.dtype.name not in self.dtypes:
            raise TypeError(
                f"dtype: implementation {self.name!r} supports {', '.join(self.dtypes)}, "
                f"got {args.dtype.name}"
            )
        if args.causal and not self.supports_causal:
            raise ValueError(
                f"causal: implementation {self.name!r} does not support the causal mask"
            )

    def prepare(self, q, k, v, causal=False, scale=None, check_finite=True) -> PreparedCall:
        """Check the inputs, then do the untimed set-up (allocation, compilation, plans)."""
        args = check_attention_args(q, k, v, causal=causal, scale=scale, check_finite=check_finite)
        return self.prepare_checked(args)

    def prepare_checked(self, args: AttentionArgs) -> PreparedCall:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ImplementationUnavailableError(f"{self.name}: not available here: {reason}")
        self.check_supported(args)
        return PreparedCall(self, args, self.module.prepare(args))

    def has_hook(self, hook: str) -> bool:
        """Whether the module defines one of the OPTIONAL_HOOKS."""
        if hook not in OPTIONAL_HOOKS:
            raise ValueError(f"hook: expected one of {', '.join(OPTIONAL_HOOKS)}, got {hook!r}")
        return self.module is not None and hasattr(self.module, hook)

    def release_workspace(self) -> None:
        """Free what the implementation keeps between calls (scratch buffers), if anything."""
        if self.has_hook("release_workspace"):
            self.module.release_workspace()

    def simulated(self) -> bool:
        """Whether it runs on a simulated device: correct, but its times mean nothing."""
        return self.has_hook("is_simulated") and bool(self.module.is_simulated())

    def attention(self, q, k, v, causal=False, scale=None, check_finite=True) -> np.ndarray:
        """softmax(q k^T * scale) v over the last two dims; NumPy in, NumPy out.
        check_finite=False skips reading every input for NaN and inf first."""
        call = self.prepare(q, k, v, causal=causal, scale=scale, check_finite=check_finite)
        call.run()
        return call.fetch()


def _record_from_module(module: ModuleType, default_name: str, source: str) -> Implementation:
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    name = str(getattr(module, "NAME", default_name))
    if missing:
        return _broken(name, source, f"module does not define {', '.join(missing)}")
    device = str(module.DEVICE)
    if device not in DEVICES:
        return _broken(name, source, f"DEVICE must be one of {DEVICES}, got {device!r}")
    style = getattr(module, "STYLE", None)
    if style is not None and not (
        isinstance(style, tuple) and len(style) == 2 and all(isinstance(s, str) for s in style)
    ):
        return _broken(name, source, f"STYLE must be a (colour, marker) pair, got {style!r}")
    return Implementation(
        name=name,
        description=str(module.DESCRIPTION),
        dtypes=tuple(str(d) for d in module.DTYPES),
        supports_causal=bool(module.CAUSAL),
        device=device,
        source=source,
        module=module,
        style=style,
        simulator_max_n=getattr(module, "SIMULATOR_MAX_N", None),
    )


def _broken(name: str, source: str, reason: str) -> Implementation:
    return Implementation(
        name=name,
        description="(could not be loaded)",
        dtypes=(),
        supports_causal=False,
        device="cpu",
        source=source,
        import_error=reason,
    )


def _import_error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"import failed: {type(exc).__name__}: {exc}{where}"


def _load_file(path: Path) -> Implementation:
    module_name = f"attnbench_extra_impls.{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure makes it unavailable, not fatal
        sys.modules.pop(module_name, None)
        return _broken(path.stem, str(path), _import_error_text(exc))
    return _record_from_module(module, path.stem, str(path))


def _discover() -> dict[str, Implementation]:
    found: list[Implementation] = []
    package_dir = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(package_dir)]), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        # a module impls/NAME.py, or a package impls/NAME/ (its __init__.py is the surface)
        source = str(package_dir / (info.name if info.ispkg else f"{info.name}.py"))
        try:
            module = importlib.import_module(f"impls.{info.name}")
        except Exception as exc:  # noqa: BLE001 - listed as unavailable with its error
            found.append(_broken(info.name, source, _import_error_text(exc)))
            continue
        found.append(_record_from_module(module, info.name, source))
    for directory in filter(None, os.environ.get(PATH_ENV, "").split(os.pathsep)):
        if directory not in sys.path:
            sys.path.append(directory)  # so that modules there can import their private helpers
        for path in sorted(Path(directory).glob("*.py")):
            if not path.name.startswith("_"):
                found.append(_load_file(path))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {ep.value}"
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - listed as unavailable with its error
            found.append(_broken(ep.name, source, _import_error_text(exc)))
            continue
        found.append(_record_from_module(module, ep.name, source))
    registry: dict[str, Implementation] = {}
    for record in found:
        if record.name in registry:  # the first keeps the name; the second is listed, broken
            reason = f"name {record.name!r} is already taken by {registry[record.name].source}"
            record = _broken(f"{record.name} ({record.source})", record.source, reason)
        registry[record.name] = record
    return registry


_REGISTRY: dict[str, Implementation] | None = None


def registry(refresh: bool = False) -> dict[str, Implementation]:
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = _discover()
    return _REGISTRY


def default_baseline(measured) -> str:
    """The implementation every ratio is to when none is asked for: the first of
    DEFAULT_BASELINES among the `measured` names, else the last of them."""
    measured = set(measured)
    return next((name for name in DEFAULT_BASELINES if name in measured), DEFAULT_BASELINES[-1])


def names() -> list[str]:
    """Every registered name, available here or not."""
    return list(registry())


def get(name: str) -> Implementation:
    try:
        return registry()[name]
    except KeyError:
        valid = ", ".join(registry())
        raise UnknownImplementationError(
            f"unknown implementation {name!r}; valid names: {valid}"
        ) from None
