"""What the run was measured on: machine, libraries, BLAS, GPU, git state (for meta.json)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

VERSIONED = ("numpy", "numba", "numba-cuda", "llvmlite", "pandas", "matplotlib", "torch", "scipy")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def _cpu_info() -> dict:
    import cpuinfo

    return cpuinfo.get_cpu_info()


def cpu_model() -> str:
    info = _cpu_info()
    return str(info.get("brand_raw") or info.get("arch") or platform.processor() or "unknown")


# The widest vector instructions, widest first, by the flag that shows them (py-cpuinfo's names).
VECTOR_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse2", "SSE2"))


def cpu_signature() -> str:
    """Vendor, family, model and stepping, and the widest vector ISA.

    The brand string alone does not tell machines apart: cloud VMs report "AMD EPYC" for Zen 4
    and Zen 5 alike, under the same host name, and their figures differ by 2x.
    """
    info = _cpu_info()
    flags = set(info.get("flags", ()))
    isa = next((name for flag, name in VECTOR_ISAS if flag in flags), None)
    parts = [
        str(info.get("vendor_id_raw") or info.get("arch_string_raw") or platform.machine()),
        *(f"{key} {info[key]}" for key in ("family", "model", "stepping") if key in info),
    ]
    return ", ".join(parts) + (f"; {isa}" if isa else "")


def cpu_label(machine: dict) -> str:
    """A run's CPU for titles: its brand with the family, model and widest vectors of its
    cpu_signature where recorded ("AMD EPYC (family 26 model 2, AVX-512)")."""
    cpu = machine.get("cpu", "unknown CPU")
    ids, _, isa = str(machine.get("cpu_signature", "")).partition(";")
    kept = [part.strip() for part in ids.split(",") if part.strip().startswith(("family", "model"))]
    detail = ", ".join(filter(None, [" ".join(kept), isa.strip()]))
    return f"{cpu} ({detail})" if detail else cpu


def blas_info() -> list[dict]:
    """The BLAS libraries NumPy loaded, with vendor, version and thread count (threadpoolctl)."""
    import numpy  # noqa: F401 - loads its BLAS so that threadpoolctl can see it
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def gpu_info() -> list[dict]:
    """GPU name, driver and memory from nvidia-smi; empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in text.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    return gpus


def git_state(directory: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tracked_by_git(directory: Path) -> bool:
    """Whether git tracks any file in `directory` (a committed run: not to be written into)."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "--", "."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def machine_id() -> str:
    """A short, path-safe name of this host, for run directory names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname())[:40] or "host"


# Environment variables that change which code the libraries run or how they thread (Numba's
# target, torch's and MKL's instruction set, OpenBLAS's kernels, the OpenMP pools): a figure
# holds for them, so a run records those that are set.
CODE_PATH_PREFIXES = ("NUMBA_", "ATEN_", "MKL_", "OPENBLAS_", "OMP_", "KMP_", "GOMP_", "CUDA_")


def code_path_environment() -> dict[str, str]:
    """The set variables among CODE_PATH_PREFIXES, by name."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(CODE_PATH_PREFIXES)}


def describe_machine() -> dict:
    import psutil

    return {
        "id": machine_id(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_signature": cpu_signature(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "gpus": gpu_info(),
    }
