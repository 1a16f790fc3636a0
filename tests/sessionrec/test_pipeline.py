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
    "pisa_repeat",
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
    path = nlprec_env / "log.csv"
    frame.rename(columns={"user": "uid", "time": "ts", "item": "track"}).to_csv(path, index=False)
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
        "params.columns.session=null",
        "params.session_gap_minutes=20",
        "params.epochs=1",
        "params.sasrec_epochs=1",
        "seeds=[0]",
        # the baselines' grids are long; PISA's search (validation, then test) stays
        "steps.actr_bl.search=null",
        "steps.up_cf.search=null",
        "steps.tifu_knn.search=null",
        "steps.sasrec.search=null",
        # the session clock through the pipeline (ACT-R BL and PISA)
        "steps.actr_bl.with.params.actr_bl.clock=sessions",
        "steps.pisa_bl.with.model.clock=sessions",
    ]
    args = ["run", str(pipeline), "--summary", str(summary)]
    for s in sets:
        args += ["--set", s]
    assert main(args) in (0, None)
    result = json.loads(summary.read_text())
    metrics = result["metrics"]
    for system in ("pisa", "pisa_bl", "pisa_repeat", "sasrec", "tifu_knn", "actr_bl", "up_cf"):
        assert 0 <= metrics[f"{system}.ndcg@10"] <= 1, system
    units = list(nlprec_env.rglob("unit_scores/pisa.ndcg@10.json"))
    assert units
    per_user = json.loads(units[0].read_text())["scores"]  # one test score per user id
    assert len(per_user) >= 2 and all(0 <= v <= 1 for v in per_user.values())
    assert set(per_user) <= set(frame["user"]) | {"u_bad"}
