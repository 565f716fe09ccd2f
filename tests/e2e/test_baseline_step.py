"""`fsd baseline` through `mlflow run`, and the ensemble step blending the session's trained folds
with the baseline that blends best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_fsd_baseline_logs_one_run_per_model_and_skips_when_done(tmp_path, caplog):
    from launch import mlflow_run
    from mlflow.tracking import MlflowClient

    from fsd.cli import main

    common = [f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out",
              "data.synthetic_clips_per_class=4", "pca.n_components=4", "baseline.hgb_max_iter=10",
              "baseline.models=[logreg,hgb,vote]"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        assert main(["featurize", "--config", "experiments/demo.yaml", "tracking.experiment=it",
                     *common]) == 0
    out = mlflow_run("baseline", tmp_path, "config=experiments/demo.yaml",
                     "overrides=" + " ".join(common))
    assert out.returncode == 0, out.stderr[-3000:]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("it")
    (featurized,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'featurize'")
    (group,) = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'baselines'")
    runs = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'baseline'")
    assert sorted(r.data.tags["fsd.baseline"] for r in runs) == ["hgb", "logreg", "vote"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == group.info.run_id
        assert r.data.tags["fsd.features_run"] == featurized.info.run_id
        assert r.data.tags["fsd.store_key"] == featurized.data.tags["fsd.store_key"]
        m = r.data.metrics
        assert 0 <= m["oof_map3"] <= 1 and 0 <= m["oof_accuracy"] <= 1
        # per fold: one table, timings: params; the metrics are the few that compare runs
        assert not [k for k in m if "/" in k] and float(r.data.params["perf.fit_seconds"]) >= 0
        assert not any("_class_" in k for k in m)  # per class: oof/oof_per_class.csv
        assert r.data.tags["fsd.at_chance"] in ("true", "false")
        # the final estimator is the run's scikit-learn LoggedModel, its scores linked to it
        # and to the clip table the run logged as its input
        (lm,) = client.search_logged_models(experiment_ids=[exp.experiment_id],
                                            filter_string=f"source_run_id = '{r.info.run_id}'")
        assert lm.model_type == "sklearn" and lm.name == f"baseline-{r.data.tags['fsd.baseline']}"
        assert lm.tags["mlflow.note.content"].startswith("**baseline ")
        assert {x.key for x in lm.metrics} == {"oof_map3", "oof_accuracy", "oof_ap_macro"}
        (clips,) = [d.dataset for d in r.inputs.dataset_inputs]
        assert {x.dataset_name for x in lm.metrics} == {clips.name}
        assert "n_clips" not in m and int(r.data.params["fit.n_clips"]) > 0  # a count: a param
        assert r.data.tags["mlflow.note.content"].startswith(f"**baseline {r.data.tags['fsd.baseline']}**")
        arts = {a.path for p in ("plots", "oof", "model")
                for a in client.list_artifacts(r.info.run_id, p)}
        assert {"plots/confusion_matrix.png", "oof/oof_probabilities.csv", "oof/per_fold.csv",
                "model/baseline.joblib"} <= arts
        probs = pd.read_csv(client.download_artifacts(r.info.run_id, "oof/oof_probabilities.csv",
                                                      str(tmp_path / r.info.run_id)))
        assert list(probs.columns[:2]) == ["fname", "label"] and len(probs.columns) == 2 + 6
    assert group.data.tags["fsd.best_baseline"] in ("hgb", "logreg", "vote")

    # the same command again (here in-process): both models are reused, nothing is fitted
    again = ["baseline", "--config", "experiments/demo.yaml", "tracking.experiment=it", *common]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        with caplog.at_level("INFO", logger="fsd"):
            assert main(again) == 0
        assert caplog.text.count("reused") == 3
        assert len(client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'baseline'")) == 3
        # a changed setting of one model refits that model only
        assert main(again + ["baseline.logreg_c=1.0"]) == 0
    runs = client.search_runs([exp.experiment_id], "tags.`fsd.stage` = 'baseline'")
    # the vote's logreg member has its own scaler, but logreg_c is its too: it refits as well
    assert sorted(r.data.tags["fsd.baseline"] for r in runs) == ["hgb", "logreg", "logreg",
                                                                 "vote", "vote"]


@pytest.mark.slow
def test_ensemble_blends_with_the_baseline_that_blends_best(ensemble_tracking, tmp_path):
    """On the session's two trained folds: baselines in a separate experiment, then the
    ensemble step tries each, blends with the best blend, logs it, and bundles, predicts and
    submits the blend."""
    import copy

    import mlflow

    from fsd.ensemble.bundle import Ensemble
    from fsd.entrypoints.baseline import baselines_logged
    from fsd.entrypoints.ensemble import build_ensemble
    from fsd.entrypoints.featurize import resolve_store

    cfg = copy.deepcopy(ensemble_tracking.cfg)
    cfg.tracking.experiment = "enstest-blend"  # the session's experiment stays blend-free
    cfg.baseline.models = ["logreg", "extratrees"]
    cfg.baseline.extratrees_n_estimators = 30
    cfg.ensemble.blend_rule = "best"  # the pair with the best pooled blend (majority: below)
    features_run = mlflow.get_run(ensemble_tracking.fold_run_ids[0]).data.tags["fsd.features_run"]
    store, features_run = resolve_store(cfg, features_run)
    runs = baselines_logged(cfg, store, features_run, progress=False)
    base_run = mlflow.get_run(runs["logreg"])
    assert base_run.data.tags["fsd.stage"] == "baseline"

    s = build_ensemble(cfg, ensemble_tracking.fold_run_ids, register=False)
    run = mlflow.get_run(s["run_id"])
    assert run.info.experiment_id == base_run.info.experiment_id
    m, tags = run.data.metrics, run.data.tags
    assert {"blend_weight", "blend_insample_oof_map3", "best_baseline_oof_map3",
            "cnn_oof_map3", "cnn_oof_accuracy", "oof_accuracy"} <= set(m)
    assert 0 <= float(run.data.params["blend.insample_oof_accuracy"]) <= 1
    candidates = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="blend/blend_candidates.csv", dst_path=str(tmp_path)))
    assert sorted(candidates["baseline"]) == ["extratrees", "logreg"]
    best = candidates.loc[candidates["blend_insample_oof_map3"].idxmax()]
    assert tags["fsd.blend_baseline_run"] == runs[best["baseline"]] == best["run_id"]
    # metrics are logged rounded to 4 decimals (what MAP@3 on these clips resolves)
    assert m["blend_insample_oof_map3"] == pytest.approx(best["blend_insample_oof_map3"],
                                                          abs=5e-5)
    for name, rid in runs.items():
        assert m["blend_insample_oof_map3"] >= max(
            m["cnn_oof_map3"], mlflow.get_run(rid).data.metrics["oof_map3"]) - 1e-4
    # at most 10 metrics, each a chart that compares runs; per fold: one table
    from fsd.entrypoints.ensemble import MAX_RUN_METRICS

    assert len(m) <= MAX_RUN_METRICS and not [k for k in m if "/" in k]
    blended = m["blend_weight"] < 1
    assert run.data.params["ensemble.blended"] == str(blended).lower()
    assert run.data.params["blend.rule"] == "best"
    # @champion's floor: the best baseline alone on the same clips
    assert m["best_baseline_oof_map3"] == pytest.approx(max(
        mlflow.get_run(rid).data.metrics["oof_map3"] for rid in runs.values()), abs=5e-5)
    # the CNN's out-of-fold probabilities, as a baseline logs its own (fname, label, classes)
    cnn_probs = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="oof/oof_cnn_probabilities.csv",
        dst_path=str(tmp_path)))
    labels = list(cnn_probs.columns[2:])
    y = np.array([labels.index(v) for v in cnn_probs["label"]])
    from fsd.evaluation.metrics import map_at_k

    assert map_at_k(y, cnn_probs[labels].to_numpy(), 3) == pytest.approx(m["cnn_oof_map3"],
                                                                         abs=5e-5)
    # the headline scores the nested procedure: each fold's (baseline, weight) chosen on the
    # other fold, its clips scored with that choice
    nested = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="blend/nested_choices.csv", dst_path=str(tmp_path)))
    assert sorted(nested["fold"]) == [0, 1]
    per_fold = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="oof/per_fold.csv", dst_path=str(tmp_path)))
    for row in nested.itertuples():
        got = per_fold.loc[per_fold["fold"] == row.fold, "blend_map3"].item()
        assert got == pytest.approx(row.held_out_map3)
        assert row.baseline in ("extratrees", "logreg")
    clips = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="oof/oof_blend.csv", dst_path=str(tmp_path)))
    assert m["oof_map3"] == pytest.approx(clips["rr"].mean(), abs=5e-5)
    per_class = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="oof/oof_per_class.csv", dst_path=str(tmp_path)))
    assert {"label", "clips", "cnn_map3", "blend_map3"} <= set(per_class.columns)
    weights = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="blend/blend_weights.csv", dst_path=str(tmp_path)))
    assert all(len(repr(float(w))) <= 5 for w in weights["weight"])  # 0.15, not 0.15000000000000002
    from fsd.entrypoints.ensemble import logged_model_name

    name = logged_model_name(cfg.ensemble.model_name)  # the logged model: named, not "model"
    local = mlflow.artifacts.download_artifacts(run_id=s["run_id"],
                                                artifact_path=f"{name}/artifacts/bundle",
                                                dst_path=str(tmp_path))
    e = Ensemble.load(local)
    assert e.blended == blended
    if blended:
        assert e.info.blend_weight == pytest.approx(m["blend_weight"], abs=5e-5)
        # the test probabilities logged are the bundle's blended predictions
        test = store.open_split("test")
        rows = np.flatnonzero(test.index["frames"].to_numpy() > 0)
        from fsd.model.tta import ClipRows

        want = e.predict(ClipRows(test.logmel, rows), np.asarray(test.summary)[rows])
        got = pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=s["run_id"], artifact_path="test/test_probabilities.csv",
            dst_path=str(tmp_path / "t")))
        np.testing.assert_allclose(got[e.labels].to_numpy(), want, rtol=1e-4, atol=1e-6)
