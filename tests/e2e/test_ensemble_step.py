"""The ensemble step end to end on the session's tiny trained folds (tests/support/conftest_ensemble.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fsd.evaluation.metrics import map_at_k

pytestmark = pytest.mark.e2e


def test_ensemble_step_scores_logs_submits_and_registers(ensemble_tracking):
    import mlflow
    from mlflow.tracking import MlflowClient

    s = ensemble_tracking.summary
    assert 0.0 <= s["oof_map3"] <= 1.0
    run = mlflow.get_run(s["run_id"])
    m = run.data.metrics
    assert m["oof_map3"] == pytest.approx(s["oof_map3"])
    # the CNN's per-fold figures are named as the CNN's; no blend here (the session's
    # experiment has no baselines), so the headline is the CNN's own
    assert {"cnn/fold_0_map3", "cnn/fold_1_map3"} <= set(m)
    assert not any(k.startswith(("tta", "blend/")) or "_class_" in k for k in m)
    assert m["oof_map3"] == pytest.approx(m["cnn_oof_map3"])
    assert "public_map3" in m and "private_map3" in m and run.data.params["test.clips_prior_only"] == "1"
    client = MlflowClient()
    arts = {a.path for a in client.list_artifacts(s["run_id"], "plots/cnn")}
    assert {"plots/cnn/per_class_map3.png", "plots/cnn/per_fold_map3.png",
            "plots/cnn/confusion_matrix.png"} <= arts
    # the ensemble's LoggedModel: described, its own params (not the config), its headline
    # metrics linked to it and to the clip table the run logged as its input
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           filter_string=f"source_run_id = '{s['run_id']}'",
                                           output_format="list")
    assert model.tags["mlflow.note.content"].startswith("**TTA ensemble**")
    assert {"folds", "tta_lengths", "blended", "train_key"} <= set(model.params)
    assert not any(k.startswith(("train.", "model.cnn", "data.")) for k in model.params)
    got = {x.key: x for x in model.metrics}
    assert set(got) == {"oof_map3", "oof_accuracy", "cnn_oof_map3", "cnn_oof_accuracy"}
    assert got["oof_map3"].value == pytest.approx(s["oof_map3"])
    (clips,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert got["oof_map3"].dataset_name == clips.name and got["oof_map3"].dataset_digest == clips.digest
    # logged from code: the model's python_model is the code file, nothing pickled
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}"))
    assert (local / "ensemble_model.py").is_file() or any(local.rglob("ensemble_model.py"))
    assert not list(local.rglob("python_model.pkl"))
    # the submission lists every test clip, the empty one included, with three labels
    sub_path = mlflow.artifacts.download_artifacts(run_id=s["run_id"],
                                                   artifact_path="submission/submission.csv")
    import pandas as pd

    sub = pd.read_csv(sub_path)
    data_root = Path(ensemble_tracking.cfg.data.root)
    wavs = sorted(p.name for p in (data_root / "FSDKaggle2018.audio_test").glob("*.wav"))
    assert sorted(sub["fname"]) == wavs and "empty0.wav" in wavs
    assert all(len(set(t.split(" "))) == 3 for t in sub["label"])
    # registered and aliased; the comparison is recorded in the run
    assert s["promotion"]["moved"] and run.data.tags["fsd.alias_moved"] == "true"
    mv = client.get_model_version_by_alias(ensemble_tracking.cfg.ensemble.model_name, "champion")
    assert str(mv.version) == s["promotion"]["version"]
    assert {a.path for a in client.list_artifacts(s["run_id"], "registry")} == {
        "registry/promotion.json"}


def test_incomplete_or_mixed_fold_sets_are_refused(ensemble_tracking):
    import copy

    from fsd.config import ConfigError
    from fsd.entrypoints.ensemble import select_fold_runs

    cfg = ensemble_tracking.cfg
    ids = ensemble_tracking.fold_run_ids
    with pytest.raises(ConfigError, match=r"folds \[1\] are missing"):
        select_fold_runs(cfg, ids[:1])
    with pytest.raises(ConfigError, match="lists a run twice"):
        select_fold_runs(cfg, ids + [ids[0]])
    other = copy.deepcopy(cfg)
    other.folds.n_folds = 3
    with pytest.raises(ConfigError, match="missing"):
        select_fold_runs(other, None)  # no training with this key at all
    assert sorted(select_fold_runs(cfg, ids)) == [0, 1]


def test_fsd_ensemble_command_refuses_an_incomplete_set(ensemble_tracking, caplog):
    from fsd.cli import main

    ids = ensemble_tracking.fold_run_ids
    with caplog.at_level("ERROR"):
        rc = main(["ensemble", "--config", "experiments/demo.yaml", "--fold-runs", ids[1],
                   "--register", "false"])
    assert rc == 2
    assert "folds [0] are missing" in caplog.text
    with caplog.at_level("ERROR"):
        assert main(["ensemble", "--fold-runs", "0123456789abcdef"]) == 2
    assert "not found" in caplog.text


def _bundle(ensemble_tracking):
    import mlflow

    from fsd.ensemble.bundle import Ensemble

    local = Path(mlflow.artifacts.download_artifacts(ensemble_tracking.summary["model_uri"]))
    return Ensemble.load(next(local.rglob("ensemble.json")).parent)


def test_scoring_clips_with_the_wrong_folds_model_changes_the_score(ensemble_tracking):
    """Out of fold means each clip is scored by the model that did not train on it: handing
    the clips to the other fold's model (which trained on them) must change the answer."""
    from fsd.entrypoints.featurize import resolve_store
    from fsd.model.tta import ClipRows

    ensemble = _bundle(ensemble_tracking)
    store, _ = resolve_store(ensemble_tracking.cfg)
    folds = store.index["fold"].to_numpy()
    logmels = ClipRows(store.logmel, range(len(folds)))
    summaries = np.asarray(store.summary)
    right = [np.flatnonzero(folds == f) for f in ensemble.folds]
    wrong = right[::-1]  # two folds: each model scores the clips it trained on
    p_right = ensemble.score(logmels, summaries, members=right).probs()
    p_wrong = ensemble.score(logmels, summaries, members=wrong).probs()
    assert np.abs(p_right - p_wrong).max() > 1e-3
    y = store.index["label_id"].to_numpy()
    assert map_at_k(y, p_right, 3) != map_at_k(y, p_wrong, 3) or \
        not np.allclose(p_right, p_wrong, atol=1e-2)


def test_the_served_model_answers_as_the_ensemble_predicts(ensemble_tracking):
    """The registered pyfunc, fed test clips' raw bytes, returns the probabilities the ensemble
    computes for the same clips from the feature store (float16 there: a small tolerance)."""
    import mlflow
    import pandas as pd

    from fsd.entrypoints.featurize import resolve_store

    ensemble = _bundle(ensemble_tracking)
    store, _ = resolve_store(ensemble_tracking.cfg)
    test = store.open_split("test")
    rows = np.flatnonzero(test.index["frames"].to_numpy() > 0)[:4]  # one request's worth
    names = test.index["fname"].astype(str).to_numpy()[rows]
    want = ensemble.predict([test.logmel(int(i)) for i in rows], np.asarray(test.summary)[rows])
    data_root = Path(ensemble_tracking.cfg.data.root) / "FSDKaggle2018.audio_test"
    model = mlflow.pyfunc.load_model(ensemble_tracking.model_uri)
    served = model.predict(pd.DataFrame({"audio": [(data_root / f).read_bytes() for f in names]}),
                           params={"return_probabilities": True})
    got = served[[f"prob_{c}" for c in ensemble.labels]].to_numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
