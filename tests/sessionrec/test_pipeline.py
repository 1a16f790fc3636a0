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
