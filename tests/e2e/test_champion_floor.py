"""@champion never goes to a version scoring below the best baseline on the same folds."""

import pytest

pytestmark = pytest.mark.e2e


def test_a_version_below_the_best_baseline_never_takes_the_alias(log_scored_model):
    from mlflow.tracking import MlflowClient

    from fsd.serving.registry import register_and_promote

    log_one = log_scored_model
    client = MlflowClient()
    # no holder yet, but 0.88 < the vote's 0.89: registered, alias left unset
    low = register_and_promote(log_one(0.88), "floor-test", "champion", 0.88, floor=0.89)
    assert not low.moved and "best baseline" in low.reason
    assert "champion" not in (client.get_registered_model("floor-test").aliases or {})
    # level with the baseline: not below it, takes the empty alias
    level = register_and_promote(log_one(0.89), "floor-test", "champion", 0.89, floor=0.89)
    assert level.moved
    # beats the holder but not its own folds' baseline: kept off
    above_holder = register_and_promote(log_one(0.90), "floor-test", "champion", 0.90,
                                        floor=0.91)
    assert not above_holder.moved and above_holder.previous_version == level.version
    assert str(client.get_model_version_by_alias("floor-test", "champion").version) == \
        level.version
    # no floor (no baseline on those folds): the holder comparison alone, as before
    best = register_and_promote(log_one(0.95), "floor-test", "champion", 0.95)
    assert best.moved and best.previous_score == pytest.approx(0.89)
