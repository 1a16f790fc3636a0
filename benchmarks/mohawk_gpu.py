"""MOHAWK on a GPU: kernel check, the real distillation run with its ablation, and efficiency.

Run on the device machine (no mlflow there; writes JSON under --out):
    python benchmarks/mohawk_gpu.py run --data .carry/mohawk/data --out $OUT
Then, here, turn the JSON into RESULTS.md sections and MLflow plots:
    python benchmarks/mohawk_gpu.py record --results <files_at>/mohawk_gpu.json

Sections (each bounded so the whole fits a short device lease; results are saved after each):
1. kernels: flash-linear-attention / mamba-ssm installed? fla's chunk_simple_gla against the
   reference chunked scan (outputs, final states and gradients), and their speeds.
2. distill: TinyShakespeare; a Phi-style teacher trained from scratch, then the MOHAWK student
   (Stages 1+2+3), a hybrid, the Stage-3-only and Stage-2+3 ablations at equal tokens, and a
   same-size SSM trained from scratch on the same budget.
3. efficiency: a Phi-1.5-shaped pair (random weights, bf16) — teacher through SDPA with a
   DynamicCache, student through its recurrent state — prefill, decode and memory against
   context length, and decode throughput at the largest batch that fits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HELDOUT = {"wikitext-2": "trained on valid.txt, test.txt held out"}
CORPUS_TITLES = {"tinyshakespeare": "TinyShakespeare", "wikitext-2": "WikiText-2"}
LIBRARIES = ("flash-linear-attention", "fla-core", "mamba-ssm", "causal-conv1d")


def _save(results: dict, out: Path) -> None:
    (out / "mohawk_gpu.json").write_text(json.dumps(results, indent=1, default=str))


def installed_libraries() -> dict[str, str | None]:
    found = {}
    for name in LIBRARIES:
        shown = subprocess.run(
            [sys.executable, "-m", "pip", "show", name], capture_output=True, text=True
        ).stdout
        version = [
            line.split(":", 1)[1].strip()
            for line in shown.splitlines()
            if line.startswith("Version:")
        ]
        found[name] = version[0] if version else None
    return found


AGREEMENT_TOLERANCE = 1e-3  # relative to the reference's largest magnitude, float32 (TF32 inside)


def _agrees(entry: dict) -> bool:
    """The kernel's forward (and, where it ran, backward) matches the reference in float32."""
    forward = entry.get("agreement_forward", {})
    if "error" in forward or not forward:
        return False
    grads = entry.get("agreement_with_grads", {})
    checked = forward if "error" in grads else grads
    return max(checked.values()) < AGREEMENT_TOLERANCE


def _scan_ms(backend: str, inputs: list[torch.Tensor], backward: bool, device: str) -> float:
    """Milliseconds per chunked scan (forward, or forward + backward) after one warm-up call."""
    from nlprec.mohawk import kernels
    from nlprec.mohawk.throughput import timed

    leaves = [t.detach().clone().requires_grad_(backward) for t in inputs]

    def call():
        y, _ = kernels.chunked_scan(*leaves, 64, backend=backend)
        if backward:
            y.sum().backward()

    call()
    return 1e3 * timed(call, torch.device(device), 5)


def kernel_check(device: str, deadline_s: float = 120.0, save=lambda partial: None) -> dict:
    """Each fused backend against the reference: agreement in float32 (forward, then gradients,
    apart so that a refused backward still shows the forward), then speed in bfloat16 at the
    distillation shapes and at a Phi-1.5-sized prefill. Stops starting checks after deadline_s;
    ``save(result)`` after every check, since a cold Triton cache makes the first fla calls slow
    (compilation and autotuning: the first checks had not finished after 130 s on an H100)."""
    from nlprec.mohawk import kernels

    started = time.time()
    result: dict = {"available": list(kernels.available_backends())}
    if device != "cuda":
        return result
    import triton

    result["triton"] = triton.__version__
    shapes = {"distill b32 l256 h4 p=n=64": (32, 256, 4, 64, 64),
              "prefill b4 l4096 h32 p=n=64": (4, 4096, 32, 64, 64)}  # fmt: skip
    fused = [b for b in ("fla", "fla_gla", "mamba_ssm") if b in result["available"]]
    for backend in fused:
        entry = result.setdefault(backend, {})
        inputs = kernels.random_scan_inputs(4, 300, 4, 64, 64, device, torch.float32)
        for grads in (False, True):
            key = "agreement_with_grads" if grads else "agreement_forward"
            if time.time() - started > deadline_s:
                result.setdefault("skipped", []).append(f"{backend} {key}")
                continue
            print("checking", backend, key, flush=True)
            try:
                entry[key] = kernels.compare_with_reference(backend, inputs, grads=grads)
            except Exception as err:  # noqa: BLE001 - report the failure, keep going
                entry[key] = {"error": repr(err)[:300]}
            print(backend, key, entry[key], flush=True)
            save(result)
    for label, shape in shapes.items():
        inputs = kernels.random_scan_inputs(*shape, device, torch.bfloat16)
        for backend in ["reference", *fused]:
            for backward in (False, True):
                name = f"{label} {'fwd+bwd' if backward else 'fwd'}"
                if time.time() - started > deadline_s:
                    result.setdefault("skipped", []).append(f"{backend} {name}")
                    continue
                try:
                    ms = _scan_ms(backend, inputs, backward, device)
                except Exception as err:  # noqa: BLE001
                    ms = repr(err)[:200]
                result.setdefault("speed_ms", {}).setdefault(name, {})[backend] = ms
                print(backend, name, ms, flush=True)
                save(result)
    return result


def distill_run(
    data: Path, device: str, backend: str, sizes: dict, result: dict, deadline: float
) -> dict:
    """Fills ``result`` as it goes (a timeout keeps what finished); starts no new model after
    ``deadline`` (time.time())."""
    from nlprec.mohawk.stages import DistillConfig
    from nlprec.mohawk.teacher import TeacherConfig
    from nlprec.mohawk.training import OptimConfig
    from nlprec.mohawk.transfer import student_config_for
    from nlprec.mohawk.workflow import (
        EvalConfig,
        distill_student,
        eval_windows,
        evaluate_against_teacher,
        prepare_corpus,
        stage_summary,
        train_from_scratch,
        train_teacher,
    )

    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.time()
    tokenizer, train_ids, _validation_ids, heldout_ids = prepare_corpus(
        sizes["corpus"], data, sizes["vocab"], None
    )
    seq, batch = sizes["seq_len"], sizes["batch"]
    evaluation = EvalConfig(seq_len=seq, max_windows=128, batch_size=32, probe_batch=4)
    windows = eval_windows(heldout_ids, evaluation)
    result.update(
        sizes=sizes,
        train_tokens_available=train_ids.numel(),
        heldout_tokens_evaluated=windows.numel(),
    )
    teacher, teacher_losses = train_teacher(
        len(tokenizer),
        train_ids,
        TeacherConfig(**sizes["teacher"]),
        OptimConfig(lr=2e-3, batch_size=batch, seq_len=seq, decay_fraction=0.3),
        sizes["teacher_tokens"],
        0,
        device,
    )
    result["teacher"] = evaluate_against_teacher(teacher, None, windows, evaluation, device)
    result["teacher"]["train_tokens"] = sizes["teacher_tokens"]
    result["teacher"]["final_train_loss"] = teacher_losses[-1]
    result["teacher"]["seconds"] = time.time() - started
    print("teacher", result["teacher"], flush=True)

    distill = DistillConfig(
        total_tokens=sizes["distill_tokens"],
        stage1=OptimConfig(lr=1e-3, batch_size=8, seq_len=seq),
        stage2=OptimConfig(lr=1e-3, batch_size=batch, seq_len=seq),
        stage3=OptimConfig(lr=1e-3, batch_size=batch, seq_len=seq, decay_fraction=0.3),
    )
    probe = windows[: evaluation.probe_batch]
    runs = {
        "student": ([1, 2, 3], []),
        "hybrid": ([1, 2, 3], sizes["hybrid_layers"]),
        "ablation.s23": ([2, 3], []),
        "ablation.s3": ([3], []),
    }
    for name, (stages, attention_layers) in runs.items():
        if time.time() > deadline:
            result[name] = {"skipped": "out of device time"}
            continue
        started = time.time()
        cfg = distill.model_copy(update={"stages": stages})
        student, history = distill_student(
            teacher, train_ids, probe, cfg, attention_layers, scan_backend=backend
        )
        result[name] = evaluate_against_teacher(teacher, student, windows, evaluation, device)
        result[name].update(stage_summary(history))
        result[name]["alignment"] = {
            k: v["alignment"] if "alignment" in v else v
            for k, v in history.items()
            if k != "budgets"
        }
        result[name]["budgets"] = history["budgets"]
        result[name]["seconds"] = time.time() - started
        print(name, {k: v for k, v in result[name].items() if k != "alignment"}, flush=True)
        del student
    if time.time() > deadline:
        result["scratch"] = {"skipped": "out of device time"}
        return result
    started = time.time()
    scratch, _ = train_from_scratch(
        student_config_for(teacher.config),
        train_ids,
        OptimConfig(lr=2e-3, batch_size=batch, seq_len=seq, decay_fraction=0.3),
        sizes["distill_tokens"],
        0,
        device,
        scan_backend=backend,
    )
    result["scratch"] = evaluate_against_teacher(teacher, scratch, windows, evaluation, device)
    result["scratch"]["seconds"] = time.time() - started
    print("scratch", result["scratch"], flush=True)
    return result


def efficiency(
    device: str, lengths: list[int], batch_lengths: list[int], small: bool = False
) -> dict:
    from nlprec.mohawk.student import StudentLM
    from nlprec.mohawk.throughput import efficiency_sweep
    from nlprec.mohawk.transfer import student_config_for
    from transformers import PhiConfig, PhiForCausalLM

    # Phi-1.5's shape: 24 layers, width 2048, 32 heads of 64, partial RoPE 0.5, vocab 51200.
    config = PhiConfig(
        vocab_size=51200,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        partial_rotary_factor=0.5,
        max_position_embeddings=32768,
    )
    if small:  # a CPU smoke test of this script
        config.hidden_size, config.intermediate_size, config.num_hidden_layers = 64, 128, 2
        config.num_attention_heads, config.num_key_value_heads, config.vocab_size = 4, 4, 300
    with torch.device(device):
        teacher = PhiForCausalLM._from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16
        )
        student = StudentLM(student_config_for(config)).to(torch.bfloat16)
    teacher.eval()
    student.eval().set_scan_backend("reference")
    result = {
        "model": "Phi-1.5 shape (24 x 2048, 32 heads), random weights, bf16",
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
    }
    result.update(efficiency_sweep(teacher, student, lengths, batch_lengths, steps=5))
    return result


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "libraries": installed_libraries(),
    }
    print(results, flush=True)
    _save(results, out)
    started = time.time()

    def save_kernels(partial: dict) -> None:
        results["kernels"] = partial
        _save(results, out)

    results["kernels"] = kernel_check(device, args.kernel_deadline_s, save_kernels)
    print("kernels", results["kernels"], flush=True)
    _save(results, out)
    fused = [v for k, v in results["kernels"].items() if k in ("fla", "fla_gla", "mamba_ssm")]
    backend = "auto" if fused and all(_agrees(e) for e in fused) else "reference"
    results["training_backend"] = backend
    sizes = {
        "corpus": args.corpus,
        "vocab": 2048,
        "seq_len": 256,
        "batch": 32,
        "teacher": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
        "teacher_tokens": args.teacher_tokens,
        "distill_tokens": args.distill_tokens,
        "hybrid_layers": [2],
    }
    if args.small:
        sizes.update(vocab=300, seq_len=32, batch=4)
        sizes["teacher"] = {
            "hidden_size": 32,
            "num_layers": 4,
            "num_heads": 4,
            "intermediate_size": 64,
        }
    if "efficiency" in args.sections:
        results["efficiency"] = efficiency(device, args.lengths, args.batch_lengths, args.small)
        _save(results, out)
        if device == "cuda":
            torch.cuda.empty_cache()
    results["efficiency_seconds"] = time.time() - started
    if "distill" in args.sections:
        results["distill"] = {}
        deadline = started + args.distill_deadline_s
        try:
            distill_run(Path(args.data), device, backend, sizes, results["distill"], deadline)
        except Exception as err:  # noqa: BLE001 - keep what finished
            results["distill"]["error"] = repr(err)[:1000]
            print("distill failed", err, flush=True)
        _save(results, out)
    results["total_seconds"] = time.time() - started
    _save(results, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--teacher-tokens", type=int, default=4_000_000)
    r.add_argument("--distill-tokens", type=int, default=1_000_000)
    r.add_argument("--sections", nargs="+", default=["distill", "efficiency"])
    r.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 8192, 16384])
    r.add_argument("--batch-lengths", type=int, nargs="*", default=[1024, 8192, 16384])
    r.add_argument("--small", action="store_true", help="tiny models: a CPU smoke test")
    r.add_argument("--corpus", default="tinyshakespeare", choices=["tinyshakespeare", "wikitext-2"])
    r.add_argument("--kernel-deadline-s", type=float, default=120.0, help="start no timing after")
    r.add_argument("--distill-deadline-s", type=float, default=230.0, help="start no model after")
    rec = sub.add_parser("record")
    rec.add_argument("--results", required=True)
    rec.add_argument("--sections", nargs="+", default=["kernels", "distill", "efficiency"])
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        record(Path(args.results), tuple(args.sections))


# --------------------------------------------------------------------------- record (here)


def _fmt(value: float, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.{digits}f}"  # NaN: not measured
    return str(value)


def distill_table(d: dict) -> str:
    teacher_ppl = d["teacher"]["ppl"]
    lines = [
        "| model | stages | held-out ppl | × teacher | KL(teacher‖model) nats/token | "
        "matrix dist after S1 (rel) | hidden dist after S2 (rel) |",
        "|---|---|---|---|---|---|---|",
        f"| teacher (Phi-style, {d['teacher']['train_tokens']:,} tokens) | – | {teacher_ppl:.2f} | 1.000 | – | – | – |",
    ]
    for name in ("student", "hybrid", "ablation.s23", "ablation.s3", "scratch"):
        if name not in d:
            continue
        r = d[name]
        stages = "+".join(str(s) for s in r.get("budgets", {})) or "scratch (CE)"
        lines.append(
            f"| {name} | {stages} | {r['ppl']:.2f} | {r['ppl'] / teacher_ppl:.3f} | {r['kl']:.4f} | "
            f"{_fmt(r.get('stage1.matrix_dist', float('nan')), 2)} ({_fmt(r.get('stage1.matrix_rel', float('nan')), 2)}) | "
            f"{_fmt(r.get('stage2.hidden_dist', float('nan')), 2)} ({_fmt(r.get('stage2.hidden_rel', float('nan')), 2)}) |"
        )
    return "\n".join(lines)


def layer_table(student: dict) -> str:
    lines = [
        "| after | layer | ‖M−A‖_F | relative to ‖A‖_F | block-output L2 | relative |",
        "|---|---|---|---|---|---|",
    ]
    for stage, a in student["alignment"].items():
        for layer in a["matrix_dist"]:
            lines.append(
                f"| {stage} | {layer} | {a['matrix_dist'][layer]:.3f} | {a['matrix_rel'][layer]:.3f} | "
                f"{a['hidden_dist'][layer]:.3f} | {a['hidden_rel'][layer]:.3f} |"
            )
    return "\n".join(lines)


def efficiency_tables(e: dict) -> str:
    lines = [
        "| context | teacher prefill s | student prefill s | teacher decode ms/token | "
        "student decode ms/token | teacher decode memory MiB | student decode memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in e["batch1"]:
        lines.append(
            f"| {r['length']} | {r['teacher.prefill_s']:.3f} | {r['student.prefill_s']:.3f} | "
            f"{1e3 * r['teacher.decode_s_per_token']:.2f} | {1e3 * r['student.decode_s_per_token']:.2f} | "
            f"{r['teacher.decode_peak_bytes'] / 2**20:.0f} | {r['student.decode_peak_bytes'] / 2**20:.0f} |"
        )
    lines += [
        "",
        "| context | teacher batch (largest that fits) | teacher tokens/s | KV MiB per sequence | "
        "student batch | student tokens/s | state MiB per sequence | student / teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in e["large_batch"]:
        lines.append(
            f"| {r['length']} | {r['teacher.batch']} | {r['teacher.tokens_per_s']:.0f} | "
            f"{r['teacher.kv_bytes_per_sequence'] / 2**20:.0f} | {r['student.batch']} | "
            f"{r['student.tokens_per_s']:.0f} | {r['student.state_bytes_per_sequence'] / 2**20:.1f} | "
            f"{r['speedup']:.1f}× |"
        )
    return "\n".join(lines)


def kernel_report(results: dict) -> list[str]:
    k = results["kernels"]
    libs = ", ".join(f"{name} {v or 'absent'}" for name, v in results["libraries"].items())
    lines = [
        f"Card: {results['device']}. Installed during the run: {libs}; Triton {k.get('triton')}.",
        "",
    ]
    fused = [b for b in ("fla", "fla_gla", "mamba_ssm") if b in k]
    if fused:
        lines += [
            "Agreement with the reference chunked scan, float32, b=4 l=300 h=4 p=n=64 with a random "
            "initial state: largest difference relative to the reference's largest magnitude.",
            "",
            "| backend | y | final state | dx | dℓ | dB | dC |",
            "|---|---|---|---|---|---|---|",
        ]
        for backend in fused:
            fwd = k[backend].get("agreement_forward", {})
            grads = k[backend].get("agreement_with_grads", {})
            row = [fwd.get("y"), fwd.get("state")] + [
                grads.get(name) for name in ("dx", "dlog_decay", "dB", "dC")
            ]
            cells = [f"{v:.1e}" if isinstance(v, float) else "–" for v in row]
            lines.append(f"| {backend} | " + " | ".join(cells) + " |")
            for what in (fwd, grads):
                if "error" in what:
                    lines.append(f"\n{backend}: {what['error']}\n")
    speeds = k.get("speed_ms", {})
    if speeds:
        names = ["reference", *fused]
        lines += ["", "Milliseconds per scan, bfloat16 (mean of 5 after a warm-up):", ""]
        lines += ["| shape | pass | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for label, row in speeds.items():
            shape, _, what = label.rpartition(" ")
            cells = [f"{row[n]:.2f}" if isinstance(row.get(n), float) else "–" for n in names]
            lines.append(f"| {shape} | {what} | " + " | ".join(cells) + " |")
    if k.get("skipped"):
        lines += ["", f"Not timed (device-time limit): {', '.join(k['skipped'])}."]
    if "notes" in results:
        lines += ["", results["notes"]]
    return lines


def efficiency_figure(e: dict, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    lengths = [r["length"] for r in e["batch1"]]
    for name in ("teacher", "student"):
        axes[0].plot(
            lengths, [1e3 * r[f"{name}.decode_s_per_token"] for r in e["batch1"]], "o-", label=name
        )
        axes[1].plot(
            lengths, [r[f"{name}.decode_peak_bytes"] / 2**20 for r in e["batch1"]], "o-", label=name
        )
    axes[0].set_ylabel("decode ms / token (batch 1)")
    axes[1].set_ylabel("decode peak memory above weights (MiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def record(
    results_path: Path, sections: tuple[str, ...] = ("kernels", "distill", "efficiency")
) -> None:
    import mlflow
    from nlprec.core.bench import record_section

    results = json.loads(results_path.read_text())
    card = results["device"]
    command = (
        "python benchmarks/mohawk_gpu.py run --data .carry/mohawk/data --out $OUT  (on the device)"
    )
    kernel_lines = kernel_report(results)
    if "kernels" in sections:
        record_section("mohawk: SSD kernels on GPU", "\n".join(kernel_lines), command)
    if "distill" in sections and "teacher" in results.get("distill", {}):
        d = results["distill"]
        text = (
            f"Card: {card}. Corpus {d['sizes']['corpus']} ({HELDOUT.get(d['sizes']['corpus'], 'last 10% held out')}, {d['heldout_tokens_evaluated']:,} "
            f"held-out tokens evaluated in windows of {d['sizes']['seq_len']}); BPE vocabulary {d['sizes']['vocab']}. "
            f"Teacher {d['sizes']['teacher']}; every student distilled with {d['sizes']['distill_tokens']:,} tokens "
            f"(stage split 3/5/92%, missing stages' share goes to the last stage), the scratch SSM trained on the "
            f"same number of tokens. Distance columns: after Stage 1 / Stage 2 where the run had them, "
            f"else the final model's (relative to the teacher's norms in brackets).\n\n"
            + distill_table(d)
            + "\n\nPer-layer distances of the MOHAWK student "
            "(probe batch of 4 held-out windows):\n\n" + layer_table(d["student"])
        )
        corpus = CORPUS_TITLES.get(d["sizes"]["corpus"], d["sizes"]["corpus"])
        distill_command = command.replace(
            "--out $OUT", f"--out $OUT --corpus {d['sizes']['corpus']}"
        )
        record_section(f"mohawk: distillation on {corpus} (GPU)", text, distill_command)
    if "efficiency" in sections and "efficiency" in results:
        e = results["efficiency"]
        text = (
            f"Card: {card}. {e['model']}: teacher {e['teacher_params'] / 1e9:.2f} B parameters (HF Phi, SDPA, "
            f"DynamicCache), student {e['student_params'] / 1e9:.2f} B (recurrent state). Decode at the largest "
            "batch is timed from a synthetic cache of the given length (cost depends only on its size); the "
            "student's batch is capped at 2048 (memory would allow more).\n\n"
            + efficiency_tables(e)
        )
        record_section("mohawk: decode efficiency against context (GPU)", text, command)
        from nlprec.core.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())  # the project's store (sqlite under NLPREC_HOME)
        mlflow.set_experiment("mohawk")
        with mlflow.start_run(run_name=f"mohawk-efficiency {card}"):
            mlflow.log_figure(efficiency_figure(e, f"{e['model']} on {card}"), "efficiency.png")
            mlflow.log_dict(results, "mohawk_gpu.json")


if __name__ == "__main__":
    main()
