"""Batched multi-fold TTA, geometric mean, out-of-fold scoring (stand-in models, no TF), and
the ensemble step end to end on tiny trained folds (tests/conftest_ensemble.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fsd.config import EnsembleConfig
from fsd.evaluation.metrics import map_at_k, reciprocal_ranks
from fsd.evaluation.oof import score_oof
from fsd.model.tta import (
    build_views,
    crop_positions,
    geometric_mean,
    geometric_mean_of,
    predict_ensemble,
    tta_lengths,
)

pytest_plugins = ["conftest_ensemble"]


class StandIn:
    """A deterministic 'network': softmax of a linear map of time-averaged mels (+ PCA).

    Depends on the crop's content and length, so any mix-up of views shows in its output.
    """

    def __init__(self, n_mels: int, n_classes: int, pca_dim: int | None, seed: int):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(n_mels, n_classes)) * 3
        self.v = rng.normal(size=(pca_dim, n_classes)) if pca_dim else None
        self.inputs = [object()] * (2 if pca_dim else 1)
        self.calls: list[tuple] = []

    def predict_on_batch(self, inputs):
        x, p = (inputs if isinstance(inputs, list) else (inputs, None))
        self.calls.append(x.shape)
        z = x[..., 0].mean(axis=1) @ self.w + x.shape[1] / 100.0
        if p is not None:
            z = z + p @ self.v
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _clips(n: int, n_mels: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(5, 60)), n_mels)).astype(np.float32) for _ in range(n)]


def test_geometric_mean_is_normalised_exp_mean_log():
    a = np.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
    b = np.array([[0.1, 0.8, 0.1], [0.5, 0.25, 0.25]])
    g = geometric_mean_of([a, b])
    want = np.sqrt(a * b)
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    np.testing.assert_allclose(g.sum(axis=1), 1, rtol=1e-6)
    # a zero probability is floored, not -inf: the row still ranks and sums to 1
    z = geometric_mean_of([np.array([[1.0, 0.0]]), np.array([[0.5, 0.5]])])
    assert np.isfinite(z).all() and z[0, 0] > z[0, 1]
    # a row no view scored stays uniform
    np.testing.assert_allclose(geometric_mean(np.zeros((1, 4)), np.array([0])), 0.25)


def test_tta_lengths_from_crop_limits_or_config():
    cfg = EnsembleConfig(tta_n_lengths=6)
    assert tta_lengths(cfg, 263, 763) == [263, 363, 463, 563, 663, 763]
    assert tta_lengths(EnsembleConfig(tta_lengths=[100, 50]), 263, 763) == [100, 50]
    assert tta_lengths(EnsembleConfig(tta_n_lengths=1), 100, 200) == [150]
    with pytest.raises(ValueError):
        tta_lengths(cfg, 0, 0)


def test_views_crop_long_and_pad_short_clips():
    long, short = np.arange(20.0).reshape(10, 2), np.ones((3, 2))
    pos = crop_positions([long, short], [6], 3, seed=1)[0]
    v = build_views([long, short], 6, pos)
    assert v.shape == (6, 6, 2, 1)
    for c in range(3):
        crop = v[c, :, :, 0]
        start = int(crop[0, 0]) // 2
        np.testing.assert_array_equal(crop, long[start:start + 6])
        padded = v[3 + c, :, :, 0]
        assert padded.sum() == short.sum() and padded[:, 0].tolist().count(1.0) == 3


def test_folds_batched_equal_the_naive_loop():
    """All folds x lengths x crops batched == one prediction per (fold, clip, length, crop)."""
    clips = _clips(9)
    rng = np.random.default_rng(1)
    models = [StandIn(8, 4, 3, seed=s) for s in (1, 2)]
    pcas = [rng.normal(size=(9, 3)).astype(np.float32) for _ in models]
    lengths, crops = [12, 30], 4
    res = predict_ensemble(models, clips, pcas, lengths, crops, seed=7, batch_size=64)
    pos = crop_positions(clips, lengths, crops, seed=7)
    logs = []
    for m, pca in zip(models, pcas):
        for li, length in enumerate(lengths):
            for c in range(crops):
                for i, clip in enumerate(clips):
                    x = build_views([clip], length, pos[li, i:i + 1, c:c + 1])
                    logs.append((i, np.log(m.predict_on_batch([x, pca[i:i + 1]])[0])))
    want = np.zeros((9, 4))
    for i, lp in logs:
        want[i] += lp
    np.testing.assert_allclose(res.log_sum, want, rtol=1e-5)
    assert (res.count == 2 * 2 * 4).all()
    # one forward call per (fold, length): every crop of every clip in one batch
    assert [len(m.calls) for m in models] == [2 + 9 * 2 * 4] * 2  # batched + the naive loop


def test_members_restrict_each_model_to_its_clips():
    clips = _clips(6)
    models = [StandIn(8, 3, None, seed=s) for s in (3, 4)]
    members = [np.array([0, 2, 4]), np.array([1, 3, 5])]
    res = predict_ensemble(models, clips, [None, None], [20], 2, members=members)
    alone0 = predict_ensemble(models[:1], [clips[i] for i in members[0]], [None], [20], 2)
    assert (res.count == 2).all()
    # crop positions are drawn for all clips, so compare with the same positions via log sums
    assert res.log_sum.shape == (6, 3) and alone0.log_sum.shape == (3, 3)
    assert len(models[0].calls) == 2 and len(models[1].calls) == 1
    assert models[0].calls[0][0] == 3 * 2 and models[1].calls[0][0] == 3 * 2


def test_large_sets_are_built_in_chunks_with_the_same_result():
    clips = _clips(10)
    m = StandIn(8, 3, None, seed=5)
    whole = predict_ensemble([m], clips, [None], [30], 3, seed=2)
    chunked = predict_ensemble([m], clips, [None], [30], 3, seed=2, max_view_bytes=30 * 8 * 4 * 3 * 3)
    np.testing.assert_allclose(whole.log_sum, chunked.log_sum, rtol=1e-6)


def test_oof_scores_per_fold_and_class():
    labels = ["a", "b", "c"]
    y = np.array([0, 0, 1, 2, 2, 1])
    folds = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[.6, .3, .1], [.3, .6, .1], [.1, .2, .7], [.1, .2, .7], [.7, .2, .1],
                      [.2, .5, .3]])
    s = score_oof([f"f{i}" for i in range(6)], y, folds, probs, labels)
    rr = reciprocal_ranks(y, probs)
    np.testing.assert_allclose(rr, [1, .5, .5, 1, 1 / 3, 1])
    assert s.overall == pytest.approx(map_at_k(y, probs, 3))
    assert s.per_fold == pytest.approx({0: (1 + .5 + .5) / 3, 1: (1 + 1 / 3 + 1) / 3})
    assert s.per_class == pytest.approx({"a": .75, "b": (.5 + 1) / 2, "c": (1 + 1 / 3) / 2})
    m = s.metrics()
    assert m["oof_map3"] == s.overall and "tta/fold_1_map3" in m and "tta_class_map3/b" in m
    assert s.metrics(group="oof")["oof/fold_1_map3"] == m["tta/fold_1_map3"]
    assert not any("class" in k for k in s.metrics(group="cnn", per_class=False))
    assert s.fold_metrics("cnn") == {"cnn/fold_0_map3": s.per_fold[0], "cnn/fold_1_map3": s.per_fold[1],
                                     "cnn/fold_0_accuracy": s.per_fold_accuracy[0],
                                     "cnn/fold_1_accuracy": s.per_fold_accuracy[1]}
    assert s.frame["pred_1"].tolist()[:2] == ["a", "b"]


# --- the ensemble step end to end on tiny trained folds -----------------------------------


def test_ensemble_step_scores_logs_submits_and_registers(ensemble_tracking):
    import mlflow
    from mlflow.tracking import MlflowClient

    s = ensemble_tracking.summary
    assert 0.0 <= s["oof_map3"] <= 1.0
    run = mlflow.get_run(s["run_id"])
    m = run.data.metrics
    assert m["oof_map3"] == pytest.approx(s["oof_map3"], abs=5e-5)
    # a few metrics, each a chart that compares runs (no blend here: the session's experiment
    # has no baselines, so the headline is the CNN's own); per-fold figures are one table,
    # timings and the folds' own mean validation params; figures rounded to what they resolve
    from fsd.entrypoints.ensemble import MAX_RUN_METRICS

    assert set(m) == {"oof_map3", "oof_accuracy", "cnn_oof_map3", "cnn_oof_accuracy",
                      "test_map3", "public_map3", "private_map3"} and len(m) <= MAX_RUN_METRICS
    assert int(run.data.params["test.n_scored"]) > 0  # a count: a param
    assert m["oof_map3"] == pytest.approx(m["cnn_oof_map3"])
    assert all(v == round(v, 4) for v in m.values())
    p = run.data.params
    assert float(p["perf.oof_clips_per_s"]) > 0 and len(p["perf.oof_clips_per_s"].replace(
        ".", "").lstrip("0").rstrip("0")) <= 3
    assert 0 <= float(p["folds_mean.val_map3"]) <= 1
    import pandas as pd

    per_fold = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=s["run_id"], artifact_path="oof/per_fold.csv"))
    assert list(per_fold["fold"]) == [0, 1] and {"cnn_map3", "cnn_accuracy"} <= set(per_fold)
    # MAP@3 is a mean over clips: the folds' figures weighted by their clips give the whole
    weighted = (per_fold["cnn_map3"] * per_fold["clips"]).sum() / per_fold["clips"].sum()
    assert weighted == pytest.approx(m["cnn_oof_map3"], abs=1e-4)
    # no bare @word in the run's description (MLflow's Markdown makes it a GitHub link)
    import re

    note = run.data.tags["mlflow.note.content"]
    assert not re.search(r"(?<![\w`@/.])@\w", re.sub(r"`[^`]*`", "", note))
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
    assert got["oof_map3"].value == pytest.approx(s["oof_map3"], abs=5e-5)
    (clips,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert got["oof_map3"].dataset_name == clips.name and got["oof_map3"].dataset_digest == clips.digest
    # logged from code: the model's python_model is the code file, nothing pickled
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}"))
    assert (local / "ensemble_model.py").is_file() or any(local.rglob("ensemble_model.py"))
    assert not list(local.rglob("python_model.pkl"))
    # the submission lists every test clip, the empty one included, with three labels
    sub_path = mlflow.artifacts.download_artifacts(run_id=s["run_id"],
                                                   artifact_path="submission/submission.csv")
    sub = pd.read_csv(sub_path)
    data_root = Path(ensemble_tracking.cfg.data.root)
    wavs = sorted(p.name for p in (data_root / "FSDKaggle2018.audio_test").glob("*.wav"))
    assert sorted(sub["fname"]) == wavs and "empty0.wav" in wavs
    assert all(len(set(t.split(" "))) == 3 for t in sub["label"])
    # registered and aliased; the comparison is recorded in the run
    assert s["promotion"]["moved"] and run.data.tags["fsd.alias_moved"] == "true"
    mv = client.get_model_version_by_alias(ensemble_tracking.cfg.ensemble.model_name, "champion")
    assert str(mv.version) == s["promotion"]["version"]
    # the registry's lists show a description's first line raw: plain text, no Markdown
    first = mv.description.splitlines()[0]
    assert first.startswith("Out-of-fold MAP@3 ") and not re.search(r"[*`_\[]", first)
    registered = client.get_registered_model(ensemble_tracking.cfg.ensemble.model_name)
    assert not re.search(r"[*`_\[]", registered.description.splitlines()[0])
    for text in (mv.description, registered.description, model.tags["mlflow.note.content"]):
        assert not re.search(r"(?<![\w`@/.])@\w", re.sub(r"`[^`]*`", "", text))
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


def test_lazy_clip_rows_give_the_same_scores():
    from fsd.model.tta import ClipRows

    clips = _clips(8)
    fetched = []

    def fetch(i):
        fetched.append(i)
        return clips[i].astype(np.float16)  # as a float16 store hands them out

    m = StandIn(8, 3, None, seed=6)
    eager = predict_ensemble([m], [c.astype(np.float16).astype(np.float32) for c in clips],
                             [None], [15, 30], 2, seed=1)
    lazy = predict_ensemble([m], ClipRows(fetch, range(8)), [None], [15, 30], 2, seed=1)
    np.testing.assert_allclose(lazy.log_sum, eager.log_sum, rtol=1e-6)
    assert set(fetched) == set(range(8))


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
