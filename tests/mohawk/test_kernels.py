"""Scan backends: the choice of kernel, clear errors, and (where CUDA and fla are present, as on
the device machine) agreement of the fused kernels with the reference chunked scan."""

import pytest
import torch
from nlprec.mohawk import kernels

FUSED_HERE = [b for b in ("fla", "fla_gla") if b in kernels.available_backends()]


def test_auto_on_cpu_is_the_reference():
    x = torch.zeros(1, 4, 2, 3)
    assert kernels.resolve_backend("auto", x, needs_grad=True) == "reference"
    assert kernels.resolve_backend("reference", x, needs_grad=False) == "reference"


def test_bad_backends_are_clear_errors():
    x = torch.zeros(1, 4, 2, 3)
    with pytest.raises(ValueError, match="unknown scan backend 'triton'"):
        kernels.resolve_backend("triton", x, needs_grad=False)
    for backend in ("fla", "fla_gla", "mamba_ssm"):
        message = "needs CUDA" if backend in kernels.available_backends() else "not installed"
        with pytest.raises(ValueError, match=message):
            kernels.chunked_scan(x, x[..., 0], x, x, backend=backend)


def test_reference_compares_to_itself():
    inputs = kernels.random_scan_inputs(2, 37, 3, 5, 4, "cpu", torch.float64)
    diffs = kernels.compare_with_reference("reference", inputs, chunk_size=8)
    assert set(diffs) == {"y", "state", "dx", "dlog_decay", "dB", "dC"}
    assert max(diffs.values()) == 0.0


@pytest.mark.skipif(not torch.cuda.is_available() or not FUSED_HERE, reason="needs CUDA and fla")
@pytest.mark.parametrize("backend", FUSED_HERE)
def test_fused_kernel_agrees_with_the_reference(backend):
    inputs = kernels.random_scan_inputs(2, 200, 4, 64, 64, "cuda", torch.float32)
    trains = backend == "fla_gla" or kernels.fla_simple_gla_trains()
    diffs = kernels.compare_with_reference(backend, inputs, grads=trains)
    assert max(diffs.values()) < 1e-3, diffs
