"""Choice of the chunked-scan implementation: a fused GPU kernel where one is installed,
else the plain-PyTorch reference in ssd.py.

The SSD map of ssd.py is what flash-linear-attention calls *simple GLA* (linear attention with a
head-wise scalar forget gate): q = C, k = B, v = x, g = ℓ, no 1/√n scale. Its Triton kernel
``chunk_simple_gla`` computes it on CUDA; tests/mohawk/test_kernels.py and
benchmarks/mohawk_gpu.py check it against ``ssd_chunked_scan``. mamba-ssm's
``mamba_chunk_scan_combined`` is the other known kernel; it is used when fla is absent.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch
from nlprec.mohawk.ssd import ssd_chunked_scan

BACKENDS = ("auto", "reference", "fla", "mamba_ssm")


@cache
def available_backends() -> tuple[str, ...]:
    """Kernel libraries importable here (checked once, without importing them)."""
    found = ["reference"]
    for name, module in (("fla", "fla"), ("mamba_ssm", "mamba_ssm")):
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return tuple(found)


def _fla_scan(x, log_decay, B, C, initial_state):
    from fla.ops.simple_gla import chunk_simple_gla

    # fla keeps the state as (b, h, p, n) with state_v_first=True, like ssd.py.
    return chunk_simple_gla(
        q=C.contiguous(),
        k=B.contiguous(),
        v=x.contiguous(),
        g=log_decay.float().contiguous(),
        scale=1.0,
        initial_state=initial_state,
        output_final_state=True,
        state_v_first=True,
    )


def _mamba_ssm_scan(x, log_decay, B, C, chunk_size, initial_state):
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    # mamba-ssm discretises with a step dt: decay exp(dt·A), input dt·x. Take A = -1, dt = -ℓ
    # and feed x / dt, so that the kernel's map is exactly ours.
    dt = (-log_decay).float().clamp_min(1e-6)  # (b, l, h)
    A = -torch.ones(x.size(2), device=x.device, dtype=torch.float32)
    y, final = mamba_chunk_scan_combined(
        x / dt[..., None].to(x.dtype),
        dt,
        A,
        B,
        C,
        chunk_size=chunk_size,
        initial_states=initial_state,
        return_final_states=True,
    )
    return y, final


def chunked_scan(
    x: torch.Tensor,
    log_decay: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD over a sequence. Shapes as in ``ssd.ssd_chunked_scan``; returns (y, final state).

    backend "auto" takes a fused kernel only for CUDA tensors and only where one is installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        backend = "reference"
        if x.is_cuda:
            backend = next((b for b in ("fla", "mamba_ssm") if b in available_backends()), backend)
    if backend == "fla":
        return _fla_scan(x, log_decay, B, C, initial_state)
    if backend == "mamba_ssm":
        return _mamba_ssm_scan(x, log_decay, B, C, chunk_size, initial_state)
    return ssd_chunked_scan(x, log_decay, B, C, chunk_size, initial_state)
