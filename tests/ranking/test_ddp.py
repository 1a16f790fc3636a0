"""Fine-tuning under torchrun: two gloo processes, started by the shared launcher
(nlprec.core.launch), train what one process trains on the same global batches (issue #10), for the bi-encoder (MNRL with embeddings gathered across ranks) and the
cross-encoder."""

import json

import pytest
import torch
from nlprec.core import launch
from nlprec.ranking import steps
from nlprec.ranking.training import TrainingExample
from safetensors.torch import load_file

WORDS = "castle river mill harbour tower bridge forest meadow garden valley".split()


def _examples() -> list[TrainingExample]:
    """16 examples with distinct texts: two full global batches of 8."""
    return [
        TrainingExample(
            query=f"where is the {WORDS[i % 10]} number {i}",
            positive=f"The {WORDS[i % 10]} {i} stands by the {WORDS[(i + 3) % 10]}",
            negatives=[f"A {WORDS[(i + 5) % 10]} {i} far from any {WORDS[(i + 7) % 10]}"],
        )
        for i in range(16)
    ]


def test_two_gloo_processes_train_what_one_process_trains(tmp_path, tiny_encoder):
    examples = steps.write_examples(_examples(), tmp_path / "examples.jsonl")
    biencoder = {"batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "max_seq_length": 32}
    cross = {"batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0, "max_length": 48, "loss": "listwise"}
    settings = {"model": str(tiny_encoder), "biencoder": biencoder, "cross_encoder": cross}
    inputs = {"examples": str(examples)}
    (tmp_path / "config.json").write_text(json.dumps(settings))
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    worker = "nlprec.ranking.steps:train_worker"
    launch.main([worker, "--config", str(tmp_path / "config.json"),
                 "--inputs", str(tmp_path / "inputs.json"), "--out", str(tmp_path / "one")])  # fmt: skip
    two = launch.run_distributed(worker, settings, inputs, tmp_path / "two", nproc_per_node=2)

    assert two["world_size"] == 2
    start = load_file(tiny_encoder / "model.safetensors")
    for part in ("biencoder", "cross_encoder"):
        one = load_file(tmp_path / "one" / part / "model" / "model.safetensors")
        two = load_file(tmp_path / "two" / part / "model" / "model.safetensors")
        assert one.keys() == two.keys()
        for name, tensor in one.items():  # float32 sums in another order: equal to ~1e-5
            torch.testing.assert_close(
                two[name], tensor, rtol=1e-4, atol=1e-4, msg=f"{part} {name}"
            )
        shared = [n for n in one if n in start or n.removeprefix("bert.") in start]
        moved = max((one[n] - start.get(n, start.get(n.removeprefix("bert.")))).abs().max().item()
                    for n in shared)  # fmt: skip
        assert moved > 1e-3, part  # two steps at lr 1e-3 moved the weights past the tolerance


def test_examples_file_round_trip_and_errors(tmp_path):
    path = steps.write_examples(_examples()[:3], tmp_path / "ex.jsonl")
    assert steps.read_examples(path) == _examples()[:3]
    (tmp_path / "bad.jsonl").write_text('{"query": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        steps.read_examples(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no training examples"):
        steps.read_examples(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("which", ["biencoder", "cross_encoder"])
def test_pipeline_step_hands_training_to_the_launcher(tmp_path, tiny_encoder, monkeypatch, which):
    """With nproc_per_node > 1 the steps train through the shared launcher: torchrun is replaced
    by an in-process run of the launcher with the same arguments, so the test checks the wiring
    (examples file, config JSON, where rank 0 writes) without two processes."""
    from types import SimpleNamespace

    from nlprec.core import launch as launch_module
    from nlprec.ranking.training import BiEncoderTrainConfig, CrossEncoderTrainConfig

    launched = []

    def fake_torchrun(script_args, nproc_per_node, **_):
        launched.append((script_args[:3], nproc_per_node))
        launch_module.main([str(a) for a in script_args[2:]])

    monkeypatch.setattr(launch_module, "launch_torchrun", fake_torchrun)
    ctx = SimpleNamespace(output_dir=tmp_path, seed=0)
    train = (BiEncoderTrainConfig(batch_size=8, max_seq_length=32) if which == "biencoder"
             else CrossEncoderTrainConfig(batch_size=8, max_length=48))  # fmt: skip
    model_dir = steps._train_under_torchrun(
        ctx, str(tiny_encoder), _examples()[:8], which, train, 2
    )
    assert launched == [(["-m", "nlprec.core.launch", "nlprec.ranking.steps:train_worker"], 2)]
    assert model_dir == tmp_path / "ddp" / which / "model"
    assert (model_dir / "model.safetensors").exists()
    assert steps.read_examples(tmp_path / "examples.jsonl") == _examples()[:8]
