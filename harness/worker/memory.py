"""The peak resident memory one call adds, from Linux's resettable high-water mark."""

from __future__ import annotations

import contextlib
import ctypes


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim), so that memory a previous
    call freed but kept resident cannot hide this call's allocations from the high-water mark."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the mark may undercount
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_extra_bytes(run) -> int | None:
    """Peak resident memory one call adds, from Linux's resettable high-water mark (VmHWM).

    This counts every allocation the call touches (NumPy's, Numba's runtime, BLAS buffers,
    torch's), not only what Python's allocator sees. None where /proc does not offer it.
    """
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _proc_status_bytes("VmRSS")
    run()
    peak = _proc_status_bytes("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before)
