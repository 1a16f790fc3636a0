"""Speed of the SSD kernels (no quality): the three computations of ssd.py, and one decode step.

    nice -n 10 .venv/bin/python benchmarks/mohawk_kernels.py --threads 1 --record    # CPU
    python benchmarks/mohawk_kernels.py --device cuda --out $OUT                       # a GPU node
    .venv/bin/python benchmarks/mohawk_kernels.py --from-json OUT/mohawk_kernels.json --record

Scan (random x, ℓ, B, C scaled as a trained mixer's, float32): the chunked scan (``ssd_chunked_scan``,
and every fused backend of kernels.py installed here), the quadratic form (``ssd_by_matrix``: the
materialised L × L mixing matrix) and the token loop (``ssd_recurrent_scan``), forward and
forward + backward, median milliseconds over ``--repeats`` after a warm-up. The quadratic form is
skipped where its matrix would pass ``--max-matrix-gib``, the loop past ``--loop-max-length``.

Decode: one new token per sequence, batch ``--decode-batch``: the SSD recurrent step
(``ssd_recurrent_step``, a constant-size state) against softmax attention over a KV cache of the
given context, the per-token work of a transformer layer's mixer with the same heads and sizes.

Imports only torch, einops and nlprec.mohawk's ssd / kernels modules (from packages/mohawk/src
when the package is not installed), so it runs on a GPU node without the project's environment.
``--record`` writes its two sections into benchmarks/RESULTS.md (needs nlprec-core); a GPU node's
``$OUT/mohawk_kernels.json`` is recorded here with ``--from-json FILE --record``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    from nlprec.mohawk import kernels, ssd
except ImportError:  # a GPU node with the repository but not the installed packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "mohawk" / "src"))
    from nlprec.mohawk import kernels, ssd


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


def scan_methods(chunk_size: int, device: torch.device) -> dict:
    """name -> fn(x, ℓ, B, C) -> y, for every computation measured."""
    methods = {
        "chunked (reference)": lambda x, ld, B, C: ssd.ssd_chunked_scan(x, ld, B, C, chunk_size)[0]
    }
    if device.type == "cuda":
        for backend in kernels.available_backends():
            if backend in kernels.FUSED:
                methods[f"chunked ({backend})"] = lambda x, ld, B, C, b=backend: (
                    kernels.chunked_scan(x, ld, B, C, chunk_size, backend=b)[0]
                )
    methods["quadratic (matrix)"] = ssd.ssd_by_matrix
    methods["loop (recurrent)"] = lambda x, ld, B, C: ssd.ssd_recurrent_scan(x, ld, B, C)[0]
    return methods


def matrix_gib(batch: int, heads: int, length: int) -> float:
    return batch * heads * length * length * 4 / 2**30


def scan_rows(args, device: torch.device) -> list[dict]:
    rows = []
    for length in args.lengths:
        inputs = kernels.random_scan_inputs(
            args.batch, length, args.heads, args.head_dim, args.state_size, device, torch.float32
        )
        for name, method in scan_methods(args.chunk_size, device).items():
            row = {"length": length, "method": name}
            if (
                name.startswith("quadratic")
                and matrix_gib(args.batch, args.heads, length) > args.max_matrix_gib
            ):
                rows.append(
                    {
                        **row,
                        "note": f"skipped: matrix {matrix_gib(args.batch, args.heads, length):.1f} GiB",
                    }
                )
                continue
            if name.startswith("loop") and length > args.loop_max_length:
                rows.append({**row, "note": f"skipped: longer than {args.loop_max_length}"})
                continue
            try:
                rows.append({**row, **time_scan(method, inputs, device, args.repeats)})
            except (
                RuntimeError,
                NotImplementedError,
            ) as error:  # a kernel refusing (fla #640), OOM
                rows.append({**row, "note": f"failed: {str(error).splitlines()[0][:80]}"})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def time_scan(method, inputs: list[torch.Tensor], device: torch.device, repeats: int) -> dict:
    with torch.no_grad():
        forward = median_ms(lambda: method(*inputs), device, repeats)
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    probe = torch.randn_like(inputs[0])

    def train_step():
        (method(*leaves) * probe).sum().backward()

    return {"forward_ms": forward, "forward_backward_ms": median_ms(train_step, device, repeats)}


def attention_decode(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One query per sequence against a KV cache: q (b, h, 1, n), keys (b, h, L, n), values (b, h, L, p)."""
    return torch.nn.functional.scaled_dot_product_attention(q, keys, values)


def decode_rows(args, device: torch.device) -> list[dict]:
    b, h, p, n = args.decode_batch, args.heads, args.head_dim, args.state_size
    g = torch.Generator(device=device).manual_seed(0)
    randn = lambda *shape: torch.randn(*shape, device=device, generator=g)  # noqa: E731
    state, x, B, C = (
        randn(b, h, p, n),
        randn(b, h, p),
        randn(b, h, n) / n**0.5,
        randn(b, h, n) / n**0.5,
    )
    log_decay = -torch.nn.functional.softplus(randn(b, h) - 2.0)
    rows = []
    with torch.no_grad():
        ssd_ms = median_ms(
            lambda: ssd.ssd_recurrent_step(state, x, log_decay, B, C), device, args.repeats
        )
        for context in args.decode_contexts:
            row = {
                "context": context,
                "ssd_step_ms": ssd_ms,
                "ssd_state_mib": state.numel() * 4 / 2**20,
            }
            cache_mib = b * h * context * (n + p) * 4 / 2**20
            if cache_mib / 1024 > args.max_matrix_gib:
                rows.append(
                    {**row, "note": f"attention skipped: KV cache {cache_mib / 1024:.1f} GiB"}
                )
                continue
            q, keys, values = randn(b, h, 1, n), randn(b, h, context, n), randn(b, h, context, p)
            step = lambda q=q, keys=keys, values=values: attention_decode(q, keys, values)  # noqa: E731
            attention_ms = median_ms(step, device, args.repeats)
            rows.append({**row, "attention_step_ms": attention_ms, "kv_cache_mib": cache_mib})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"


# per part of a result: (column titles, row keys); every table ends with a note column
COLUMNS = {
    "scan": (
        ["length", "computation", "forward ms", "forward + backward ms"],
        ["length", "method", "forward_ms", "forward_backward_ms"],
    ),
    "decode": (
        ["context", "SSD step ms", "attention step ms", "SSD state MiB", "KV cache MiB"],
        ["context", "ssd_step_ms", "attention_step_ms", "ssd_state_mib", "kv_cache_mib"],
    ),
}


def markdown(result: dict, part: str) -> str:
    """The ``part`` ("scan" or "decode") of a result: what was measured, then its table."""
    a = result["settings"]
    machine = (
        f"Device: {result['device']}; torch {result['torch']}; {result['threads']} CPU threads"
    )
    if result.get("load"):  # other jobs on the machine inflate CPU times
        start, end = result["load"]
        machine += f"; load average {start:.1f} at the start, {end:.1f} at the end"
    machine += ". "
    if part == "scan":
        about = (
            f"Random x, ℓ, B, C, b={a['batch']} h={a['heads']} p={a['head_dim']} n={a['state_size']}, "
            f"chunk {a['chunk_size']}, float32; median of {a['repeats']} after a warm-up. Chunked: "
            "`ssd_chunked_scan` (and fused kernels.py backends where installed); quadratic: "
            "`ssd_by_matrix`; loop: `ssd_recurrent_scan`. Speed only."
        )
    else:
        about = (
            f"One new token per sequence, batch {a['decode_batch']}, h={a['heads']} p={a['head_dim']} "
            f"n={a['state_size']}, float32: the SSD recurrent step (`ssd_recurrent_step`, "
            "constant-size state) against softmax attention over a KV cache of the context (a "
            f"transformer mixer's per-token work, SDPA); median of {a['repeats']}. Speed only."
        )
    titles, keys = COLUMNS[part]
    lines = [
        machine + about,
        "",
        f"| {' | '.join(titles)} | note |",
        "|" + "---|" * (len(titles) + 1),
    ]
    for row in result[part]:
        cells = [
            fmt(v) if v is None or isinstance(v, float) else str(v) for v in map(row.get, keys)
        ]
        lines.append(f"| {' | '.join(cells)} | {row.get('note', '')} |")
    return "\n".join(lines)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    import platform

    return f"{platform.machine()} CPU"


def measure(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.manual_seed(0)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    load_at_start = os.getloadavg()[0]
    scans, decodes = scan_rows(args, device), decode_rows(args, device)
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "settings": settings,
        "device": describe(device),
        "gpu": device.type == "cuda",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load": [load_at_start, os.getloadavg()[0]],
        "scan": scans,
        "decode": decodes,
    }


def record(result: dict) -> None:
    """Write the two sections of benchmarks/RESULTS.md (needs nlprec-core)."""
    from nlprec.core.bench import record_section

    where = "GPU" if result["gpu"] else "CPU"
    kwargs = {"command": result["command"], "machine": result["device"]}
    record_section(f"mohawk: SSD kernels on {where}", markdown(result, "scan"), **kwargs)
    record_section(
        f"mohawk: decode step against context ({where})", markdown(result, "decode"), **kwargs
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--lengths", type=int, nargs="+", help="scan lengths (default: 256 1024 2048 on CPU, "
                        "256 1024 4096 16384 on a GPU)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--state-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--max-matrix-gib", type=float,
        help="skip larger L×L matrices / KV caches (default: 1 on CPU, 8 on a GPU)",
    )  # fmt: skip
    parser.add_argument("--loop-max-length", type=int, default=1024)
    parser.add_argument("--decode-batch", type=int, default=64)
    parser.add_argument("--decode-contexts", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--out", type=Path, help="write mohawk_kernels.json and mohawk_kernels.md here"
    )
    parser.add_argument(
        "--record", action="store_true", help="write its sections into benchmarks/RESULTS.md"
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE",
        help="measure nothing: take a run's mohawk_kernels.json (from a GPU node), print / --record it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    on_cpu = args.device == "cpu"
    if args.lengths is None:
        args.lengths = [256, 1024, 2048] if on_cpu else [256, 1024, 4096, 16384]
    if args.max_matrix_gib is None:
        args.max_matrix_gib = 1.0 if on_cpu else 8.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    text = markdown(result, "scan") + "\n\n" + markdown(result, "decode")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mohawk_kernels.json").write_text(json.dumps(result, indent=1))
        (args.out / "mohawk_kernels.md").write_text(text + "\n")
    if args.record:
        record(result)


if __name__ == "__main__":
    main()
