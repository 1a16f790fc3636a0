"""Peak memory and time of one forward + backward step, per attention variant and length.

Variants: ``full_eager`` (the L x L score matrix materialised), ``full_sdpa`` (PyTorch fused
attention), ``local`` (SDPA with a banded mask: |i - j| < 256, [CLS] global), ``longformer``
(window 512, [CLS] global) and ``bigbird`` (block 64, 3 random blocks).
A fresh model is built for every (variant, length): a `BigBirdModel` that once sees a short
sequence switches to full attention for good, and the encoder wrapper pins it back anyway.

GPU: peak = ``torch.cuda.max_memory_allocated`` (weights included), bf16 autocast.
CPU: peak = growth of the process's maximum resident set, measured in a fresh child process per
configuration (``python -m nlprec.clinical_longdoc.costs``), fp32.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.longify import load_source_encoder, longify
from nlprec.clinical_longdoc.training import autocast_for
from nlprec.core.threads import set_threads

COST_VARIANTS = ("full_eager", "full_sdpa", "local", "longformer", "bigbird")
LENGTHS = (512, 1024, 2048, 4096)


def build_for_cost(variant: str, length: int, source=None) -> LongEncoder:
    encoder, _ = load_source_encoder(source)
    attention = "full" if variant.startswith("full") else variant
    implementation = "eager" if variant == "full_eager" else "sdpa"
    max_length = max(length, 512)
    return LongEncoder(
        longify(
            encoder, max_length=max_length, attention=attention, attn_implementation=implementation
        )
    )


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def step_cost(
    variant: str,
    length: int,
    batch_size: int = 2,
    device: str = "cpu",
    repeats: int = 3,
    source=None,
) -> dict:
    """Median seconds and peak bytes of forward + backward on random tokens of ``length``."""
    if variant not in COST_VARIANTS:
        raise ValueError(f"variant must be one of {COST_VARIANTS}; got {variant!r}")
    encoder = build_for_cost(variant, length, source).to(device).train()
    vocab = encoder.model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, vocab, (batch_size, length), generator=generator).to(
        device
    )  # (B, L)
    attention_mask = torch.ones_like(input_ids)

    def one_step() -> None:
        with autocast_for(device):
            hidden = encoder(input_ids, attention_mask)  # (B, L, H)
        hidden.float().square().mean().backward()
        encoder.zero_grad(set_to_none=True)

    rss_before = _max_rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    one_step()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        one_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _max_rss_bytes() - rss_before
    return {
        "variant": variant,
        "length": length,
        "batch_size": batch_size,
        "device": device,
        "seconds": statistics.median(times),
        "peak_bytes": int(peak),
        "peak_gib": peak / 2**30,
    }


def main(argv: list[str] | None = None) -> None:
    """One configuration per process (CPU peak RSS is per process): prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=COST_VARIANTS, required=True)
    parser.add_argument("--length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = step_cost(args.variant, args.length, args.batch_size, "cpu", args.repeats, args.source)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
