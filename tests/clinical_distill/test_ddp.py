"""Distillation under torchrun: the distill_student step in two gloo processes (through the shared
launcher, nlprec.core.launch) distils what it distils in one process on the same global batches
(issue #10), every loss normalised by the item counts of the whole global batch."""

import json

import torch
from nlprec.clinical_distill.generated import clinical_notes
from nlprec.clinical_distill.steps import DistillStepConfig, distill_student
from nlprec.core.step import StepContext
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

DISTILL = {
    "steps": 3,
    "batch_size": 4,
    "max_len": 24,
    "lr": 1e-2,
    "warmup_ratio": 0.0,
    "kd_weight": 1.0,
    "hidden_weight": 1.0,
    "hidden_loss": "mse",
    "attention_weight": 1.0,
    "attention_loss": "kl",
}


def test_two_gloo_processes_distil_what_one_process_distils(tmp_path, tokenizer):
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # no dropout: its random masks differ per process
    torch.manual_seed(0)
    BertForMaskedLM._from_config(config, attn_implementation="eager").save_pretrained(
        tmp_path / "teacher"
    )
    tokenizer.save_pretrained(tmp_path / "teacher")
    texts = tmp_path / "train.jsonl"
    texts.write_text("".join(json.dumps(t) + "\n" for t in clinical_notes(24)))

    def run(nproc: int) -> tuple[dict, StepContext]:
        ctx = StepContext(
            name="s",
            output_dir=tmp_path / f"n{nproc}",
            inputs={},
            params={},
            seed=0,
            device="cpu",
        )
        ctx.output_dir.mkdir()
        cfg = DistillStepConfig(
            teacher=tmp_path / "teacher",
            texts=texts,
            name="s",
            student={"kind": "layer_subset", "layers": [1, 3]},
            distill=DISTILL,
            nproc_per_node=nproc,
        )
        return distill_student(ctx, cfg), ctx

    threads = torch.get_num_threads()
    try:
        one, one_ctx = run(1)
    finally:
        torch.set_num_threads(threads)
    two, two_ctx = run(2)  # launches torchrun -m nlprec.core.launch with the distill worker

    history = json.loads((tmp_path / "n2" / "ddp" / "result.json").read_text())
    assert history["world_size"] == 2 and len(history["history"]) == 3
    assert {f"s.loss_{k}" for k in ("mlm", "kd", "hidden", "attention", "total")} == set(
        one_ctx.metrics
    )
    for key, value in one_ctx.metrics.items():  # last step's global-batch means
        assert abs(two_ctx.metrics[key] - value) < 1e-4 * max(1.0, abs(value)), (
            key,
            value,
            two_ctx.metrics[key],
        )
    one_w = load_file(one.model_dir / "model.safetensors")
    two_w = load_file(two.model_dir / "model.safetensors")
    teacher = load_file(tmp_path / "teacher" / "model.safetensors")
    assert one_w.keys() == two_w.keys()
    for name, tensor in one_w.items():  # float32 sums in another order: equal to ~1e-5
        torch.testing.assert_close(two_w[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    start = teacher["bert.embeddings.word_embeddings.weight"]
    assert (
        one_w["bert.embeddings.word_embeddings.weight"] - start
    ).abs().max() > 1e-3  # training moved it
