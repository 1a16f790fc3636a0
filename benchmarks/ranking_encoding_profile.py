"""Where corpus-encoding time goes, for the ≥ 2× ONNX/int8 target (issue #3): the same documents,
batch size, length and threads as benchmarks/ranking_encoding.py.

Measured, each as the median of alternating rounds:
- tokenisation alone, pooling alone, and the pad tokens the length sort saves;
- the share of each operator in the forward pass: PyTorch (torch.profiler, bare
  SentenceTransformer model) and ONNX Runtime fp32 / int8 (ORT's own profiler);
- docs/s of bare encode, ONNX fp32 and ONNX int8 at 1 and 2 threads;
- one more graph tried: int8 with the tanh approximation of GELU fused (FastGelu).

    python benchmarks/ranking_encoding_profile.py [--docs 64] [--batch-size 32] [--repeats 3] [--dry]
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from nlprec.core.bench import machine_description, record_section
from nlprec.ranking.data import document_text, load_beir
from nlprec.ranking.encoder import load_encoder, resolve_model_dir
from nlprec.ranking.onnx_encoder import OnnxEncoder, _export_float, _quantise, export_onnx
from ranking_encoding import encoding_arguments  # the script's folder is on sys.path

TORCH_GROUPS = {  # aten op -> group; the rest is "other"
    "aten::addmm": "linear (matmul)", "aten::linear": "linear (matmul)", "aten::mm": "linear (matmul)",
    "aten::matmul": "linear (matmul)", "aten::bmm": "attention", "aten::softmax": "attention",
    "aten::_softmax": "attention", "aten::scaled_dot_product_attention": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::layer_norm": "layer norm", "aten::native_layer_norm": "layer norm", "aten::gelu": "GELU",
}  # fmt: skip


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sorted_batches(texts: list[str], batch_size: int) -> list[list[str]]:
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [[texts[i] for i in order[s : s + batch_size]] for s in range(0, len(texts), batch_size)]


def pad_share(tokenizer, batches: list[list[str]], max_length: int) -> float:
    real = padded = 0
    for batch in batches:
        mask = tokenizer(batch, padding=True, truncation=True, max_length=max_length)[
            "attention_mask"
        ]
        real += sum(map(sum, mask))
        padded += len(mask) * len(mask[0])
    return 1 - real / padded


def torch_op_shares(model, encodings) -> dict[str, float]:
    """Self CPU time per operator group of the bare model's forward passes (exclusive times)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for features in encodings:
            model(dict(features))
    groups = collections.Counter()
    for event in prof.key_averages():
        groups[TORCH_GROUPS.get(event.key, "other")] += event.self_cpu_time_total
    total = sum(groups.values())
    return {k: v / total for k, v in groups.most_common()}


def ort_op_shares(model_path: Path, encodings, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    for features in encodings:
        session.run(
            None, {k: np.asarray(v, dtype=np.int64) for k, v in features.items() if k in names}
        )
    events = json.loads(Path(session.end_profiling()).read_text())
    groups = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            groups[e["args"]["op_name"]] += e["dur"]
    total = sum(groups.values())
    return {k: v / total for k, v in groups.most_common()}


def fast_gelu_int8(model_dir: Path, work: Path) -> Path:
    """The int8 graph again, but with GELU replaced by its tanh approximation (FastGelu)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    _export_float(model_dir, work / "raw.onnx")
    options = FusionOptions("bert")
    options.enable_gelu_approximation = True
    config = json.loads((model_dir / "config.json").read_text())
    optimised = optimize_model(str(work / "raw.onnx"), model_type="bert", opt_level=1,
                               num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"],
                               optimization_options=options)  # fmt: skip
    optimised.save_model_to_file(str(work / "fp32.onnx"))
    _quantise(work / "fp32.onnx", work / "int8.onnx")
    return work / "int8.onnx"


def with_session(encoder: OnnxEncoder, path: Path, threads: int) -> OnnxEncoder:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    encoder.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return encoder


def fmt_shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items() if v >= 0.005)


def main() -> None:
    parser = encoding_arguments(repeats=3)
    args = parser.parse_args()
    model_dir = resolve_model_dir("minilm")
    texts = [document_text(d) for d in load_beir(args.data).corpus[: args.docs]]
    bare = load_encoder("minilm", device="cpu")
    length = bare.max_seq_length
    tokenizer = bare.tokenizer
    batches = sorted_batches(texts, args.batch_size)
    unsorted = [texts[s : s + args.batch_size] for s in range(0, len(texts), args.batch_size)]

    def tokenise(kind: str) -> list:
        return [
            tokenizer(b, padding=True, truncation=True, max_length=length, return_tensors=kind)
            for b in batches
        ]

    load = [os.getloadavg()[0]]
    torch.set_num_threads(2)
    tokenise_s = median_time(lambda: tokenise("pt"), args.repeats)
    np_batches = tokenise("np")
    hidden = [
        np.random.default_rng(0).standard_normal((*b["input_ids"].shape, 384), dtype=np.float32)
        for b in np_batches
    ]
    pool_s = median_time(lambda: [(h * b["attention_mask"][..., None]).sum(1) / b["attention_mask"].sum(1, keepdims=True)
                                  for h, b in zip(hidden, np_batches, strict=True)], args.repeats)  # fmt: skip
    torch_shares = torch_op_shares(bare, tokenise("pt"))
    paths = {"fp32": export_onnx(model_dir, False), "int8": export_onnx(model_dir, True)}
    ort_shares = {name: ort_op_shares(path, np_batches, 2) for name, path in paths.items()}
    work = Path(tempfile.mkdtemp(prefix="fastgelu-"))
    fast_path = fast_gelu_int8(model_dir, work)

    rows, reference = [], bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs = {
            "bare SentenceTransformer.encode (PyTorch fp32)":
                lambda: bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
            "ONNX Runtime fp32": OnnxEncoder(model_dir, threads=threads).encode,
            "ONNX Runtime int8 (shipped)": OnnxEncoder(model_dir, int8=True, threads=threads).encode,
            "ONNX Runtime int8 + tanh GELU (tried)":
                with_session(OnnxEncoder(model_dir, int8=True, threads=threads), fast_path, threads).encode,
        }  # fmt: skip
        for name, fn in list(runs.items())[1:]:
            runs[name] = lambda f=fn: f(texts, args.batch_size)
        cosine = {
            name: float((fn() * reference).sum(1).min()) for name, fn in runs.items()
        }  # warm-up too
        seconds = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
            load.append(os.getloadavg()[0])
        bare_s = seconds[next(iter(runs))]
        total_s = statistics.median(bare_s)  # the last (2-thread) value is the one printed
        for name, secs in seconds.items():
            ratio = statistics.median(b / s for b, s in zip(bare_s, secs, strict=True))
            rows.append(
                f"| {threads} | {name} | {len(texts) / statistics.median(secs):.1f} | {ratio:.2f}x | {cosine[name]:.4f} |"
            )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"{len(texts)} SciFact abstracts, batch {args.batch_size}, max length {length}, {args.repeats} alternating "
        f"rounds per setting; {machine_description()}. Load average (1 min) during the run: {min(load):.1f}-{max(load):.1f} "
        f"(`uptime` at the end: {uptime}).",
        "",
        f"- Tokenisation (fast tokenizer, both batches): {1000 * tokenise_s:.0f} ms; mean pooling in NumPy: "
        f"{1000 * pool_s:.1f} ms; against {1000 * total_s:.0f} ms for a whole bare encode at 2 threads.",
        f"- Pad tokens: {100 * pad_share(tokenizer, batches, length):.1f}% of the batch with the length sort that both "
        f"paths use, {100 * pad_share(tokenizer, unsorted, length):.1f}% in file order.",
        f"- PyTorch forward, self time by operator: {fmt_shares(torch_shares)}.",
        f"- ONNX Runtime fp32 graph, by fused operator (Attention includes the Q/K/V projections; "
        f"MatMul is the output projection and both feed-forward layers): {fmt_shares(ort_shares['fp32'])}.",
        f"- ONNX Runtime int8 graph, by fused operator: {fmt_shares(ort_shares['int8'])}.",
        "",
        "| threads | path | docs/s (median) | vs bare (median of per-round ratios) | min cosine to bare |",
        "|---|---|---|---|---|",
        *rows,
    ]
    table = "\n".join(lines)
    print(table)
    if not args.dry:
        record_section("ranking-encoding: where the time goes", table)


if __name__ == "__main__":
    main()
