"""A user's journeys on small slices of real data (../shared/data), end to end, on a CPU:

1. a BEIR folder -> `nlprec run pipelines/ranking-beir.yaml` -> `nlprec-serve` with the registered
   engine -> a test query finds its judged document;
2. a listening log -> `nlprec run pipelines/sessionrec-listening.yaml` -> `nlprec-serve` with the
   registered online recommender -> /v1/recommend for a user of the log;
3. an IOB2 folder -> `nlprec run pipelines/longdoc-ner.yaml` (the tagger registered) ->
   `nlprec-longdoc tag` on new text (the batch command that loads that package's taggers;
   `nlprec-distill tag` loads Hugging Face token classifiers such as distill's fine-tuned students).

Each copies a tiny slice to tmp_path and trains with tiny settings (--set), in an isolated
NLPREC_HOME; skipped with a reason when the real data is absent.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "e2e-token"
PIPELINE_TIMEOUT_S = 900
SERVE_TIMEOUT_S = 300


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An isolated NLPREC_HOME (MLflow store, artifacts, cache) for the commands run here."""
    monkeypatch.setenv("NLPREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def nlprec_run(pipeline: str, *overrides: str) -> dict:
    """`nlprec run` as a user types it; returns the summary JSON (fails with the output's tail)."""
    summary = Path(os.environ["NLPREC_HOME"]) / f"{pipeline}.summary.json"
    command = [str(BIN / "nlprec"), "run", str(REPO / "pipelines" / f"{pipeline}.yaml"),
               "--summary", str(summary), *[f"--set={o}" for o in overrides]]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIPELINE_TIMEOUT_S, cwd=REPO)
    assert done.returncode == 0, f"{' '.join(command)}\n{(done.stdout + done.stderr)[-4000:]}"
    return json.loads(summary.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(ranking: str | None, sessionrec: str | None) -> Iterator[httpx.Client]:
    """`nlprec-serve` on 127.0.0.1 with the given model sources; yields a client once ready."""
    port = _free_port()
    env = {
        **os.environ,
        "NLPREC_SERVE_RANKING_MODEL": ranking or "null",
        "NLPREC_SERVE_SESSIONREC_MODEL": sessionrec or "null",
        "NLPREC_SERVE_PORT": str(port),
        "NLPREC_SERVE_TOKEN": TOKEN,
        "NLPREC_SERVE_LOG_LEVEL": "warning",
    }
    log = Path(os.environ["NLPREC_HOME"]) / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([str(BIN / "nlprec-serve")], env=env, stdout=output, stderr=output)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            while True:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not ready: {log.read_text()[-3000:]}"
                time.sleep(0.5)
            yield client
    finally:
        process.terminate()
        process.wait(timeout=60)


# ---------------------------------------------------------------- 1. BEIR -> engine -> search


def beir_slice(source: Path, target: Path, n_test: int = 8, n_train: int = 20, n_other: int = 40) -> dict:
    """A BEIR folder with a few test and train claims, their judged abstracts and some others."""
    def qrels(split: str) -> dict[str, list[str]]:
        rows = (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        judged: dict[str, list[str]] = {}
        for row in rows:
            query, doc, score = row.split("\t")
            if int(score) > 0:
                judged.setdefault(query, []).append(doc)
        return judged

    test, train = qrels("test"), qrels("train")
    test = dict(sorted(test.items())[:n_test])
    train = dict(sorted(train.items())[:n_train])
    keep = {d for docs in (*test.values(), *train.values()) for d in docs}
    corpus = [json.loads(line) for line in (source / "corpus.jsonl").open()]
    others = [d for d in corpus if d["_id"] not in keep]
    random.Random(0).shuffle(others)
    keep |= {d["_id"] for d in others[:n_other]}
    (target / "qrels").mkdir(parents=True)
    with (target / "corpus.jsonl").open("w") as out:
        out.writelines(json.dumps(d) + "\n" for d in corpus if d["_id"] in keep)
    queries = {json.loads(line)["_id"]: json.loads(line) for line in (source / "queries.jsonl").open()}
    with (target / "queries.jsonl").open("w") as out:
        out.writelines(json.dumps(queries[q]) + "\n" for q in (*test, *train))
    for split, judged in (("test", test), ("train", train)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, docs in judged.items() for d in docs]
        (target / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return {queries[q]["text"]: docs for q, docs in test.items()}


def test_beir_folder_to_a_served_search(shared_data, home, tmp_path):
    judged = beir_slice(shared_data / "beir" / "scifact", tmp_path / "scifact-slice")
    nlprec_run(
        "ranking-beir",
        f"params.data={tmp_path / 'scifact-slice'}",
        "seeds=[0]", "params.be_epochs=1", "params.reranker=minilm", "params.rerank_depths=[10]",
        "params.be_batch=16", "params.be_mini_batch=16",
    )  # fmt: skip
    for client in serve("models:/ranking-beir@champion", None):
        found = 0
        for query, documents in judged.items():
            response = client.post("/v1/search", json={"query": query, "k": 10, "mode": "hybrid"})
            assert response.status_code == 200, response.text
            found += any(hit["id"] in documents for hit in response.json()["results"])
        ready = client.get("/ready").json()["models"]["ranking"]
    assert ready["name"] == "ranking-beir@champion" and ready["version"] == "1"
    assert found >= len(judged) // 2, f"judged documents in the top 10 for {found} of {len(judged)} claims"


# ---------------------------------------------------------------- 2. listening log -> recommend


def listening_slice(source: Path, target: Path, users: int = 25) -> str:
    """The events of the first `users` users with at least 4 sessions; returns one user id."""
    lines = source.read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    sessions: dict[str, set[str]] = {}
    for row in rows:
        sessions.setdefault(row[0], set()).add(row[1])
    chosen = [u for u, s in sessions.items() if len(s) >= 4][:users]
    keep = set(chosen)
    target.write_text("\n".join([header] + ["\t".join(r) for r in rows if r[0] in keep]) + "\n")
    return chosen[0]


def test_listening_log_to_served_recommendations(shared_data, home, tmp_path):
    log = tmp_path / "listening.tsv"
    user = listening_slice(shared_data / "listening" / "30music-dev" / "30music-dev.tsv", log)
    nlprec_run(
        "sessionrec-listening",
        f"params.data={log}", "params.epochs=1", "seeds=[0]",
    )  # fmt: skip
    for client in serve(None, "models:/sessionrec-listening@champion"):
        response = client.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["items"]) == 5 and body["fallback"] is False


# ---------------------------------------------------------------- 3. IOB2 -> tagger -> batch tag


def iob2_slice(source: Path, target: Path, sizes: dict[str, int]) -> None:
    """The first sentences of each split (blank-line separated token<TAB>tag files)."""
    target.mkdir(parents=True)
    for split, n in sizes.items():
        sentences = source.joinpath(f"{split}.tsv").read_text().split("\n\n")[:n]
        target.joinpath(f"{split}.tsv").write_text("\n\n".join(sentences).strip() + "\n")


def test_iob2_folder_to_batch_tagging(shared_data, home, tmp_path):
    iob2_slice(shared_data / "clinical" / "ncbi_disease", tmp_path / "ner", {"train": 60, "devel": 20, "test": 20})
    nlprec_run(
        "longdoc-ner",
        f"params.data={tmp_path / 'ner'}", "params.epochs=1", "seeds=[0]",
        "steps.long.search.space.lr=[0.0001]", "steps.short.search.space.lr=[0.0001]",
        "steps.short.with.register_as=ner-e2e",
    )  # fmt: skip
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "n1", "text": "Patients with breast cancer and ovarian cancer"}) + "\n")
    out = tmp_path / "tags.jsonl"
    command = [str(BIN / "nlprec-longdoc"), "tag", "--model", "models:/ner-e2e@champion",
               "--input", str(notes), "--output", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text().splitlines()[0])
    assert row["id"] == "n1" and len(row["tags"]) == 7
    assert set(row["tags"]) <= {"O", "B-Disease", "I-Disease"}
