"""Size and CPU speed of an encoder: parameters, disk size, latency at batch 1, throughput at batch 32."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from nlprec.core.threads import limited_threads
from transformers import AutoModel

from .models import check_checkpoint, count_parameters

SEQ_LEN = 128
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 32


def disk_mb(model_dir: str | Path) -> float:
    """Size of the weight files (safetensors / bin) in MB."""
    files = [p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin")]
    return sum(p.stat().st_size for p in files) / 1e6


@torch.inference_mode()
def _median_seconds(model, batch_size: int, repeats: int, vocab_size: int) -> float:
    ids = torch.randint(
        1000,
        min(vocab_size, 20_000),
        (batch_size, SEQ_LEN),
        generator=torch.Generator().manual_seed(0),
    )
    mask = torch.ones_like(ids)
    model(input_ids=ids, attention_mask=mask)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_cpu(
    model_dir: str, threads: int = 2, latency_repeats: int = 20, throughput_repeats: int = 3
) -> dict:
    """{"params", "disk_mb", "cpu_ms" (batch 1, 128 tokens), "cpu_seq_per_s" (batch 32)} for the encoder."""
    check_checkpoint(model_dir)
    with limited_threads(threads):
        model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        vocab = model.config.vocab_size
        latency = _median_seconds(model, LATENCY_BATCH, latency_repeats, vocab)
        batch_time = _median_seconds(model, THROUGHPUT_BATCH, throughput_repeats, vocab)
    return {
        "params": count_parameters(model),
        "disk_mb": disk_mb(model_dir),
        "cpu_ms": latency * 1000,
        "cpu_seq_per_s": THROUGHPUT_BATCH / batch_time,
    }
