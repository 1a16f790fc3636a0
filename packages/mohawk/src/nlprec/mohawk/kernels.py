"""Choice of the chunked-scan implementation: a fused GPU kernel where one is installed,
else the plain-PyTorch reference in ssd.py.

The SSD map of ssd.py is what flash-linear-attention calls *simple GLA* (linear attention with a
head-wise scalar forget gate): q = C, k = B, v = x, g = ℓ, no 1/√n scale. Two fla kernels compute it:

* ``fla``: ``chunk_simple_gla`` (the scalar gate as such). fla 0.6 refuses its backward on Hopper
  GPUs with Triton < 3.7.1 (fla issue #640, a miscompile), so there it serves inference only.
* ``fla_gla``: ``chunk_gla``, whose gate is per key channel; the scalar ℓ repeated over the n
  channels gives the same map, and its backward runs through other kernels. More work per token
  than simple GLA; its agreement on a GPU is not measured yet, so "auto" never picks it.

mamba-ssm's ``mamba_chunk_scan_combined`` is the third (used when fla is absent).
``compare_with_reference`` checks a backend against ``ssd_chunked_scan`` (outputs, final states,
gradients); tests/mohawk/test_kernels.py runs it wherever
a kernel library and CUDA are present.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch
from nlprec.mohawk.ssd import ssd_chunked_scan

BACKENDS = ("auto", "reference", "fla", "fla_gla", "mamba_ssm")
FUSED = ("fla", "fla_gla", "mamba_ssm")


@cache
def available_backends() -> tuple[str, ...]:
    """Kernel libraries importable here (checked once, without importing them)."""
    found = ["reference"]
    if importlib.util.find_spec("fla") is not None:
        found += ["fla", "fla_gla"]
    if importlib.util.find_spec("mamba_ssm") is not None:
        found.append("mamba_ssm")
    return tuple(found)


@cache
def fla_simple_gla_trains() -> bool:
    """False where fla refuses chunk_simple_gla's backward (Hopper with Triton < 3.7.1, #640)."""
    import triton

    if not torch.cuda.is_available():
        return False
    major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    patch = int("".join(ch for ch in triton.__version__.split(".")[2] if ch.isdigit()) or 0)
    hopper = torch.cuda.get_device_capability()[0] == 9
    return not (hopper and (3, 4, 0) <= (major, minor, patch) < (3, 7, 1))


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


def _fla_gla_scan(x, log_decay, B, C, initial_state):
    from fla.ops.gla import chunk_gla

    # One gate value per head, repeated over the key (state) channels: the same map as above.
    gate = log_decay.float()[..., None].expand(*B.shape).contiguous()
    return chunk_gla(
        q=C.contiguous(),
        k=B.contiguous(),
        v=x.contiguous(),
        g=gate,
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


def resolve_backend(backend: str, x: torch.Tensor, needs_grad: bool) -> str:
    """The concrete backend for ``backend`` on tensors like ``x``; clear errors for bad choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; expected one of {BACKENDS}")
    if backend in FUSED:
        if backend not in available_backends():
            raise ValueError(
                f"scan backend {backend!r} is not installed here; available: {available_backends()}"
            )
        if not x.is_cuda:
            raise ValueError(f"scan backend {backend!r} needs CUDA tensors, got {x.device}")
        return backend
    if backend == "reference" or not x.is_cuda:
        return "reference"
    found = available_backends()
    if "fla" in found and (not needs_grad or fla_simple_gla_trains()):
        return "fla"
    # fla_gla trains where simple GLA's backward is refused, but its agreement with the
    # reference has not been measured on a GPU yet: only on request, never by "auto".
    return "mamba_ssm" if "mamba_ssm" in found else "reference"


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

    backend "auto" takes a fused kernel only for CUDA tensors and only where one is installed:
    fla's simple-GLA kernel (for training only where fla runs its backward), then mamba-ssm,
    else the reference. "fla_gla" is used only when asked for.
    """
    backend = resolve_backend(backend, x, x.requires_grad or B.requires_grad or C.requires_grad)
    if backend in ("fla", "fla_gla"):
        scan = _fla_scan if backend == "fla" else _fla_gla_scan
        # fla keeps states in float32; ours follow the inputs' dtype (as the reference's do)
        state = None if initial_state is None else initial_state.float()
        y, final = scan(x, log_decay, B, C, state)
        return y, final.to(x.dtype)
    if backend == "mamba_ssm":
        return _mamba_ssm_scan(x, log_decay, B, C, chunk_size, initial_state)
    return ssd_chunked_scan(x, log_decay, B, C, chunk_size, initial_state)


def random_scan_inputs(
    batch: int, length: int, heads: int, head_dim: int, state_size: int, device, dtype, seed=0
) -> list[torch.Tensor]:
    """x, ℓ, B, C of the shapes ``chunked_scan`` takes, scaled as a trained mixer's are."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=g)

    x = randn(batch, length, heads, head_dim)
    log_decay = -torch.nn.functional.softplus(randn(batch, length, heads) - 2.0)
    B = randn(batch, length, heads, state_size) / state_size**0.5
    C = randn(batch, length, heads, state_size) / state_size**0.5
    return [t.to(dtype) for t in (x, log_decay, B, C)]


def compare_with_reference(
    backend: str, inputs: list[torch.Tensor], chunk_size: int = 64, grads: bool = True
) -> dict[str, float]:
    """Largest differences between ``backend`` and ``ssd_chunked_scan`` on ``inputs`` (x, ℓ, B, C),
    each relative to the reference's largest magnitude: outputs, final state (a non-zero initial
    state is passed in), and, with ``grads``, the gradients of a fixed random projection of y."""
    x = inputs[0]
    initial = torch.randn(
        x.size(0), x.size(2), x.size(3), inputs[2].size(-1), device=x.device, dtype=x.dtype
    )
    leaves = [t.detach().clone().requires_grad_(grads) for t in inputs]
    probe = torch.randn_like(x)
    y_ref, s_ref = ssd_chunked_scan(*leaves, chunk_size, initial_state=initial)
    y, s = chunked_scan(*leaves, chunk_size, initial_state=initial, backend=backend)

    def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
        return ((a.float() - ref.float()).abs().max() / ref.float().abs().max()).item()

    result = {"y": rel(y, y_ref), "state": rel(s, s_ref)}
    if grads:
        ref_grads = torch.autograd.grad((y_ref * probe).sum(), leaves)
        got_grads = torch.autograd.grad((y * probe).sum(), leaves)
        for name, a, r in zip(("dx", "dlog_decay", "dB", "dC"), got_grads, ref_grads, strict=True):
            result[name] = rel(a, r)
    return result
