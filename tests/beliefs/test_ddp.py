"""Breakpoint training under torchrun (issue #10): two gloo processes, launched by the pipeline
step through the shared launcher (nlprec.core.launch), train what one process trains on the same global batches, the loss weighted by each rank's
share of the scored pairs."""

from __future__ import annotations

import json

import torch
from nlprec.beliefs.generator import GeneratorConfig, generate_stories
from nlprec.beliefs.steps import BreakpointStepConfig, StoriesOutput, breakpoint_model
from nlprec.core import launch
from nlprec.core.data import write_jsonl_atomic
from nlprec.core.step import StepContext
from safetensors.torch import load_file


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(f"{model_dir}/heads.safetensors") | load_file(
        f"{model_dir}/encoder/model.safetensors"
    )


def test_two_gloo_processes_train_what_one_process_trains(no_dropout_encoder, tmp_path):
    encoder = no_dropout_encoder
    # 6 stories in global batches of 4: batches of 4 and 2 stories, split 2+2 and 1+1 over ranks
    stories = generate_stories(
        GeneratorConfig(n_stories=6, max_sentences=5, n_persons=2, n_locations=3, n_objects=1)
    )
    train = tmp_path / "train.jsonl"
    write_jsonl_atomic(train, (s.to_dict() for s in stories))
    settings = {
        "model": {
            "encoder": encoder,
            "scorer": "bilinear",  # the mlp scorer has dropout
            "proj_dim": 16,
            "reader": "attention",
            "constraint_weight": 0.1,
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "head_lr": 1e-2},
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings))
    (tmp_path / "inputs.json").write_text(json.dumps({"train": str(train)}))
    launch.main(
        ["nlprec.beliefs.steps:train_worker", "--config", str(config),
         "--inputs", str(tmp_path / "inputs.json"), "--out", str(tmp_path / "one")]
    )  # fmt: skip

    ctx = StepContext(
        name="breakpoint",
        output_dir=tmp_path / "step",
        inputs={},
        params={},
        seed=0,
        device="cpu",
    )
    ctx.output_dir.mkdir()
    stories = StoriesOutput(train=train, test=train, n_train=6, n_validation=0, eval_set="train")
    out = breakpoint_model(
        ctx, BreakpointStepConfig(**settings, stories=stories, nproc_per_node=2)
    )
    assert out.efficiency["world_size"] == 2 and out.efficiency["train_steps"] == 4
    one, two = _weights(tmp_path / "one" / "model"), _weights(out.model_dir)
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    initial = load_file(f"{encoder}/model.safetensors")
    moved = max(
        (one[k] - v).abs().max().item()
        for k, v in initial.items()
        if k in one and one[k].shape == v.shape  # the embeddings grew by [BRK]
    )
    assert moved > 1e-3  # training moved the encoder well past the tolerance above
