"""The torch peers: each says why it cannot run, and the GPU one reports what the harness reads."""

import importlib.util

import numpy as np
import pytest
from conftest import available_or_skip

from impls import torch_sdpa, torch_sdpa_cuda
from impls._inputs import AttentionArgs

MISSING_TORCH = "torch is not installed (pip install 'attnbench[peers]')"


@pytest.mark.parametrize("module", [torch_sdpa, torch_sdpa_cuda], ids=lambda m: m.__name__)
def test_without_torch_the_reason_names_the_extra(module, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert module.unavailable_reason() == MISSING_TORCH


def test_cuda_peer_without_a_gpu_names_the_torch_build():
    torch = pytest.importorskip("torch", reason="torch is not installed (the peers extra)")
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here")
    reason = torch_sdpa_cuda.unavailable_reason()
    assert reason.startswith(f"torch {torch.__version__} (") and reason.endswith("sees no CUDA GPU")


def test_cuda_peer_hooks_on_a_gpu():
    available_or_skip("torch_sdpa_cuda")
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 300, 64)).astype(np.float32) for _ in range(3))
    args = AttentionArgs(q=q, k=k, v=v, causal=True, scale=0.125, lead=(2,))
    state = torch_sdpa_cuda.prepare(args)
    assert torch_sdpa_cuda.event_time_s(state) > 0.0
    out = torch_sdpa_cuda.fetch(state)
    assert out.shape == (2, 300, 64) and out.dtype == np.float32
    assert torch_sdpa_cuda.transfer_s(state) > 0.0
    assert torch_sdpa_cuda.device_memory_bytes(state) >= 4 * q.nbytes  # q, k, v and the output
