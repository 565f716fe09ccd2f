"""What a run shows in the MLflow UI: figures rounded to what they resolve (one function for
every logger), descriptions whose Markdown renders (no bare @word), and system metrics sampled
often enough to draw a curve (a run sampling them: tests/e2e/test_system_metrics.py)."""

from __future__ import annotations

import math

import mlflow
import numpy as np

from fsd.tracking.descriptions import markdown_safe
from fsd.tracking.rounding import figure_text, rounded
from fsd.tracking.runs import system_metrics_interval


def test_map3_keeps_4_decimals_and_tells_every_value_on_n_clips_apart():
    assert rounded("oof_map3", 0.9615384615384616) == 0.9615
    assert rounded("stage1/val_map3", 2 / 3) == 0.6667
    # MAP@3 over n clips is a mean of 1, 1/2, 1/3 or 0: it moves in steps of 1/(6n), so for
    # up to 1600 clips two different values stay different at 4 decimals
    for n in (52, 500, 1600):
        values = [k / (6 * n) for k in range(6 * n + 1)]
        assert len({rounded("oof_map3", v) for v in values}) == len(values)
    assert rounded("oof_accuracy", 0.98076923) == 0.9808
    assert rounded("blend_weight", 0.45000000000000007) == 0.45


def test_throughputs_and_other_figures_keep_3_significant_digits():
    assert rounded("perf/train_samples_per_s", 162.52715631745133) == 163.0
    assert rounded("perf/oof_seconds", 0.012345) == 0.0123
    assert rounded("stage1/lr", 0.000281234) == 0.000281
    assert rounded("stage1/loss", 1.30421) == 1.3 and rounded("val_loss", 12345.6) == 12300
    assert math.isnan(rounded("oof_map3", float("nan"))) and rounded("x", 0.0) == 0.0
    assert figure_text("perf.train_seconds", 27.16689) == "27.2"
    assert figure_text("samples_per_s", 162.527) == "163"
    assert figure_text("map3", 0.99038) == "0.9904"


def test_every_logger_writes_rounded_figures(tmp_path, monkeypatch):
    from fsd import tracking
    from fsd.tracking import datasets, models

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    exp = mlflow.create_experiment("r", artifact_location=str(tmp_path / "a"))
    with mlflow.start_run(experiment_id=exp) as run:
        tracking.log_run_metrics({"perf/x_per_s": 162.52715631745133})
        tracking.epoch_logger()("stage1", 0, {"val_map3": 0.9615384615384616,
                                              "lr": 0.000281234})
        import pandas as pd

        frame = pd.DataFrame({"fname": ["a"], "label": ["x"], "fold": [0]})
        ds = mlflow.data.from_pandas(frame, name="clips", targets="label")
        datasets.log_dataset(ds, datasets.TRAINING)
        model = mlflow.initialize_logged_model(name="m", source_run_id=run.info.run_id)
        models.log_model_metrics({"oof_map3": 0.9903846153846154}, model.model_id, ds)
    m = mlflow.get_run(run.info.run_id).data.metrics
    assert m == {"perf/x_per_s": 163.0, "stage1/val_map3": 0.9615, "stage1/lr": 0.000281,
                 "oof_map3": 0.9904}
    (got,) = mlflow.get_logged_model(model.model_id).metrics
    assert got.value == 0.9904 and got.dataset_name == "clips"


def test_no_bare_mention_survives_in_a_description(tmp_path, monkeypatch):
    assert markdown_safe("took @champion (no version held @champion)") == \
        "took `@champion` (no version held `@champion`)"
    assert markdown_safe("the alias `@champion` stays") == "the alias `@champion` stays"
    kept = "MAP@3 of models:/fsd-demo@champion, mail a@b.org"
    assert markdown_safe(kept) == kept
    assert markdown_safe("(@v2) and\n@x") == "(`@v2`) and\n`@x`"
    # describe() writes what the UI renders
    from fsd.tracking.descriptions import describe

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    exp = mlflow.create_experiment("d", artifact_location=str(tmp_path / "a"))
    with mlflow.start_run(experiment_id=exp) as run:
        describe("**ensemble**: took @champion")
    note = mlflow.get_run(run.info.run_id).data.tags["mlflow.note.content"]
    assert note == "**ensemble**: took `@champion`"


def test_system_metrics_interval_scales_with_the_run():
    # the demo's fold: 14 epochs of 16 steps, ~30 s: sampled every second
    assert system_metrics_interval(14 * 16) == 1.0
    # an hours-long fold is not sampled 10^4 times, and nothing waits more than a minute
    assert system_metrics_interval(100 * 2000) == 60.0
    steps = np.array([10, 1_000, 20_000, 50_000, 10**6])
    intervals = np.array([system_metrics_interval(int(s)) for s in steps])
    assert (np.diff(intervals) >= 0).all() and ((1 <= intervals) & (intervals <= 60)).all()
    # at >= 0.1 s a step, a run sampled at its interval gets >= 20 samples (up to the cap)
    for s, i in zip(steps, intervals):
        assert s * 0.1 / i >= 20 or i == 1.0 or i == 60.0
