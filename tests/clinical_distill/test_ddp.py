"""Distillation under torchrun: two gloo processes distil what one process distils on the same global
batches (issue #10), with every loss normalised by the item counts of the whole global batch."""

import json

import torch
from nlprec.clinical_distill import ddp
from nlprec.clinical_distill.generated import clinical_notes
from nlprec.core.distributed import launch_torchrun
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM

DISTILL = {"steps": 3, "batch_size": 4, "max_len": 24, "lr": 1e-2, "warmup_ratio": 0.0, "kd_weight": 1.0,
           "hidden_weight": 1.0, "hidden_loss": "mse", "attention_weight": 1.0, "attention_loss": "kl"}


def test_two_gloo_processes_distil_what_one_process_distils(tmp_path, tokenizer):
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # no dropout: its random masks differ per process
    torch.manual_seed(0)
    BertForMaskedLM._from_config(config, attn_implementation="eager").save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    texts = tmp_path / "train.jsonl"
    texts.write_text("".join(json.dumps(t) + "\n" for t in clinical_notes(24)))

    def args(out: str) -> list[str]:
        return ["--teacher", str(tmp_path / "teacher"), "--texts", str(texts), "--out", str(tmp_path / out),
                "--student", json.dumps({"kind": "layer_subset", "layers": [1, 3]}), "--distill", json.dumps(DISTILL)]

    threads = torch.get_num_threads()
    try:
        one_history = ddp.run(ddp.parse_args(args("one")))
    finally:
        torch.set_num_threads(threads)
    launch_torchrun(["-m", "nlprec.clinical_distill.ddp", *args("two")], 2, env={"OMP_NUM_THREADS": "1"})

    two = json.loads((tmp_path / "two" / ddp.HISTORY_FILE).read_text())
    assert two["world_size"] == 2 and len(two["history"]) == 3
    for a, b in zip(one_history, two["history"], strict=True):  # global-batch means, step by step
        assert a.keys() == b.keys() == {"mlm", "kd", "hidden", "attention", "total"}
        for key in a:
            assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), (key, a[key], b[key])
    one_w = load_file(tmp_path / "one" / ddp.MODEL_DIR / "model.safetensors")
    two_w = load_file(tmp_path / "two" / ddp.MODEL_DIR / "model.safetensors")
    teacher = load_file(tmp_path / "teacher" / "model.safetensors")
    assert one_w.keys() == two_w.keys()
    for name, tensor in one_w.items():  # float32 sums in another order: equal to ~1e-5
        torch.testing.assert_close(two_w[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    start = teacher["bert.embeddings.word_embeddings.weight"]
    assert (one_w["bert.embeddings.word_embeddings.weight"] - start).abs().max() > 1e-3  # training moved it
