"""numba_cuda: every kernel variant compiles to sm_90 PTX, and the kernel is right in the simulator.

Without a GPU the session's conftest sets NUMBA_ENABLE_CUDASIM=1 before numba is imported, and the
kernels run in numba's simulator (a Python thread per CUDA thread, so the shapes are tiny: tails
around the tile sizes rather than large n). PTX compilation needs the real CUDA target, so it runs
in a subprocess without NUMBA_ENABLE_CUDASIM.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from impls import numba_cuda as mod
from impls._inputs import AttentionArgs
from impls._registry import get

ROOT = Path(__file__).resolve().parents[1]
HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(
    not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (pip install 'attnbench[cuda]')"
)

pytestmark = pytest.mark.cuda


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run_python(code: str, timeout: float = 240) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def reference(q, k, v, causal=False, scale=None):
    """softmax(q k^T * scale) v in float64, causal top-left aligned (row i sees keys j <= i)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        visible = np.tril(np.ones(s.shape[-2:], dtype=bool))
        s = np.where(visible, s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-11, atol=1e-11)}


def _inputs(lead, n_q, n_k, d_k, d_v, dtype, seed=0, mult=1.0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((*lead, n_q, d_k)) * mult).astype(dtype)
    k = (rng.standard_normal((*lead, n_k, d_k)) * mult).astype(dtype)
    v = rng.standard_normal((*lead, n_k, d_v)).astype(dtype)
    return q, k, v


@pytest.fixture(scope="module")
def impl():
    if not HAVE_NUMBA_CUDA:
        pytest.skip("numba-cuda is not installed (pip install 'attnbench[cuda]')")
    record = get("numba_cuda")
    reason = record.unavailable_reason()
    if reason is not None:
        pytest.skip(f"numba_cuda unavailable here: {reason}")
    return record


# --- configuration (no numba needed) -------------------------------------------------------


IMPORT_AND_ASK = """
from numba.core import event
with event.install_recorder("numba:compile") as compiles:
    import impls
    record = impls.get("numba_cuda")
    reason = record.unavailable_reason()
print(len(compiles.buffer), record.device, reason)
"""


def test_registering_numba_cuda_and_asking_if_it_runs_compiles_nothing():
    """`import impls` and `attnbench list` stay fast: no kernel is built until a call's prepare."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_ASK], capture_output=True, text=True, cwd=ROOT,
        env=_subprocess_env(), timeout=120, check=True,
    )  # fmt: skip
    compiles, device = done.stdout.split()[:2]
    assert (compiles, device) == ("0", "cuda"), done.stdout


ROWS = [("float32", 32), ("float32", 64), ("float64", 32)]  # the block heights of each dtype


@pytest.mark.parametrize("dtype, rows", ROWS)
@pytest.mark.parametrize("width", [16, 32, 64, 128])
def test_tiles_fit_static_shared_memory_and_the_registers(dtype, rows, width):
    cfg = mod.tile_config(dtype, width, rows)
    assert cfg.shared_bytes <= mod.STATIC_SHARED_LIMIT
    assert cfg.keys_per_thread >= 1 and cfg.threads <= 1024
    assert cfg.width % 4 == 0 and cfg.v_width % 4 == 0
    if dtype == "float32":
        assert cfg.prefetch and cfg.threads == mod.THREADS and cfg.rows == rows
        assert cfg.register_words <= mod.REGISTER_WORDS


@pytest.mark.parametrize("rows", mod.ROW_CHOICES)
@pytest.mark.parametrize("width", mod.THREAD_TILE_WIDTHS)
def test_thread_tiles_fit_twice_on_a_multiprocessor(rows, width):
    cfg = mod.kernel_config("float32", width, rows)
    assert isinstance(cfg, mod.ThreadTileConfig)
    assert cfg.rows == rows and cfg.threads == 256
    assert cfg.shared_bytes <= mod.STATIC_SHARED_LIMIT
    assert cfg.min_blocks * cfg.shared_bytes <= 228 * 1024  # an H100's shared memory per SM
    assert cfg.keys >= 32  # 8 chunks of 4 per row of P: room for the 8-way bank swizzle
    assert cfg.width % mod.GRID_SIDE == 0  # output columns split evenly over 16 threads


@pytest.mark.parametrize(
    "dtype, width, kind",
    [
        ("float32", 16, mod.TileConfig),
        ("float32", 32, mod.ThreadTileConfig),
        ("float32", 64, mod.ThreadTileConfig),
        ("float32", 128, mod.TileConfig),
        ("float64", 64, mod.TileConfig),
    ],
)
def test_thread_tiles_for_float32_widths_32_and_64(dtype, width, kind):
    assert type(mod.kernel_config(dtype, width, 32)) is kind


@pytest.mark.parametrize(
    "row_blocks, keys, causal, expected",
    [
        (128, 8192, False, 2),  # n = 8192, 64-row tiles: 256 blocks for 264 slots
        (256, 16384, False, 1),  # n = 16384: the row tiles alone fill the GPU
        (64, 4096, False, 4),
        (128, 8192, True, 4),  # causal: twice the blocks, so the longest is a quarter
        (64, 4096, True, 8),
        (16, 1024, False, 2),  # no split shorter than min_split_keys
        (1, 1 << 20, True, 8),  # never more than max_splits
        (512, 4096, False, 1),
    ],
)
def test_key_splits_fill_the_block_slots(row_blocks, keys, causal, expected):
    assert mod.key_splits(row_blocks, keys, 264, causal, flop=1e12) == expected


def test_no_key_splits_where_the_merge_launch_would_cost_more():
    least = mod.LAUNCH_TUNING[(9, 0)].min_split_flop
    assert mod.key_splits(32, 1024, 264, False, flop=least / 2) == 1
    assert mod.key_splits(32, 1024, 264, False, flop=least) == 2


def test_an_architecture_not_yet_measured_is_planned_as_the_measured_one():
    assert mod.launch_tuning((8, 0)) is mod.LAUNCH_TUNING[mod.MEASURED_ARCHITECTURE]
    fewer = replace(mod.LAUNCH_TUNING[(9, 0)], max_splits=2)
    assert mod.key_splits(1, 1 << 20, 264, True, flop=1e12, tuning=fewer) == 2


@pytest.mark.parametrize(
    "batch, n, causal, rows",
    [
        (1, 8192, False, 64),
        (1, 4096, False, 64),  # 64 tiles x 4 splits fill the slots
        (1, 2048, False, 32),  # splits of 512 keys: 64-row tiles fill half, 32-row tiles all
        (1, 1024, False, 32),
        (8, 4096, False, 64),
        (1, 8192, True, 64),
    ],
)
def test_thread_tiles_are_64_rows_unless_32_fill_more_of_the_gpu(batch, n, causal, rows):
    assert mod.thread_tile_rows(batch, n, n, 264, causal, flop=1e12) == rows


def test_float64_tiles_are_32_rows():
    with pytest.raises(ValueError, match="float64 tiles have 32 rows"):
        mod.tile_config("float64", 64, rows=64)


def test_prefetch_needs_tiles_that_split_evenly_over_the_threads():
    with pytest.raises(ValueError, match="prefetch needs tiles that split evenly"):
        mod.TileConfig("float32", 16, 16, rows=32, split=8, keys_per_thread=1, prefetch=True)


@pytest.mark.parametrize(
    "blocks_at_64_rows, expected",
    [
        (128, 64),  # n = 8192, one head: 128 of 132 multiprocessors busy
        (64, 32),  # n = 4096: 64 tall blocks would leave half of them idle
        (256, 64),  # n = 16384: two waves, the second 124 of 132
        (140, 32),  # a second wave of 8 blocks: 53% of the slots
        (512, 64),  # batch 8 x n = 4096
    ],
)
def test_tall_blocks_only_where_the_grid_fills_the_gpu(blocks_at_64_rows, expected):
    assert mod.block_rows("float32", blocks_at_64_rows, 132, causal=False) == expected
    assert mod.block_rows("float64", blocks_at_64_rows, 132, causal=False) == 32


@pytest.mark.parametrize(
    "blocks_at_64_rows, expected",
    [
        (128, 32),  # n = 8192: one wave, and the longest block would set the time
        (256, 64),  # n = 16384: two waves balance the short blocks against the long ones
        (64, 32),
    ],
)
def test_causal_grids_take_tall_blocks_only_with_two_waves(blocks_at_64_rows, expected):
    assert mod.block_rows("float32", blocks_at_64_rows, 132, causal=True) == expected


@pytest.mark.parametrize(
    "dtype, d, n_q, n_k, architecture, expected",
    [
        ("float32", 128, 1024, 1024, (9, 0), True),  # d = 128: the tensor cores at every n
        ("float32", 100, 16, 64, (9, 0), True),  # d in (64, 128]: the width-128 kernel
        ("float32", 64, 8192, 8192, (9, 0), False),  # the thread-tiled kernel leads torch here
        ("float32", 64, 16384, 16384, (9, 0), True),
        ("float32", 64, 2048, 16384, (9, 0), True),  # by keys: 16384 of them
        ("float32", 32, 16384, 16384, (9, 0), False),  # d = 32 stays on the CUDA cores
        ("float32", 128, 4096, 4096, (8, 0), True),  # unmeasured sm_80: planned as sm_90
        ("float32", 128, 4096, 4096, (7, 5), False),  # no TF32 tensor cores before sm_80
        ("float64", 128, 4096, 4096, (9, 0), False),
        ("float32", 200, 4096, 4096, (9, 0), False),  # d > 128: the row kernel, in chunks
        ("float32", 128, 1, 8192, (9, 0), False),  # decode: 15 of a warp's 16 rows idle
    ],
)
def test_the_tuning_table_sends_d128_and_long_d64_to_the_tensor_cores(
    dtype, d, n_q, n_k, architecture, expected
):
    tuning = mod.launch_tuning(architecture)
    assert mod.uses_tensor_cores(dtype, d, n_q, n_k, architecture, tuning) is expected


def test_an_architecture_without_tensor_core_entries_keeps_the_cuda_cores():
    none = replace(mod.LAUNCH_TUNING[(9, 0)], tensor_cores=())
    assert not mod.uses_tensor_cores("float32", 128, 4096, 4096, (9, 0), none)


@pytest.mark.parametrize("width", mod.MMA_WIDTHS)
def test_tensor_core_tiles_fit_twice_on_a_multiprocessor(width):
    cfg = mod.mma_config(width)
    assert cfg.rows == 64 and cfg.threads == 128 and cfg.keys % 8 == 0
    assert cfg.shared_bytes <= mod.STATIC_SHARED_LIMIT
    assert cfg.min_blocks * cfg.shared_bytes <= 228 * 1024
    assert (cfg.keys * cfg.width) % cfg.threads == 0 and cfg.threads % cfg.width == 0
    assert cfg.stride % 32 == 4  # B fragments: 8 keys x 4 features on 32 distinct banks


def test_tensor_core_configs_are_float32_of_their_widths():
    with pytest.raises(ValueError, match="float32 of widths"):
        mod.MmaConfig("float64", 64, 64)
    with pytest.raises(ValueError, match="float32 of widths"):
        mod.MmaConfig("float32", 16, 64)
    with pytest.raises(ValueError, match="whole 8-key fragments"):
        mod.MmaConfig("float32", 64, 12)
    with pytest.raises(ValueError, match="passes 1 or 3"):
        mod.MmaConfig("float32", 64, 64, passes=2)


@needs_numba_cuda
@pytest.mark.parametrize(
    "d_k, d_v", [(1, 1), (7, 7), (16, 16), (17, 3), (64, 64), (128, 128), (200, 200), (5, 300)]
)
def test_every_launched_variant_is_a_ptx_target(d_k, d_v):
    compiled = {cfg for cfg, *_ in mod.ptx_targets()}
    assert "merge" in compiled
    for dtype, rows in ROWS:
        cfg = mod.kernel_config(dtype, mod.width_for(d_k, d_v), rows)
        assert cfg in compiled
        if isinstance(cfg, mod.TileConfig):  # the row kernel's grouped-query variant too
            assert replace(cfg, grouped=True) in compiled
    if max(d_k, d_v) <= max(mod.MMA_WIDTHS):
        assert mod.mma_config(mod.width_for(max(d_k, d_v, 32), 0)) in compiled


# --- numba-cuda and PTX ---------------------------------------------------------------------


@needs_numba_cuda
def test_numba_cuda_is_the_nvidia_package():
    from numba import cuda

    assert cuda.implementation == "NVIDIA"
    assert "numba_cuda" in Path(cuda.__file__).parts


def _ptxas() -> str | None:
    """ptxas of the numba-cuda cu12 extra's nvcc wheel, or one on PATH."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    except ModuleNotFoundError:  # no nvidia namespace at all: numba-cuda without the extra
        spec = None
    for folder in spec.submodule_search_locations if spec else []:
        candidate = Path(folder) / "bin" / "ptxas"
        if candidate.exists():
            return str(candidate)
    return shutil.which("ptxas")


# The PTX compiles are NVVM's, one kernel at a time: 60-150 s for all of them on one core.
PTX_PROCESSES = 2


@pytest.fixture(scope="module")
def compiled_ptx(tmp_path_factory):
    """Every kernel prepare() may launch, compiled once to sm_90 PTX: a row per kernel, the
    kernels shared out among PTX_PROCESSES processes."""
    if not HAVE_NUMBA_CUDA:
        pytest.skip("numba-cuda is not installed (pip install 'attnbench[cuda]')")
    folder = tmp_path_factory.mktemp("ptx")
    with ThreadPoolExecutor(PTX_PROCESSES) as pool:
        parts = pool.map(lambda part: _compile_ptx(folder, part), range(PTX_PROCESSES))
        return [row for rows in parts for row in rows]


def _compile_ptx(folder: Path, part: int) -> list[dict]:
    """Kernels part, part + PTX_PROCESSES, ... of ptx_targets(), in a process of their own."""
    out = _run_python(
        f"""
        import json, re
        from numba import cuda
        from impls import numba_cuda as mod
        assert not mod.is_simulated()
        rows = []
        for index, (cfg, fn, sig, options) in enumerate(mod.ptx_targets()):
            if index % {PTX_PROCESSES} != {part}:
                continue
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0), **options)
            path = {str(folder)!r} + f"/kernel{{index}}.ptx"
            open(path, "w").write(ptx)
            mma = isinstance(cfg, mod.MmaConfig)
            rows.append({{
                "kernel": cfg if cfg == "merge"
                else [cfg.dtype, cfg.width, cfg.rows, getattr(cfg, "grouped", None)]
                + ([cfg.precision] if mma else []),
                "thread_tiled": isinstance(cfg, mod.ThreadTileConfig),
                "tensor_cores": mma,
                "expected_mma": mma and cfg.passes * 2 * (cfg.width // 8) * (cfg.keys // 8),
                "min_blocks": getattr(cfg, "min_blocks", 1),
                "mma": len(re.findall(
                    r"mma\\.sync\\.aligned\\.m16n8k8\\.row\\.col\\.f32\\.tf32\\.tf32\\.f32", ptx
                )),
                "cvt_tf32": len(re.findall(r"cvt\\.rna\\.tf32\\.f32", ptx)),
                "threads": getattr(cfg, "threads", mod.MERGE_THREADS),
                "path": path,
                "sm_90": bool(re.search(r"^\\.target sm_90\\b", ptx, re.M)),
                "entry": ".entry" in ptx,
                "f64": len(re.findall(r"\\.f64\\b", ptx)),
                "vector_loads": len(re.findall(r"ld\\.shared\\.v[24]\\.f", ptx)),
            }})
        print(json.dumps(rows))
        """
    )
    return json.loads(out.strip().splitlines()[-1])


MMA_KERNELS = [str(["float32", w, 64, None, p]) for w in mod.MMA_WIDTHS for p in ("3xTF32", "TF32")]


def test_ptx_for_sm90_for_every_kernel_variant(compiled_ptx):
    kernels = [r["kernel"] for r in compiled_ptx]
    assert sorted(map(str, kernels)) == sorted(
        [
            "merge",
            *(
                str([d, w, h, g])
                for d, h in ROWS
                for w in mod.WIDTHS
                for cfg in [mod.kernel_config(d, w, h)]
                for g in ((False, True) if isinstance(cfg, mod.TileConfig) else (None,))
            ),
            *MMA_KERNELS,
        ]
    )
    for r in compiled_ptx:
        assert r["sm_90"] and r["entry"], r
        # The merge reads each value once, and the tensor-core kernel's fragments are one float
        # per lane and register: nothing to vectorise.
        if r["kernel"] != "merge" and not r["tensor_cores"]:
            assert r["vector_loads"] > 0, f"shared loads not vectorised: {r}"
        if r["kernel"] == "merge" or r["kernel"][0] == "float32":
            assert r["f64"] == 0, f"float64 arithmetic in a float32 kernel: {r}"


def test_tensor_core_kernels_issue_mma_and_only_they_do(compiled_ptx):
    """The PTX of each tensor-core kernel holds every mma.sync m16n8k8 TF32 of one K/V tile,
    unrolled: 3 (3xTF32) or 1 (TF32) per 8 x 8 x 8 step of Q K^T and of P V; its operands are
    rounded by cvt.rna.tf32. No other kernel touches the tensor cores."""
    for r in compiled_ptx:
        if r["tensor_cores"]:
            assert r["mma"] == r["expected_mma"] > 0, r
            assert r["cvt_tf32"] > 0, r
        else:
            assert r["mma"] == 0 and r["cvt_tf32"] == 0, r
    assert sum(r["tensor_cores"] for r in compiled_ptx) == len(MMA_KERNELS)


def test_kernels_fit_their_registers_without_spilling(compiled_ptx):
    """ptxas: no spills or stack in any launched kernel, and thread-tiled blocks small enough
    that BLOCKS_PER_MULTIPROCESSOR of them share an SM's 65536 registers (key_splits counts
    on it)."""
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("no ptxas (it comes with numba-cuda's cu12 extra)")
    for r in compiled_ptx:
        report = subprocess.run(
            [ptxas, "-arch=sm_90", "-v", r["path"], "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        registers = int(re.search(r"Used (\d+) registers", report).group(1))
        assert "0 bytes spill stores" in report and "0 bytes stack frame" in report, report
        if r["thread_tiled"]:
            per_block = registers * r["threads"]
            assert per_block * mod.BLOCKS_PER_MULTIPROCESSOR <= 65536, (r["kernel"], registers)
        if r["tensor_cores"]:  # the blocks key_splits counts on fit at once
            assert registers * r["threads"] * r["min_blocks"] <= 65536, (r["kernel"], registers)


@needs_numba_cuda
def test_reason_without_gpu_or_simulator():
    out = _run_python(
        """
        from numba import cuda
        from impls import numba_cuda as mod
        print(repr((cuda.is_available(), mod.unavailable_reason())))
        """,
        timeout=120,
    )
    available, reason = eval(out.strip().splitlines()[-1])
    if available:
        assert reason is None
    else:
        assert reason == "no CUDA GPU; set NUMBA_ENABLE_CUDASIM=1 to simulate"


def test_reason_without_numba_cuda(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "numba_cuda" else real(name, *a),
    )
    assert mod.unavailable_reason() == "numba-cuda is not installed (pip install 'attnbench[cuda]')"


# --- the kernel (simulator without a GPU) ---------------------------------------------------

CASES = [
    # lead, n_q, n_k, d_k, d_v, causal, dtype
    ((1,), 1, 1, 1, 1, False, "float32"),
    ((1,), 9, 9, 1, 1, True, "float32"),
    ((1,), 13, 13, 7, 7, True, "float32"),
    ((1,), 33, 65, 32, 32, False, "float32"),  # 32 rows + 1; key tiles of 32 or 64, + 1
    ((1,), 31, 63, 64, 64, True, "float32"),  # one short of both tiles
    ((1,), 6, 33, 128, 128, False, "float32"),  # key tiles of 16 at width 128: 2 x 16 + 1
    ((1,), 40, 20, 16, 16, True, "float32"),  # causal, n_q > n_k: late rows see every key
    ((1,), 20, 70, 8, 8, True, "float32"),  # causal, n_q < n_k: later keys never seen
    ((1,), 5, 9, 5, 9, True, "float32"),  # d_k != d_v
    ((1,), 3, 11, 130, 3, False, "float32"),  # d_k in two chunks of 128
    ((1,), 4, 6, 3, 70, True, "float32"),  # d_v over two blocks of 64 columns
    ((2, 2), 9, 9, 4, 4, True, "float32"),  # leading dims flattened to the batch
    ((2,), 70, 70, 16, 16, True, "float32"),  # causal: reversed row tiles, within each batch
    ((1,), 40, 40, 130, 130, True, "float32"),  # causal, d in two chunks (no prefetch)
    ((1,), 13, 13, 7, 7, True, "float64"),
    ((1,), 33, 33, 64, 64, False, "float64"),  # key tile of 32 at width 64: 32 + 1
    ((1,), 3, 10, 128, 128, True, "float64"),  # key tile of 8 at width 128: 8 + 2
]


@pytest.mark.parametrize("lead, n_q, n_k, d_k, d_v, causal, dtype", CASES)
def test_matches_float64_reference(impl, lead, n_q, n_k, d_k, d_v, causal, dtype):
    q, k, v = _inputs(lead, n_q, n_k, d_k, d_v, dtype, seed=n_q + n_k + d_k)
    out = impl.attention(q, k, v, causal=causal)
    assert out.shape == (*lead, n_q, d_v) and out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, reference(q, k, v, causal), **TOL[dtype])


@pytest.mark.parametrize(
    "batch, n, d, dtype, causal, rows, splits",
    [
        (1, 8192, 64, "float32", False, 64, 2),  # 128 tiles of 64 rows, 2 blocks per SM
        (1, 4096, 64, "float32", False, 64, 4),
        (1, 2048, 64, "float32", False, 32, 1),  # 1 GFLOP: too short for the merge's launch
        (1, 8192, 64, "float32", True, 64, 4),  # causal: twice the blocks of the slots
        (2, 8192, 64, "float32", True, 64, 2),
        (1, 8192, 128, "float32", False, 64, 1),  # row per thread: 128 x 2 column blocks
        (1, 2048, 128, "float32", False, 32, 1),  # 32 x 2 tall blocks: half the GPU
        (1, 8192, 64, "float64", False, 32, 1),
    ],
)
def test_prepare_picks_the_tiles_and_splits_for_the_gpu(
    impl, monkeypatch, batch, n, d, dtype, causal, rows, splits
):
    """The CUDA-core plan: on a GPU without TF32 tensor cores (sm_75), or in the simulator."""
    monkeypatch.setattr(mod, "_multiprocessors", lambda: 132)
    monkeypatch.setattr(mod, "_compute_capability", lambda: (7, 5))
    q = np.zeros((batch, n, d), dtype)
    args = AttentionArgs(q=q, k=q, v=q, causal=causal, scale=0.125, lead=(batch,))
    state = mod.prepare(args)
    assert state["config"] == mod.kernel_config(dtype, d, rows)
    assert state["splits"] == splits


@pytest.mark.parametrize("causal, splits", [(True, 1), (False, 8)])
def test_causal_work_is_the_keys_the_rows_can_see(impl, monkeypatch, causal, splits):
    """1024 queries of 8192 keys: causal rows see 1024 of them, too little work to split."""
    monkeypatch.setattr(mod, "_multiprocessors", lambda: 132)
    q = np.zeros((1, 1024, 64), "float32")
    k = np.zeros((1, 8192, 64), "float32")
    args = AttentionArgs(q=q, k=k, v=k, causal=causal, scale=0.125, lead=(1,))
    assert mod.prepare(args)["splits"] == splits


@pytest.mark.parametrize("rows", mod.ROW_CHOICES)
@pytest.mark.parametrize(
    "n_q, n_k, d, causal",
    [(33, 65, 32, False), (65, 70, 64, True), (70, 40, 16, True), (3, 17, 128, False)],
)
def test_both_block_heights_match_the_reference(impl, rows, n_q, n_k, d, causal):
    """Row tails of 32- and 64-row blocks, key tails of their prefetched tiles."""
    q, k, v = _inputs((1,), n_q, n_k, d, d, "float32", seed=rows + n_q)
    cfg = mod.kernel_config("float32", mod.width_for(d, d), rows)
    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=1 / np.sqrt(d), lead=(1,))
    state = mod.prepare(args, cfg)
    mod.run(state)
    assert state["config"] == cfg
    np.testing.assert_allclose(mod.fetch(state), reference(q, k, v, causal), **TOL["float32"])


@pytest.mark.parametrize(
    "batch, n_q, n_k, d_k, d_v, causal, rows, splits, unroll",
    [
        (2, 70, 70, 64, 64, True, 64, 3, 1),  # causal splits of unequal row tiles, each batch
        (1, 65, 70, 60, 60, False, 64, 2, 2),  # d short of the width; a row and a key tail
        (1, 40, 20, 17, 17, True, 64, 2, 2),  # one key tile: the second split is empty
        (1, 20, 170, 30, 30, False, 64, 4, 1),
        (1, 33, 90, 20, 50, True, 32, 2, 1),  # d_k != d_v; 32-row blocks (2 rows per thread)
        (1, 40, 70, 64, 64, False, 32, 3, 2),
    ],
)
def test_key_splits_merge_to_the_reference(
    impl, batch, n_q, n_k, d_k, d_v, causal, rows, splits, unroll
):
    q, k, v = _inputs((batch,), n_q, n_k, d_k, d_v, "float32", seed=splits + n_k)
    cfg = replace(mod.kernel_config("float32", mod.width_for(d_k, d_v), rows), unroll=unroll)
    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=1 / np.sqrt(d_k), lead=(batch,))
    state = mod.prepare(args, cfg, splits)
    mod.run(state)
    assert state["splits"] == splits
    partials = batch * splits * n_q * (d_v + 2) * 4  # outputs, maxima and sums of the splits
    out_bytes = batch * n_q * d_v * 4
    assert mod.device_memory_bytes(state) == q.nbytes + k.nbytes + v.nbytes + out_bytes + partials
    np.testing.assert_allclose(mod.fetch(state), reference(q, k, v, causal), **TOL["float32"])


@pytest.mark.parametrize(
    "kind, n_q, n_k, causal, splits",
    [("row", 9, 40, True, 1), ("thread", 1, 70, False, 2), ("thread", 12, 20, True, 2)],
)
def test_grouped_query_heads_read_their_shared_key_value_head(impl, kind, n_q, n_k, causal, splits):
    """Three query heads per key/value head: query entry b attends with k[b // 3], in both kernels
    (and across the thread-tiled kernel's key splits)."""
    rng = np.random.default_rng(n_k)
    q = rng.standard_normal((6, n_q, 16)).astype("float32")
    k, v = (rng.standard_normal((2, n_k, 16)).astype("float32") for _ in range(2))
    cfg = (
        mod.kernel_config("float32", 32, 32) if kind == "thread" else mod.tile_config("float32", 32)
    )
    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=0.25, lead=(6,))
    state = mod.prepare(args, cfg, splits if kind == "thread" else None)
    if kind == "row":  # the row kernel's variant that reads k[b // group]
        assert state["config"] == replace(cfg, grouped=True)
    assert mod.variant(state).endswith("grouped heads")
    mod.run(state)
    shared = [np.repeat(x, 3, axis=0) for x in (k, v)]
    expected = reference(q, *shared, causal, scale=0.25)
    np.testing.assert_allclose(mod.fetch(state), expected, **TOL["float32"])


def test_key_splits_merge_rows_whose_maxima_differ_by_far():
    """Scores x 1e3: each split's weights are exp2 of a distant maximum; the merge rescales."""
    q, k, v = _inputs((1,), 24, 100, 32, 32, "float32", seed=11, mult=1e3)
    args = AttentionArgs(q=q, k=k, v=v, causal=True, scale=1.0, lead=(1,))
    state = mod.prepare(args, mod.kernel_config("float32", 32, 32), splits=2)
    mod.run(state)
    out = mod.fetch(state)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(q, k, v, True, scale=1.0), **TOL["float32"])


def test_explicit_tiles_must_fit_the_shapes():
    q, k, v = _inputs((1,), 10, 40, 40, 40, "float32")
    args = AttentionArgs(q=q, k=k, v=v, causal=False, scale=0.2, lead=(1,))
    with pytest.raises(ValueError, match="d_k = 40 and d_v = 40 must fit the tile width 32"):
        mod.prepare(args, mod.kernel_config("float32", 32, 64))
    with pytest.raises(ValueError, match="splits must be at least 1, got 0"):
        mod.prepare(args, mod.kernel_config("float32", 64, 64), splits=0)
    with pytest.raises(ValueError, match="unroll must divide"):
        replace(mod.kernel_config("float32", 32, 64), unroll=3)
    with pytest.raises(ValueError, match="splits are for thread-tiled configs, got 2"):
        mod.launch_plan(args, mod.kernel_config("float32", 128, 32), splits=2)


@pytest.mark.parametrize("dtype, d", [("float32", 16), ("float32", 64), ("float64", 16)])
def test_large_scores_stay_finite_and_correct(impl, dtype, d):
    q, k, v = _inputs((1,), 21, 21, d, d, dtype, seed=7, mult=1e3)
    for causal in (False, True):
        out = impl.attention(q, k, v, causal=causal, scale=1.0)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, reference(q, k, v, causal, scale=1.0), **TOL[dtype])


@pytest.mark.parametrize("d, splits", [(8, None), (32, None), (32, 3)])  # both kernels
def test_fully_masked_key_tiles_are_never_read(impl, d, splits):
    """Rows 0..63 see keys 0..63 only: NaN in keys 64..69 (the second key tile) must not leak."""
    q, k, v = _inputs((1,), 64, 70, d, d, "float32", seed=3)
    expected = reference(q, k[:, :64], v[:, :64], causal=True)
    k[:, 64:] = np.nan
    v[:, 64:] = np.nan
    args = AttentionArgs(q=q, k=k, v=v, causal=True, scale=1 / np.sqrt(d), lead=(1,))
    state = mod.prepare(args, splits=splits)
    mod.run(state)
    np.testing.assert_allclose(mod.fetch(state), expected, **TOL["float32"])


def test_optional_hooks(impl):
    q, k, v = _inputs((1,), 5, 7, 4, 3, "float32")
    args = AttentionArgs(q=q, k=k, v=v, causal=False, scale=0.5, lead=(1,))
    state = mod.prepare(args)
    assert mod.device_memory_bytes(state) == q.nbytes + k.nbytes + v.nbytes + 5 * 3 * 4
    elapsed = mod.event_time_s(state)
    assert isinstance(elapsed, float) and elapsed > 0.0  # simulated: the launch's wall time
    out = mod.fetch(state)
    np.testing.assert_allclose(out, reference(q, k, v, scale=0.5), **TOL["float32"])
    assert mod.transfer_s(state) > 0.0  # the copies in prepare and in fetch, timed
    assert mod.is_simulated() == (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_run_computes_from_the_device_copies_prepare_made(impl, causal):
    """The timing rule on a GPU: prepare copies the inputs over; run does every step after that.
    New values written into the device copies after prepare give the new values' output."""
    q, k, v = _inputs((2,), 9, 13, 8, 8, "float32", seed=1)
    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=0.3, lead=(2,))
    state = mod.prepare(args)
    new = _inputs((2,), 9, 13, 8, 8, "float32", seed=2)
    for device_array, values in zip(state["arrays"][:3], new, strict=True):
        device_array.copy_to_device(values)
    mod.run(state)
    np.testing.assert_allclose(
        mod.fetch(state), reference(*new, causal, scale=0.3), **TOL["float32"]
    )


# --- the tensor-core kernel's planning (its numerics: tests/test_mma_fragments.py) -----------


def _args(batch, n, d, causal=False, kv_batch=None):
    q = np.zeros((batch, n, d), "float32")
    k = np.zeros((kv_batch or batch, n, d), "float32")
    return AttentionArgs(q=q, k=k, v=k, causal=causal, scale=0.1, lead=(batch,))


@pytest.mark.parametrize(
    "batch, n, d, causal, expected",
    [
        (1, 1024, 128, False, 1),  # 16 row tiles, 2 GFLOP: too little for the merge
        (1, 8192, 128, False, 2),  # 128 row tiles for 264 slots
        (1, 8192, 128, True, 4),
        (64, 8192, 128, False, 1),  # B = 4, H = 16: the row tiles fill the GPU
        (1, 16384, 64, False, 1),
    ],
)
def test_on_a_gpu_prepare_plans_the_tensor_cores_and_splits_their_keys(
    impl, monkeypatch, batch, n, d, causal, expected
):
    monkeypatch.setattr(mod, "is_simulated", lambda: False)
    monkeypatch.setattr(mod, "_multiprocessors", lambda: 132)
    monkeypatch.setattr(mod, "_compute_capability", lambda: (9, 0))
    cfg, splits = mod.launch_plan(_args(batch, n, d, causal))
    assert cfg == mod.mma_config(d) and splits == expected
    plan = {"config": cfg, "splits": splits, "grouped": False}
    assert mod.variant(plan).startswith("tensor cores, 3xTF32, 64x")
    grouped, _ = mod.launch_plan(_args(4, n, d, causal, kv_batch=2))
    assert grouped == mod.mma_config(d)  # the same kernel: b // group once per block
    monkeypatch.setattr(mod, "_compute_capability", lambda: (7, 5))
    assert not isinstance(mod.launch_plan(_args(batch, n, d, causal))[0], mod.MmaConfig)


def test_the_simulator_never_plans_the_tensor_cores(impl):
    """Its inline PTX and shuffles cannot run there: the CUDA-core kernels do, and an explicit
    tensor-core config is refused with the reason."""
    if not mod.is_simulated():
        pytest.skip("a GPU is here: the simulator's routing is for machines without one")
    cfg, _ = mod.launch_plan(_args(1, 16384, 128))
    assert isinstance(cfg, mod.TileConfig)
    assert mod.uses_tensor_cores("float32", 128, 16384, 16384, mod.MEASURED_ARCHITECTURE)
    with pytest.raises(ValueError, match="simulator cannot run the tensor-core kernel"):
        mod.launch_plan(_args(1, 64, 128), mod.mma_config(128))
    state = mod.prepare(_args(1, 20, 128))
    assert mod.variant(state) == "CUDA cores, row per 4 threads, 64 rows x 16 keys"


@pytest.mark.parametrize(
    "cfg, splits, grouped, expected",
    [
        (mod.mma_config(128), 1, False, "tensor cores, 3xTF32, 64x32 tiles"),
        (mod.mma_config(64, passes=1), 2, False, "tensor cores, TF32, 64x64 tiles, 2 key splits"),
        (
            mod.kernel_config("float32", 64, 64),
            4,
            True,
            "CUDA cores, thread-tiled, 64x32 tiles, 4 key splits, grouped heads",
        ),
    ],
)
def test_variant_names_the_kernel_that_ran(cfg, splits, grouped, expected):
    assert mod.variant({"config": cfg, "splits": splits, "grouped": grouped}) == expected


@pytest.mark.parametrize(
    "batch, kv_batch, n_q, n_k, d_k, d_v, causal, splits, passes",
    [
        (1, 1, 64, 64, 128, 128, False, 1, 3),
        (1, 1, 70, 90, 64, 64, True, 1, 3),  # row and key tails
        (2, 2, 130, 200, 128, 128, True, 1, 3),  # causal row tiles in reverse, per batch entry
        (1, 1, 33, 300, 32, 32, False, 3, 3),  # key splits and the merge
        (1, 1, 20, 70, 30, 50, True, 1, 3),  # d_k != d_v, short of the width
        (6, 2, 17, 45, 64, 64, True, 2, 3),  # grouped-query heads, with splits
        (1, 1, 64, 128, 128, 128, False, 1, 1),  # plain TF32: the model's error, not float32's
    ],
)
def test_tensor_core_kernel_on_the_gpu_matches_its_numpy_model(
    impl, batch, kv_batch, n_q, n_k, d_k, d_v, causal, splits, passes
):
    """On a GPU (sm_80+): the kernel agrees with the float64 reference, and with the NumPy model
    of its fragments (fragment_model) to within the float32 rounding the two order differently;
    a wrong fragment layout in fragments.py would break the second even where the first held."""
    _tensor_cores_or_skip()
    from impls.numba_cuda import fragment_model

    rng = np.random.default_rng(n_q + n_k)
    q = rng.standard_normal((batch, n_q, d_k)).astype("float32")
    k = rng.standard_normal((kv_batch, n_k, d_k)).astype("float32")
    v = rng.standard_normal((kv_batch, n_k, d_v)).astype("float32")
    scale = 1 / np.sqrt(d_k)
    width = max(mod.MMA_WIDTHS[0], mod.width_for(d_k, d_v))
    cfg = mod.mma_config(width, passes)
    args = AttentionArgs(q=q, k=k, v=v, causal=causal, scale=scale, lead=(batch,))
    state = mod.prepare(args, cfg, splits)
    mod.run(state)
    out = mod.fetch(state)
    assert mod.variant(state).startswith(f"tensor cores, {cfg.precision}")
    model = fragment_model.model_attention(q, k, v, causal, scale, cfg, splits)
    shared = [np.repeat(x, batch // kv_batch, axis=0) for x in (k, v)]
    expected = reference(q, *shared, causal, scale=scale)
    # TF32 rounds each weight: one ulp of difference in exp2 can move it by 2^-11
    model_tol = 1e-5 if passes == 3 else 1e-3
    np.testing.assert_allclose(out, model, rtol=model_tol, atol=model_tol)
    if passes == 3:
        np.testing.assert_allclose(out, expected, **TOL["float32"])
    else:
        np.testing.assert_allclose(out, expected, rtol=5e-3, atol=5e-3)


def _tensor_cores_or_skip():
    if mod.is_simulated() or mod._compute_capability() < mod.TENSOR_CORE_ARCHITECTURE:
        pytest.skip("needs a GPU with TF32 tensor cores (the simulator cannot run inline PTX)")


def test_one_mma_on_the_gpu_has_the_documented_fragment_layout(impl):
    """The hardware against fragments.py: one mma.sync of integer (TF32-exact) matrices, each
    lane's registers placed and read back by the layout maps, is exactly A B + C; float inputs
    agree with the NumPy model of one mma."""
    _tensor_cores_or_skip()
    from numba import cuda

    from impls.numba_cuda import fragments, ptx

    native = ptx.intrinsics()
    mma, tf32 = native.mma, native.tf32

    @cuda.jit
    def one_mma(a, b, c, d):
        i = cuda.threadIdx.x
        r = mma(
            tf32(a[i, 0]), tf32(a[i, 1]), tf32(a[i, 2]), tf32(a[i, 3]), tf32(b[i, 0]),
            tf32(b[i, 1]), c[i, 0], c[i, 1], c[i, 2], c[i, 3],
        )  # fmt: skip
        d[i, 0], d[i, 1], d[i, 2], d[i, 3] = r[0], r[1], r[2], r[3]

    rng = np.random.default_rng(0)
    f = fragments
    for exact in (True, False):
        if exact:
            a, b, c = (
                rng.integers(-512, 512, s).astype("float32") for s in ((16, 8), (8, 8), (16, 8))
            )
        else:
            a, b, c = (rng.standard_normal(s).astype("float32") for s in ((16, 8), (8, 8), (16, 8)))
        frags = (
            f.gather(a, f.a_row, f.a_col, 4),
            f.gather(b, f.b_row, f.b_col, 2),
            f.gather(c, f.c_row, f.c_col, 4),
        )
        d = np.zeros((32, 4), "float32")
        one_mma[1, 32](*frags, d)
        if exact:
            np.testing.assert_array_equal(f.scatter(d, f.c_row, f.c_col, (16, 8)), a @ b + c)
        else:
            np.testing.assert_allclose(d, f.warp_mma(*frags), rtol=1e-6, atol=1e-6)


def test_cvt_rna_tf32_on_the_gpu_is_the_models_rounding(impl):
    _tensor_cores_or_skip()
    from numba import cuda

    from impls.numba_cuda import fragments, ptx

    tf32 = ptx.intrinsics().tf32

    @cuda.jit
    def round_all(x, y):
        i = cuda.grid(1)
        if i < x.size:
            y[i] = tf32(x[i])

    rng = np.random.default_rng(1)
    x = rng.standard_normal(1 << 16).astype("float32") * np.float32(1e3)
    ties = np.float32(1.0) + np.arange(1, 64, dtype="float32") * np.float32(2.0**-11)
    x = np.concatenate([x, ties, -ties]).astype("float32")
    y = np.zeros_like(x)
    round_all[-(-x.size // 256), 256](x, y)
    np.testing.assert_array_equal(y.view("uint32"), fragments.tf32(x).view("uint32"))


@needs_numba_cuda
def test_the_mma_intrinsic_passes_its_operands_in_order():
    """ptx.intrinsics().mma wired as documented, checked in the PTX of one call: A's registers
    are the TF32 roundings of a[i, 0..3] (loads at +0, +4, +8, +12 bytes), B's of b[i, 0..1], C
    the loads of c[i, 0..3], and D goes to d[i, 0..3] in that order."""
    ptx = _run_python(
        """
        from numba import cuda, types
        from impls.numba_cuda import ptx
        mma, tf32 = ptx.intrinsics().mma, ptx.intrinsics().tf32
        def one_mma(a, b, c, d):
            i = cuda.threadIdx.x
            r = mma(tf32(a[i, 0]), tf32(a[i, 1]), tf32(a[i, 2]), tf32(a[i, 3]), tf32(b[i, 0]),
                    tf32(b[i, 1]), c[i, 0], c[i, 1], c[i, 2], c[i, 3])
            d[i, 0], d[i, 1], d[i, 2], d[i, 3] = r[0], r[1], r[2], r[3]
        arr = types.float32[:, ::1]
        print(cuda.compile_ptx(one_mma, types.void(arr, arr, arr, arr), cc=(9, 0))[0])
        """,
        timeout=120,
    )
    loads = dict(re.findall(r"ld\.global\.f32\s+(%f\d+), \[(%rd\d+(?:\+\d+)?)\]", ptx))
    rounded = dict(re.findall(r"cvt\.rna\.tf32\.f32\s+(%r\d+), (%f\d+);", ptx))
    stores = re.findall(r"st\.global\.f32\s+\[(%rd\d+(?:\+\d+)?)\], (%f\d+);", ptx)
    (line,) = re.findall(r"mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32 (.*);", ptx)
    d, a, b, c = (group.split(", ") for group in re.findall(r"\{([^}]*)\}", line))

    def offsets(addresses):
        bases = {x.split("+")[0] for x in addresses}
        assert len(bases) == 1, addresses  # one row of one array
        return [int(x.split("+")[1]) if "+" in x else 0 for x in addresses]

    assert offsets([loads[rounded[r]] for r in a]) == [0, 4, 8, 12]
    assert offsets([loads[rounded[r]] for r in b]) == [0, 4]
    assert offsets([loads[f] for f in c]) == [0, 4, 8, 12]
    stored = dict((f, at) for at, f in stores)
    assert offsets([stored[f] for f in d]) == [0, 4, 8, 12]
    bases = [loads[rounded[a[0]]], loads[rounded[b[0]]], loads[c[0]], stored[d[0]]]
    assert len({x.split("+")[0] for x in bases}) == 4  # a, b, c and d: four different arrays
