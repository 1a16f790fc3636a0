"""Fine-tuning under torchrun: two gloo processes, started by the shared launcher
(nlprec.core.launch), train what one process trains on the same global batches (issue #10):
`transformers.Trainer`'s data loader gives each rank half of every global batch."""

import json

import pytest
import torch
from nlprec.clinical_longdoc import data as datasets
from nlprec.clinical_longdoc.steps import FineTuneConfig, TaskSplits
from nlprec.core import launch
from safetensors.torch import load_file


@pytest.mark.parametrize("task", ["classify"])
def test_two_gloo_processes_fine_tune_what_one_process_does(task, tiny_bert, tokenizer, tmp_path):
    source = tmp_path / "source"
    tiny_bert.save_pretrained(source)
    tokenizer.save_pretrained(source)
    splits = datasets.generated_splits(12, 6, seed=0)
    files = {}
    for name, docs in splits.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps({"texts": docs.texts, "labels": docs.labels, "ids": docs.ids}))
    labels = sorted(set(splits["train"].labels))
    (tmp_path / "inputs.json").write_text("{}")
    cfg = FineTuneConfig(
        data=TaskSplits(**files, rows={n: len(d) for n, d in splits.items()}, labels=labels),
        variant="long",
        source=str(source),
        max_length=128,
        epochs=1,
        lr=1e-3,
        head_lr=1e-2,
        max_tokens=128 * 4,  # global batches of 4 documents: 2 per rank
        max_batch=4,
        dropout=0.0,  # dropout masks would differ between one and two processes
        seeds=[0],
    )
    settings = {"task": task, "fine_tune": cfg.model_dump(mode="json")}
    (tmp_path / "config.json").write_text(json.dumps(settings))
    worker = "nlprec.clinical_longdoc.steps:fine_tune_worker"
    launch.main([worker, "--config", str(tmp_path / "config.json"),
                 "--inputs", str(tmp_path / "inputs.json"), "--out", str(tmp_path / "one")])  # fmt: skip
    launch.run_distributed(worker, settings, {}, tmp_path / "two", nproc_per_node=2)

    one = load_file(tmp_path / "one" / "model" / "encoder" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "encoder" / "model.safetensors")
    start = {k: v.float() for k, v in tiny_bert.state_dict().items()}
    one.update(
        {
            f"head.{k}": v
            for k, v in load_file(tmp_path / "one" / "model" / "head.safetensors").items()
        }
    )
    two.update(
        {
            f"head.{k}": v
            for k, v in load_file(tmp_path / "two" / "model" / "head.safetensors").items()
        }
    )
    assert one.keys() == two.keys()
    for name, tensor in one.items():  # float32 sums in another order: equal to ~1e-5
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    moved = max(
        (one[n] - start[n]).abs().max().item()
        for n in one
        if n in start and one[n].shape == start[n].shape
    )
    assert moved > 1e-3  # the steps moved the weights well past the tolerance
    result_one = json.loads((tmp_path / "one" / "result.json").read_text())
    result_two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert (result_one["world_size"], result_two["world_size"]) == (1, 2)
    assert result_two["per_seed"][0]["macro_f1"] == pytest.approx(
        result_one["per_seed"][0]["macro_f1"]
    )
    losses_one, losses_two = (
        result_one["per_seed"][0]["losses"],
        result_two["per_seed"][0]["losses"],
    )
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
