"""The demo pipeline end to end through the CLI (tiny settings; the student registered and the
promote rule applied in a temporary store), and the real-data corpus loaders."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from nlprec.core.cli import main
from nlprec.mohawk.data import load_corpus

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "mohawk-demo.yaml"

TINY = [
    "--set", "params.max_chars=40000",
    "--set", "params.vocab=300",
    "--set", "params.hidden=32",
    "--set", "params.seq_len=32",
    "--set", "params.batch=8",
    "--set", "params.teacher_tokens=12000",
    "--set", "params.distill_tokens=4000",
    "--set", "params.eval_windows=4",
    "--set", "params.register=mohawk-tiny",
]  # fmt: skip


def test_demo_pipeline_runs_and_reports_every_key(nlprec_env):
    summary_path = nlprec_env / "summary.json"
    code = main(["run", str(PIPELINE), *TINY, "--summary", str(summary_path)])
    assert code in (0, None)
    metrics = json.loads(summary_path.read_text())["metrics"]
    for key in (
        "teacher.ppl", "student.ppl", "hybrid.ppl", "scratch.ppl",
        "stage1.matrix_dist", "stage2.hidden_dist",
        "ablation.s3.ppl", "ablation.s23.ppl", "ablation.s123.ppl", "student.kl",
        "student.init.matrix_rel", "student.stage1.matrix_rel", "student.stage2.hidden_rel",
        "corpus.validation_tokens", "corpus.test_tokens",
    ):  # fmt: skip
        assert key in metrics, key
        assert metrics[key] > 0
    assert metrics["ablation.s123.ppl"] == metrics["student.ppl"]
    # row-normalised mixers: Stage 1 leaves the matrices within 1.0 of attention, relative
    assert metrics["student.stage1.matrix_rel"] < 1.0
    # distillation from the teacher starts far ahead of random weights at equal tokens
    assert metrics["student.ppl"] < metrics["scratch.ppl"]

    # one version per seed; the first version of a name serves, the promote step records the mean
    # validation perplexity on the run's versions and keeps the champion (no gain over itself)
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions("name = 'mohawk-tiny'")) == 3
    champion = client.get_model_version_by_alias("mohawk-tiny", "champion")
    assert str(client.get_model_version_by_alias("mohawk-tiny", "challenger").version) == "3"
    assert str(champion.version) == "1"
    assert float(champion.tags["nlprec.metric.student.val_ppl"]) == pytest.approx(metrics["student.val_ppl"])
    assert metrics["promote.mohawk-tiny.promoted"] == 0.0
    generator = mlflow.pyfunc.load_model("models:/mohawk-tiny@champion")
    out = generator.predict(pd.DataFrame({"prompt": ["def "]}), params={"max_new_tokens": 4})
    assert out.generated_text[0]


@pytest.mark.data
def test_real_corpora_load_with_heldout_split(shared_data):
    train, heldout = load_corpus("tinyshakespeare", shared_data)
    assert train.startswith("First Citizen") and len(heldout) > 100_000
    train, heldout = load_corpus("wikitext-2", shared_data, max_chars=5000)
    assert len(train) == 5000 and "=" in train


def test_unknown_corpus_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither one of"):
        load_corpus("no-such-corpus", None)
    with pytest.raises(ValueError, match="needs a data root"):
        load_corpus("tinyshakespeare", None)
