"""Prefill and decode throughput and memory: teacher with a KV cache vs student with its state.

The teacher decodes through Hugging Face's stock path: SDPA attention and a ``DynamicCache``.
The student decodes through ``StudentLM.decode`` (constant-size state per sequence).

Decode cost does not depend on what the cache holds, only on its size, so decode at large batch
is timed from a synthetic cache (random keys/values of the given length for the teacher, a
random state for the student); prefill and decode memory at batch 1 use real prefills.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from nlprec.mohawk.mixer import MixerState
from nlprec.mohawk.student import StudentLM
from transformers import DynamicCache, PreTrainedModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Seconds per call of fn (after the caller's warmup)."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def teacher_cache(model: PreTrainedModel, batch: int, length: int) -> DynamicCache:
    """A DynamicCache holding ``length`` random keys/values per layer: (b, h, length, head_dim)."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = config.hidden_size // config.num_attention_heads
    param = next(model.parameters())
    cache = DynamicCache()
    for layer in range(config.num_hidden_layers):
        keys = torch.randn(batch, heads, length, head_dim, device=param.device, dtype=param.dtype)
        cache.update(keys, torch.randn_like(keys), layer)
    return cache


def student_states(model: StudentLM, batch: int) -> list[MixerState]:
    """Random states for every (SSD) layer of a pure student."""
    states = []
    for block in model.blocks:
        state = block.mixer.empty_state(batch, model.embed.weight)
        states.append(MixerState(torch.randn_like(state.conv), torch.randn_like(state.ssm)))
    return states


@torch.no_grad()
def decode_tokens_per_second(
    model, batch: int, length: int, steps: int, warmup: int = 2, is_teacher: bool = True
) -> float:
    """Tokens generated per second by ``batch`` sequences each ``length`` tokens deep."""
    device = next(model.parameters()).device
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)
    if is_teacher:
        cache = teacher_cache(model, batch, length)

        def step():
            model(token, past_key_values=cache, use_cache=True)

    else:
        states = student_states(model, batch)

        def step():
            nonlocal states
            _, states = model.decode(token, states)

    for _ in range(warmup):
        step()
    # the teacher's cache grows by warmup + steps tokens: negligible next to ``length``
    return batch / timed(step, device, steps)


@torch.no_grad()
def prefill_and_decode_memory(model, length: int, steps: int, is_teacher: bool) -> dict[str, float]:
    """Batch 1: prefill seconds, decode seconds per token and the decode's peak memory above
    what was allocated before the prefill (cache or state plus decode transients; bytes; CUDA
    only, else 0)."""
    device = next(model.parameters()).device
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    ids = torch.randint(0, 100, (1, length), device=device)
    token = ids[:, -1:]
    if is_teacher:
        out = None

        def prefill():
            nonlocal out
            out = model(ids, use_cache=True, logits_to_keep=1)

        prefill_s = timed(prefill, device)
        cache = out.past_key_values
        del out

        def step():
            model(token, past_key_values=cache, use_cache=True)

    else:
        states = None

        def prefill():
            nonlocal states
            _, states = model.prefill(ids, last_only=True)

        prefill_s = timed(prefill, device)

        def step():
            nonlocal states
            _, states = model.decode(token, states)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step()
    decode_s = timed(step, device, steps)
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else 0
    return {
        "prefill_s": prefill_s,
        "decode_s_per_token": decode_s,
        "decode_peak_bytes": float(peak),
    }


def largest_batch(
    try_batch: Callable[[int], float], start: int, floor: int = 1
) -> tuple[int, float]:
    """Run ``try_batch`` from ``start`` down (×0.7 on each out-of-memory) until one fits."""
    batch = start
    while batch >= floor:
        try:
            return batch, try_batch(batch)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch = int(batch * 0.7)
    raise RuntimeError("not even the smallest batch fits")


def efficiency_sweep(
    teacher: PreTrainedModel,
    student: StudentLM,
    lengths: list[int],
    batch_lengths: list[int],
    steps: int = 8,
    student_batch_cap: int = 2048,
    teacher_batch_cap: int = 4096,
    log: Callable[[str], None] = print,
) -> dict:
    """Batch-1 prefill/decode/memory at every length; decode at the largest batch at
    ``batch_lengths`` (teacher: largest that fits, from an estimate downwards; student: its cap)."""
    result: dict = {"batch1": [], "large_batch": []}
    for length in lengths:
        row = {"length": length}
        for name, model, is_teacher in (("teacher", teacher, True), ("student", student, False)):
            measured = prefill_and_decode_memory(model, length, steps, is_teacher)
            row.update({f"{name}.{k}": v for k, v in measured.items()})
        result["batch1"].append(row)
        log(f"batch 1, length {length}: {row}")
    device = next(teacher.parameters()).device
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 2**33
    config = teacher.config
    param_bytes = next(teacher.parameters()).element_size()
    for length in batch_lengths:
        per_sequence = 2 * config.num_hidden_layers * length * config.hidden_size * param_bytes
        estimate = max(1, min(teacher_batch_cap, int(0.8 * free / per_sequence)))
        t_batch, t_tps = largest_batch(
            lambda b, n=length: decode_tokens_per_second(teacher, b, n, steps, is_teacher=True),
            estimate,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
        s_batch, s_tps = largest_batch(
            lambda b, n=length: decode_tokens_per_second(student, b, n, steps, is_teacher=False),
            student_batch_cap,
        )
        row = {
            "length": length,
            "teacher.batch": t_batch,
            "teacher.tokens_per_s": t_tps,
            "teacher.kv_bytes_per_sequence": per_sequence,
            "student.batch": s_batch,
            "student.tokens_per_s": s_tps,
            "student.state_bytes_per_sequence": state_bytes(student),
            "speedup": s_tps / t_tps,
        }
        result["large_batch"].append(row)
        log(f"largest batch, length {length}: {row}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def state_bytes(student: StudentLM) -> int:
    """Bytes of recurrent state one sequence carries (all layers), whatever its length."""
    total = 0
    for block in student.blocks:
        state = block.mixer.empty_state(1, student.embed.weight)
        total += state.conv.numel() * state.conv.element_size()
        total += state.ssm.numel() * state.ssm.element_size()
    return total
