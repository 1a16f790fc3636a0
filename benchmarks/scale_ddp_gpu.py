"""DDP speed-up on GPUs: the same training loop on 1 and 2 GPUs through `torchrun`, same global batch.

    # on a 2-GPU machine (writes OUT/ddp-1.json and OUT/ddp-2.json):
    torchrun --standalone --nproc-per-node 1 benchmarks/scale_ddp_gpu.py run --model DIR --out OUT
    torchrun --standalone --nproc-per-node 2 benchmarks/scale_ddp_gpu.py run --model DIR --out OUT
    # here, into benchmarks/RESULTS.md:
    python benchmarks/scale_ddp_gpu.py record OUT/ddp-1.json OUT/ddp-2.json
    # a CPU dry run of the whole path (tiny random BERT, gloo):
    torchrun --standalone --nproc-per-node 2 benchmarks/scale_ddp_gpu.py run --tiny --out /tmp/ddp

The model is MiniLM (all-MiniLM-L6-v2) with a mean-pooled linear head, fine-tuned on synthetic token
sequences (the task does not matter for throughput); bf16 autocast on GPU. The loop is the one
`nlprec.core.distributed` documents: `init_distributed` → `wrap_model` → `distributed_loader`
(the global batch split over the ranks) → rank 0 reports. Per-step losses of both runs are recorded so
the table also shows that 2 GPUs follow the 1-GPU optimisation path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from nlprec.core.distributed import (
    all_reduce_mean,
    distributed_loader,
    init_distributed,
    shutdown,
    wrap_model,
)
from torch.utils.data import TensorDataset

SECTION = "scale: DDP speed-up on GPUs"


class PooledRegressor(torch.nn.Module):
    """Encoder → mean over tokens → one score."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:  # (B, L) -> (B,)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1)  # (B, H)
        return self.head(pooled).squeeze(-1)


NO_DROPOUT = {
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}  # same steps on 1 and N GPUs


def build_encoder(model_dir: str | None, tiny: bool) -> torch.nn.Module:
    """MiniLM (or a tiny random BERT) without dropout, whose random masks would differ between runs."""
    from transformers import AutoModel, BertConfig, BertModel

    if tiny:
        config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=128, **NO_DROPOUT)  # fmt: skip
        return BertModel(config, add_pooling_layer=False)
    # no pooler: it would hold parameters the loss never uses, which DDP rejects
    return AutoModel.from_pretrained(
        model_dir, dtype=torch.float32, add_pooling_layer=False, **NO_DROPOUT
    )


def synthetic_data(n_rows: int, seq_len: int, vocab: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    first_word_id = vocab // 4  # past the special and rare tokens at the start of a BERT vocabulary
    input_ids = torch.randint(
        first_word_id, vocab, (n_rows, seq_len), generator=generator
    )  # (N, L)
    target = (
        input_ids[:, :8].float().mean(1) / vocab - 0.5
    ) * 4  # (N,) a learnable function of the tokens
    return TensorDataset(input_ids, torch.ones_like(input_ids), target)


def run(args: argparse.Namespace) -> None:
    dist_ctx = init_distributed()
    torch.manual_seed(args.seed)
    encoder = build_encoder(args.model, args.tiny)
    vocab = encoder.config.vocab_size
    model = wrap_model(PooledRegressor(encoder).to(dist_ctx.device), dist_ctx)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps = args.warmup + args.steps
    data = synthetic_data(args.global_batch * steps, args.seq_len, vocab, args.seed)
    loader = distributed_loader(
        data, args.global_batch, dist_ctx, shuffle=False, pin_memory=dist_ctx.device != "cpu"
    )
    use_cuda = dist_ctx.device.startswith("cuda")
    losses: list[float] = []
    start = 0.0
    for step, (input_ids, attention_mask, target) in enumerate(loader):
        if step == args.warmup:
            if use_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        input_ids, attention_mask = (
            input_ids.to(dist_ctx.device),
            attention_mask.to(dist_ctx.device),
        )
        target = target.to(dist_ctx.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
            loss = torch.nn.functional.mse_loss(model(input_ids, attention_mask).float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(all_reduce_mean(loss.detach(), dist_ctx)))
    if use_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if dist_ctx.is_main:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        card = torch.cuda.get_device_name(0) if use_cuda else "CPU"
        result = {
            "world_size": dist_ctx.world_size, "backend": dist_ctx.backend or "none", "card": card,
            "global_batch": args.global_batch, "seq_len": args.seq_len, "timed_steps": args.steps,
            "seconds": seconds, "samples_per_s": args.global_batch * args.steps / seconds, "losses": losses,
            "model": "tiny random BERT" if args.tiny else "all-MiniLM-L6-v2",
        }  # fmt: skip
        (out / f"ddp-{dist_ctx.world_size}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
    shutdown(dist_ctx)


def record(paths: list[str], note: str = "") -> None:
    from nlprec.core.bench import markdown_table, record_section

    results = sorted(
        (json.loads(Path(p).read_text()) for p in paths), key=lambda r: r["world_size"]
    )
    base = results[0]
    rows = []
    for result in results:
        gap = max(abs(a - b) for a, b in zip(result["losses"], base["losses"]))
        rows.append({
            "GPUs": result["world_size"], "backend": result["backend"], "card": result["card"],
            "samples/s": round(result["samples_per_s"], 1),
            "speed-up": round(result["samples_per_s"] / base["samples_per_s"], 2),
            "max loss gap vs 1 GPU": f"{gap:.2e}",
        })  # fmt: skip
    notes = (
        f"{base['model']} + mean-pool regression head, AdamW, bf16 autocast; global batch {base['global_batch']} "
        f"x {base['seq_len']} tokens (split over the GPUs), {base['timed_steps']} timed steps after warm-up; "
        "synthetic token sequences. Each configuration ran once under `torchrun --standalone` on the same "
        "machine, one after the other (GPU budget: 3 device-minutes)."
    )
    command = (
        "torchrun --standalone --nproc-per-node {1,2} benchmarks/scale_ddp_gpu.py run --model .carry/minilm-fp16 "
        "--out $OUT; python benchmarks/scale_ddp_gpu.py record ddp-1.json ddp-2.json"
    )
    record_section(
        SECTION,
        markdown_table(rows) + "\n\n" + notes + (" " + note if note else ""),
        command=command,
    )
    print(markdown_table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--model", default=None, help="MiniLM directory")
    run_parser.add_argument("--tiny", action="store_true", help="tiny random BERT (CPU dry run)")
    run_parser.add_argument("--out", required=True)
    run_parser.add_argument("--global-batch", type=int, default=256)
    run_parser.add_argument("--seq-len", type=int, default=128)
    run_parser.add_argument("--warmup", type=int, default=5)
    run_parser.add_argument("--steps", type=int, default=40)
    run_parser.add_argument("--lr", type=float, default=5e-5)
    run_parser.add_argument("--seed", type=int, default=0)
    record_parser = sub.add_parser("record")
    record_parser.add_argument("results", nargs="+")
    record_parser.add_argument("--note", default="", help="a sentence on what the figures mean")
    args = parser.parse_args()
    if args.command == "run":
        if not args.tiny and not args.model:
            parser.error("--model DIR is needed unless --tiny")
        run(args)
    else:
        record(args.results, args.note)


if __name__ == "__main__":
    main()
