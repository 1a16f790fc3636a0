"""The demo pipeline end to end through the CLI (tiny settings)."""

import json

from nlprec.core.cli import main
from nlprec.sessionrec.online import OnlineRecommender

MODELS = (
    "g_topfreq",
    "p_topfreq",
    "gp_topfreq",
    "actr_bl",
    "up_cf",
    "tifu_knn",
    "sasrec",
    "pisa_bl",
    "pisa_bl_spr",
    "pisa",
)


def test_demo_pipeline_tiny(nlprec_env):
    from pathlib import Path

    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "sessionrec-demo.yaml"
    summary = nlprec_env / "summary.json"
    code = main(
        [
            "run",
            str(pipeline),
            "--summary",
            str(summary),
            "--set",
            "params.users=20",
            "--set",
            "params.epochs=1",
        ]
    )
    assert code in (0, None)
    result = json.loads(summary.read_text())
    for model in MODELS:
        for metric in ("ndcg@10", "recall@10", "ndcg@10_rep", "ndcg@10_exp"):
            key = f"{model}.{metric}"
            if metric == "ndcg@10_exp" and key not in result["metrics"]:
                continue  # no explore target in a tiny world
            assert 0.0 <= result["metrics"][key] <= 1.0, key
    online_dirs = list(nlprec_env.rglob("online/meta.json"))
    assert online_dirs
    state = OnlineRecommender.load(online_dirs[0].parent)
    assert state.pisa is not None and state.recommend(next(iter(state.user_events)), k=3).items


def test_listening_pipeline_on_a_csv_with_custom_columns(nlprec_env):
    from pathlib import Path

    from nlprec.sessionrec.synthetic import SyntheticConfig, generate_listening_log

    frame = generate_listening_log(
        SyntheticConfig(n_users=12, n_items=80, sessions_per_user=(5, 7), seed=4)
    ).frame
    frame = frame.rename(columns={"user": "uid", "time": "ts", "item": "track"})
    path = nlprec_env / "log.csv"
    frame.to_csv(path, index=False)
    with path.open("a") as handle:
        handle.write("u_bad,not-a-time,x\n")  # reported with its line number, not fatal
    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "sessionrec-listening.yaml"
    summary = nlprec_env / "listening.json"
    sets = [
        "params.data=" + str(path),
        "params.format=csv",
        "params.columns.user=uid",
        "params.columns.time=ts",
        "params.columns.item=track",
        "params.epochs=1",
        "params.seeds=[0]",
        # the session clock through the pipeline (ACT-R BL and PISA)
        "steps.baselines.with.actr_clock=sessions",
        "steps.baselines.with.actr_decay=0.3",
        "steps.pisa.with.model.clock=sessions",
    ]
    args = ["run", str(pipeline), "--summary", str(summary)]
    for s in sets:
        args += ["--set", s]
    assert main(args) in (0, None)
    metrics = json.loads(summary.read_text())["metrics"]
    assert 0 <= metrics["pisa.ndcg@10"] <= 1 and 0 <= metrics["tifu_knn.recall@10"] <= 1
