"""Tile variants of numba_cuda against torch's SDPA on one GPU: how docs/PERFORMANCE.md chose them.

The variants of each width: the CUDA-core kernels' defaults and alternatives, and at widths
32-128 the tensor-core kernel (mma_kernel.py) in 3xTF32 and in plain TF32.

    python tests/benchmarks/tune_numba_cuda.py --ptxas     # here: registers and spills per variant
    python tests/benchmarks/tune_numba_cuda.py --out DIR   # on a GPU: CUDA-event medians, CSV

Every variant is checked against a float64 reference before it is timed (a fast wrong kernel is
not a result). Each time is the median of `--repeats` single launches, each queued behind an
untimed one (`event_time_s`), after a warm-up launch. TFLOP/s counts 4 n^2 d per head (2 n^2 d
when causal), the convention of FlashAttention's papers.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.worker.checking import reference_attention
from impls import numba_cuda as mod
from impls import torch_sdpa_cuda as peer
from impls._inputs import AttentionArgs
from impls.numba_cuda import kernels

# Alternatives to the defaults of the row-per-thread kernel: (rows, split, keys per thread,
# v_width or None, blocks per SM, prefetch). Earlier rounds' variants and their times are in
# docs/PERFORMANCE.md.
VARIANTS = {
    128: [(32, 8, 4, None, 1, False)],
}


def configs(dtype: str, width: int) -> list:
    """The defaults of every block height, then the alternatives: at the thread-tiled widths
    the row-per-thread kernel (what it replaced) and the other loop unrolling."""
    heights = mod.ROW_CHOICES if dtype == "float32" else (32,)
    defaults = [mod.kernel_config(dtype, width, rows) for rows in heights]
    out = []
    for rows, split, kpt, v_width, min_blocks, prefetch in VARIANTS.get(width, []):
        if dtype != "float32":
            break
        v_width = v_width or min(width, mod.MAX_V_BYTES // 4)
        cfg = mod.TileConfig(dtype, width, v_width, rows, split, kpt, min_blocks, prefetch)
        if cfg.shared_bytes <= mod.STATIC_SHARED_LIMIT and cfg not in defaults:
            out.append(cfg)
    if dtype == "float32" and width in mod.THREAD_TILE_WIDTHS:
        for cfg in defaults:
            out.append(mod.tile_config(dtype, width, cfg.rows))
            out.append(replace(cfg, unroll=3 - cfg.unroll))
    if dtype == "float32" and width in mod.MMA_WIDTHS:  # the tensor cores: 3xTF32 and plain
        out += [mod.mma_config(width, passes) for passes in mod.MMA_PASSES]
    return [*defaults, *out]


def split_choices(args: AttentionArgs, cfg) -> list[int]:
    """prepare()'s key splits for these inputs, and one split where that differs."""
    _, auto = mod.launch_plan(args, cfg)
    return [auto, 1] if auto > 1 else [auto]


def label(cfg) -> str:
    if isinstance(cfg, mod.MmaConfig):
        return f"mma {cfg.precision} r{cfg.rows}xk{cfg.keys}/b{cfg.min_blocks}"
    if isinstance(cfg, mod.ThreadTileConfig):
        return (
            f"tt r{cfg.rows}xk{cfg.keys} ({cfg.rows_per_thread}x{cfg.keys_per_thread})"
            f"/b{cfg.min_blocks}/u{cfg.unroll}"
        )
    return (
        f"r{cfg.rows}xs{cfg.split}xk{cfg.keys_per_thread}"
        f"/v{cfg.v_width}/t{cfg.threads}/b{cfg.min_blocks}{'/pf' if cfg.prefetch else ''}"
    )


def ptxas_report(dtype: str) -> None:
    """Compile every variant to sm_90 PTX and let ptxas say registers, spills and shared bytes."""
    from numba import cuda

    for width in mod.WIDTHS:
        for cfg in configs(dtype, width):
            ptx, _ = cuda.compile_ptx(
                kernels._kernel_function(cfg),
                kernels._signature(cfg),
                cc=(9, 0),
                **kernels._jit_options(cfg),
            )
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(ptx)
            res = subprocess.run(
                ["ptxas", "-arch=sm_90", "-v", f.name, "-o", os.devnull],
                capture_output=True,
                text=True,
            )
            regs = re.search(r"Used (\d+) registers", res.stderr)
            stack = re.search(r"(\d+) bytes stack frame", res.stderr)
            spill = re.search(r"(\d+) bytes spill stores", res.stderr)
            print(
                f"{dtype} w{width:<4} {label(cfg):<28} regs {regs and regs.group(1)} "
                f"spill {spill and spill.group(1)} stack {stack and stack.group(1)} "
                f"shared {cfg.shared_bytes}"
            )


def inputs(batch, n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, n, d)).astype(dtype) for _ in range(3)]


def median_event_s(timer, state, repeats: int) -> float:
    timer(state)  # warm-up
    return statistics.median(timer(state) for _ in range(repeats))


def torch_time_s(q, k, v, causal, repeats) -> float:
    import torch

    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=1 / math.sqrt(q.shape[-1]), lead=())
    state = peer.prepare(args)
    seconds = median_event_s(peer.event_time_s, state, repeats)
    del state
    torch.cuda.empty_cache()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ptxas", action="store_true", help="register report only (no GPU)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--shapes", default="1x8192x64,1x8192x32,1x8192x128,1x2048x64,8x4096x64,64x4096x128"
    )
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--check-n", type=int, default=1024, help="n of the correctness check")
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()
    if opts.ptxas:
        ptxas_report(opts.dtype)
        return
    have_torch = peer.unavailable_reason() is None
    rows = []
    for shape in opts.shapes.split(","):
        batch, n, d = (int(x) for x in shape.split("x"))
        q, k, v = inputs(batch, n, d, opts.dtype)
        flop = 4 * batch * n * n * d / (2 if opts.causal else 1)
        scale = 1 / math.sqrt(d)
        cq, ck, cv = (x[:1, : opts.check_n] for x in (q, k, v))
        expected = reference_attention(cq, ck, cv, opts.causal, scale)
        if have_torch:
            t_torch = torch_time_s(q, k, v, opts.causal, opts.repeats)
            rows.append(dict(shape=shape, variant="torch_sdpa", time_s=t_torch))
        else:
            t_torch = float("nan")
        args = AttentionArgs(q=q, k=k, v=v, causal=opts.causal, scale=scale, lead=())
        check = AttentionArgs(q=cq, k=ck, v=cv, causal=opts.causal, scale=scale, lead=())
        variants = [
            (cfg, splits)
            for cfg in configs(opts.dtype, mod.width_for(d, d))
            for splits in split_choices(args, cfg)
        ]
        for cfg, splits in variants:
            split_kernel = isinstance(cfg, (mod.ThreadTileConfig, mod.MmaConfig))
            name = label(cfg) + (f"/s{splits}" if split_kernel else "")
            # plain TF32 rounds inputs to 10 mantissa bits: ~1e-3 relative, by design
            limit = 5e-3 if getattr(cfg, "passes", 3) == 1 else 1e-4
            start = time.perf_counter()
            try:
                state = mod.prepare(check, cfg, splits)  # the timed splits, on fewer rows
                mod.run(state)
                err = float(np.abs(mod.fetch(state) - expected).max())
                state = mod.prepare(args, cfg, splits)
                seconds = median_event_s(mod.event_time_s, state, opts.repeats)
                del state
            except Exception as exc:  # noqa: BLE001 - one broken variant must not end the run
                print(f"{shape} {name}: {type(exc).__name__}: {exc}", flush=True)
                continue
            rows.append(
                dict(
                    shape=shape,
                    variant=name,
                    time_s=seconds,
                    max_abs_err=err,
                    splits=splits,
                    **{f"cfg_{k}": v for k, v in asdict(cfg).items()},
                )
            )
            print(
                f"{shape:<12} {name:<34} {seconds * 1e3:8.3f} ms "
                f"{flop / seconds / 1e12:6.2f} TFLOP/s  x{t_torch / seconds:5.2f} torch  "
                f"err {err:.1e}{'' if err < limit else ' WRONG'}  "
                f"(compile+check {time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        if have_torch:
            print(
                f"{shape:<12} {'torch_sdpa':<34} {t_torch * 1e3:8.3f} ms "
                f"{flop / t_torch / 1e12:6.2f} TFLOP/s",
                flush=True,
            )
    if opts.out:
        opts.out.mkdir(parents=True, exist_ok=True)
        name = f"tune_{opts.dtype}{'_causal' if opts.causal else ''}.csv"
        keys = sorted({k for r in rows for k in r})
        with open(opts.out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
