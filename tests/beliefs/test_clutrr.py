import numpy as np
from nlprec.beliefs.clutrr import RELATIONS, load_clutrr
from nlprec.beliefs.metrics import accuracy_by, evaluate
from nlprec.beliefs.qa import one_hot
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN


def test_clutrr_beliefs_answer_every_query_and_grow_along_the_story(shared_data):
    root = shared_data / "beliefs" / "clutrr" / "gen_train23_test2to10"
    stories = load_clutrr(root, "test", limit=150)
    assert {s.meta["k"] for s in stories} >= {2, 3, 4}
    metrics = evaluate(stories, [one_hot(s.labels) for s in stories])
    assert metrics["qa_acc"] == 1.0 and metrics["prop_acc"] == 1.0
    assert metrics["constraint_violation"] == 0.0 and all(s.constraints for s in stories)
    for story in stories:
        labels = np.asarray(story.labels)
        query = story.questions[0]
        assert sum(p.endswith(f"'s {r}") for p in story.propositions for r in RELATIONS) >= len(
            RELATIONS
        )
        assert (labels[-1] != UNKNOWN).all()  # everything in the proof is known at the end
        # knowledge only grows: once true or false, a proposition stays so
        for t in range(1, len(labels)):
            assert ((labels[t - 1] == UNKNOWN) | (labels[t] == labels[t - 1])).all()
        b, _, a = query.text.removeprefix("What is ").removesuffix("?").partition(" to ")
        answer = story.propositions.index(f"{b} is {a}'s {query.answer}")
        assert labels[-1, answer] == TRUE
        assert (
            sum(
                labels[-1, i] == TRUE
                for i, p in enumerate(story.propositions)
                if p.startswith(f"{b} is {a}'s ")
            )
            == 1
        )
    assert set(accuracy_by(stories, [one_hot(s.labels) for s in stories], "k")) >= {"2", "3"}
    assert FALSE in np.concatenate([np.asarray(s.labels).ravel() for s in stories])


def test_clutrr_train_split_is_validation_csv(shared_data):
    root = shared_data / "beliefs" / "clutrr" / "gen_train23_test2to10"
    train = load_clutrr(root, "train", limit=40)
    assert train and {s.meta["k"] for s in train} <= {2, 3}
