"""Baselines on the summary features (out of fold, on the store's folds), the CNN + baseline blend
and its weight, and the blended bundle; in process, on stores built in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsd.baseline import BaselineModel, oof_probabilities, run_baseline, usable_rows
from fsd.config import BaselineConfig
from fsd.evaluation.blend import align_probabilities, blend, choose_weight
from fsd.evaluation.metrics import map_at_k

FAST = BaselineConfig(hgb_max_iter=15, logreg_max_iter=500, extratrees_n_estimators=40)


class Store:
    """What the baselines read from a feature store: index, labels, summary."""

    def __init__(self, index: pd.DataFrame, labels: list[str], summary: np.ndarray):
        self.index, self.labels, self.summary = index, labels, summary


def learnable(n: int = 90, n_classes: int = 3, dim: int = 10, n_folds: int = 3, seed: int = 0,
              signal: float = 2.0) -> Store:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[np.arange(n), y] += signal  # class c lifts feature c
    index = pd.DataFrame({"fname": [f"c{i:03d}.wav" for i in range(n)], "label_id": y,
                          "label": [f"k{c}" for c in y], "fold": rng.permutation(n) % n_folds,
                          "frames": rng.integers(5, 50, n), "ok": True})
    return Store(index, [f"k{c}" for c in range(n_classes)], x)


def chance_map3(n_classes: int) -> float:
    """MAP@3 of a random ranking: the label is at rank 1, 2 or 3 with probability 1/n each."""
    return sum(1 / r for r in range(1, min(3, n_classes) + 1)) / n_classes


@pytest.mark.parametrize("name", ["logreg", "hgb", "svc", "extratrees", "vote"])
def test_oof_beats_chance_on_a_learnable_store(name):
    store = learnable(n=120, n_classes=4)
    r = run_baseline(store, name, FAST)
    assert r.probs.shape == (120, 4) and np.allclose(r.probs.sum(axis=1), 1, atol=1e-5)
    assert r.oof_map3 > chance_map3(4) + 0.2, r.oof_map3
    assert r.oof_map3 == pytest.approx(map_at_k(r.y, r.probs, 3))
    assert 0 < r.oof_accuracy <= 1 and sorted(r.scores.per_fold) == [0, 1, 2]
    m = r.metrics()
    assert {"oof_map3", "oof_accuracy", "oof/fold_0_map3", "oof/fold_2_map3", "oof_ap_macro",
            "perf/fit_seconds", "perf/final_fit_seconds"} <= set(m)
    assert not any("class" in k for k in m)  # per class: a table, not a metric per label
    assert not any(k.startswith("tta") for k in m)  # a baseline scores without TTA
    assert r.params() == {"fit.n_clips": len(r.y), "fit.n_skipped": r.skipped,
                          "fit.n_features": r.n_features}
    frame = r.probabilities_frame()
    assert list(frame.columns) == ["fname", "label", "k0", "k1", "k2", "k3"]
    assert frame["fname"].tolist() == store.index["fname"].tolist()
    assert {"label", "map3", "clips", "ap"} <= set(r.per_class_frame().columns)
    assert r.model is not None and r.model.predict_proba(store.summary[:5]).shape == (5, 4)


def test_memory_store_random_is_learnable_out_of_fold():
    from fsd.train.batches import MemoryStore

    s = MemoryStore.random(n_clips=90, n_classes=3, n_folds=3, frames=(5, 10), n_mels=4,
                           summary_dim=8, seed=1)
    s.summary[:, 0] += 2 * s.index["label_id"].to_numpy()  # a stronger class signal
    r = run_baseline(s, "logreg", FAST, final=False)
    assert r.oof_map3 > chance_map3(3) + 0.2 and r.model is None


def test_no_clip_is_scored_by_a_model_that_trained_on_it():
    """The fold loop, spied on: a fold's clips are never among its model's training clips."""
    store = learnable(n=40)
    x, y = store.summary, store.index["label_id"].to_numpy()
    folds = store.index["fold"].to_numpy()
    seen: list[set[bytes]] = []

    class Spy:
        def __init__(self, xt):
            self.train = {row.tobytes() for row in xt}

        def predict_proba(self, xs):
            assert not ({row.tobytes() for row in xs} & self.train), "a scored clip was trained on"
            return np.full((len(xs), 3), 1 / 3, np.float32)

    def fit(xt, yt):
        seen.append({row.tobytes() for row in xt})
        return Spy(xt)

    oof_probabilities(x, y, folds, 3, fit)
    assert len(seen) == 3
    for f, train in zip(sorted(set(folds)), seen):
        assert len(train) == int((folds != f).sum())


def test_out_of_fold_scores_are_not_in_sample_scores():
    """On pure noise with more features than clips a model memorises its training clips: in
    sample it ranks every label first, out of fold it is at chance. A leak (a fold's model
    trained on its own clips) would make the OOF score the in-sample one and fail this."""
    rng = np.random.default_rng(3)
    n, c = 60, 4
    index = pd.DataFrame({"fname": [f"n{i}" for i in range(n)], "label_id": np.arange(n) % c,
                          "fold": rng.permutation(n) % 3, "frames": 10, "ok": True})
    store = Store(index, [f"k{i}" for i in range(c)], rng.normal(size=(n, 300)).astype(np.float32))
    memorise = BaselineConfig(logreg_c=100.0, logreg_max_iter=500)
    r = run_baseline(store, "logreg", memorise)
    in_sample = map_at_k(r.y, r.model.predict_proba(store.summary), 3)
    assert in_sample > 0.99 and r.final_train_map3 == pytest.approx(in_sample)
    assert r.oof_map3 < chance_map3(c) + 0.15, (r.oof_map3, in_sample)


def test_unusable_clips_bad_values_and_absent_classes():
    store = learnable(n=60, n_classes=3)
    store.index.loc[[0, 1], "frames"] = 0  # no features
    store.index.loc[2, "ok"] = False
    assert usable_rows(store.index).tolist() == list(range(3, 60))
    store.summary[5, 1] = np.nan
    store.summary[6, 2] = np.inf
    store.summary[7, 3] = -np.inf
    # class 2 only in fold 0: fold 0's model never sees it, yet keeps its column (0 there)
    y = store.index["label_id"].to_numpy()
    store.index.loc[y == 2, "fold"] = 0
    r = run_baseline(store, "logreg", FAST)
    assert r.skipped == 3 and len(r.fnames) == 57 and "c000.wav" not in r.fnames
    assert np.isfinite(r.probs).all() and r.probs.shape == (57, 3)
    fold0 = r.folds == 0
    assert (r.probs[fold0, 2] == 0).all() and (r.probs[~fold0, 2] > 0).all()
    assert np.isfinite(r.model.predict_proba(np.full((2, 10), np.nan))).all()


@pytest.mark.parametrize("name", ["hgb", "vote"])
def test_baseline_model_saves_and_loads(tmp_path, name):
    store = learnable(n=30)
    y = store.index["label_id"].to_numpy()
    m = BaselineModel.fit_new(name, FAST, store.summary, y, 3, store.labels)
    back = BaselineModel.load(m.save(tmp_path / "b.joblib"))
    np.testing.assert_array_equal(back.predict_proba(store.summary), m.predict_proba(store.summary))
    assert back.labels == store.labels and back.name == name
    with pytest.raises(ValueError, match="fitted on 10 features"):
        back.predict_proba(store.summary[:, :4])


def test_the_vote_is_the_mean_of_its_members_with_the_vote_scaler():
    """Each member fitted alone (quantile-scaled where the vote says so) and averaged gives the
    vote's probabilities; a member left out or scaled differently would not."""
    import dataclasses

    store = learnable(n=90, n_classes=3, signal=1.0)
    x, y = store.summary, store.index["label_id"].to_numpy()
    vote = BaselineModel.fit_new("vote", FAST, x, y, 3, store.labels).predict_proba(x)
    as_voted = dataclasses.replace(FAST, logreg_scaler=FAST.vote_scaler)
    members = [BaselineModel.fit_new(m, as_voted, x, y, 3, store.labels).predict_proba(x)
               for m in FAST.vote_members]
    np.testing.assert_allclose(vote, np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    standard = BaselineModel.fit_new("logreg", FAST, x, y, 3, store.labels).predict_proba(x)
    assert not np.allclose(standard, members[0], atol=1e-3)  # the vote's logreg is quantile-scaled


@pytest.mark.parametrize("name", ["svc", "vote"])
def test_a_class_with_one_clip_still_fits(name):
    """The SVC's calibration splits each class; a class of one clip cannot be split."""
    store = learnable(n=31, n_classes=3)
    y = store.index["label_id"].to_numpy().copy()
    y[y == 2] = 0
    y[0] = 2  # class 2: one clip
    m = BaselineModel.fit_new(name, FAST, store.summary, y, 3, store.labels)
    p = m.predict_proba(store.summary)
    assert p.shape == (31, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


def test_bad_baseline_settings_name_the_valid_ones():
    from fsd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="logreg, hgb, svc, extratrees, vote"):
        load_config("experiments/demo.yaml", ["baseline.models=[logreg,svm]"])
    with pytest.raises(ConfigError, match="baseline.vote_members"):
        load_config("experiments/demo.yaml", ["baseline.vote_members=[vote]"])
    with pytest.raises(ConfigError, match="standard or quantile"):
        load_config("experiments/demo.yaml", ["baseline.vote_scaler=minmax"])


def test_blend_weight_one_zero_and_interior():
    y = np.array([0, 1])
    # barely right, and confidently wrong: any share of the wrong one flips both clips
    right = np.array([[0.5, 0.49, 0.01], [0.49, 0.5, 0.01]])
    wrong = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    only_cnn = choose_weight(y, right, wrong, 20)
    assert only_cnn.weight == 1.0 and only_cnn.score == 1.0 and only_cnn.scores[-2] == 0.5
    only_base = choose_weight(y, wrong, right, 20)
    assert only_base.weight == 0.0 and only_base.score == 1.0 and only_base.accuracy == 1.0
    assert only_base.scores[1] == 0.5
    # each alone gets one clip wrong; any w in (1/11, 10/11) gets both: the largest is 0.9
    cnn = np.array([[0.45, 0.55, 0.0], [0.0, 1.0, 0.0]])
    base = np.array([[1.0, 0.0, 0.0], [0.55, 0.45, 0.0]])
    c = choose_weight(y, cnn, base, 20)
    assert c.weight == pytest.approx(0.9) and c.score == 1.0
    assert c.scores[0] == c.scores[-1] == 0.75 and len(c.weights) == 21
    np.testing.assert_allclose(blend(cnn, base, 0.9), 0.9 * cnn + 0.1 * base, rtol=1e-6)
    # everything ties: the larger w (the CNN) wins
    assert choose_weight(y, right, right, 4).weight == 1.0
    assert list(c.table().columns) == ["weight", "map3"]


def test_baseline_rows_are_aligned_by_file_name():
    frame = pd.DataFrame({"fname": ["b", "a", "c"], "label": ["y", "x", "x"],
                          "y": [0.9, 0.2, 0.3], "x": [0.1, 0.8, 0.7]})
    probs, found = align_probabilities(frame, ["a", "zz", "b"], ["x", "y"])
    np.testing.assert_allclose(probs, [[0.8, 0.2], [0, 0], [0.1, 0.9]])
    assert found.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="differ"):
        align_probabilities(frame, ["a"], ["x", "y", "z"])


def _tiny_bundle(tmp_path: Path, n_classes: int = 3):
    """A one-fold bundle with a tiny Keras model (mean over time -> softmax) and the default
    feature settings, so real audio can go through the request path."""
    keras = pytest.importorskip("keras")
    from fsd.config import Config
    from fsd.ensemble.bundle import BundleInfo, FoldFiles, build_bundle

    cfg = Config()
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, cfg.logmel.n_mels, 1))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(n_classes, activation="softmax")(keras.layers.Dense(8)(x))
    path = tmp_path / "m.keras"
    keras.Model(inp, out).save(path)
    labels = [f"k{c}" for c in range(n_classes)]
    info = BundleInfo(labels=labels, tta_lengths=[20, 40], tta_crops=2, seed=0, top_k=3,
                      batch_size=64, crop_min=20, crop_max=40, prior=[1 / n_classes] * n_classes,
                      max_request_clips=4, max_clip_bytes=2_000_000)
    return build_bundle(tmp_path / "bundle", [FoldFiles(fold=0, model=path)], cfg, info), labels


def test_blended_bundle_predicts_the_blend_and_serves_it(tmp_path):
    import json

    from fsd.ensemble.bundle import BundleError, Ensemble, attach_baseline
    from fsd.serving.pyfunc import example_wav
    from fsd.serving.requests import clip_features, score_request

    bundle, labels = _tiny_bundle(tmp_path)
    rng = np.random.default_rng(0)
    manifest = json.loads((bundle / "ensemble.json").read_text())
    assert manifest["format"] == 1 and "baseline" not in manifest and "blend_weight" not in manifest
    plain = Ensemble.load(bundle)
    assert not plain.blended

    train = rng.normal(size=(60, 1133)).astype(np.float32)
    base = BaselineModel.fit_new("logreg", FAST, train, np.arange(60) % 3, 3, labels)
    attach_baseline(bundle, base.save(tmp_path / "baseline.joblib"), 0.3, name="logreg",
                    run_id="r1")
    e = Ensemble.load(bundle)
    assert e.blended and e.info.blend_weight == 0.3 and e.info.baseline["run_id"] == "r1"

    logmels = [rng.random((int(rng.integers(10, 60)), 64)).astype(np.float32) for _ in range(5)]
    summaries = rng.normal(size=(5, 1133)).astype(np.float32)
    cnn = e.score(logmels, summaries).probs()
    want = 0.3 * cnn + 0.7 * base.predict_proba(summaries)
    np.testing.assert_allclose(e.predict(logmels, summaries), want, rtol=1e-5, atol=1e-6)
    # the bundle without a baseline is the CNN alone, exactly as before
    np.testing.assert_allclose(plain.predict(logmels, summaries), cnn, rtol=1e-6)
    with pytest.raises(BundleError, match="summary features"):
        e.predict(logmels, None)

    # the served path (raw audio -> features -> predict) answers with the blend
    wav = example_wav(seconds=1.0)
    out = score_request(e, pd.DataFrame({"audio": [wav]}), {"return_probabilities": True})
    mels, summ = clip_features([wav], e.cfg)
    served = out[[f"prob_{c}" for c in labels]].to_numpy()
    blended = 0.3 * e.score(mels, summ).probs() + 0.7 * base.predict_proba(summ)
    np.testing.assert_allclose(served, blended, rtol=1e-5, atol=1e-6)


def test_a_bundle_naming_a_missing_baseline_is_refused(tmp_path):
    import json

    from fsd.ensemble.bundle import BundleError, Ensemble, read_manifest

    bundle, _ = _tiny_bundle(tmp_path)
    manifest = read_manifest(bundle)
    manifest.update({"format": 2, "blend_weight": 0.5,
                     "baseline": {"name": "logreg", "path": "baseline/baseline.joblib"}})
    (bundle / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="missing"):
        Ensemble.load(bundle)
    manifest.pop("baseline")
    (bundle / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="without a baseline"):
        read_manifest(bundle)


def test_the_clip_cap_keeps_every_class_in_its_share_and_is_seeded():
    from fsd.baseline.model import stratified_cap

    y = np.repeat(np.arange(5), [100, 50, 20, 3, 1])
    rows = stratified_cap(y, 40, seed=0)
    kept = np.bincount(y[rows], minlength=5)
    assert kept.tolist() == [23, 12, 5, 1, 1]  # each class's share, rounded up, never 0
    assert np.array_equal(rows, stratified_cap(y, 40, seed=0))
    assert not np.array_equal(rows, stratified_cap(y, 40, seed=1))
    assert np.array_equal(stratified_cap(y, 0, seed=0), np.arange(len(y)))  # 0: no cap
    assert np.array_equal(stratified_cap(y, 500, seed=0), np.arange(len(y)))  # not smaller


def test_the_svc_fits_on_at_most_svc_max_clips_alone_and_in_the_vote(tmp_path):
    import dataclasses

    from fsd.baseline.model import ClipCap

    store = learnable(n=120, n_classes=3, signal=2.0)
    x, y = store.summary, store.index["label_id"].to_numpy()
    capped = dataclasses.replace(FAST, svc_max_clips=30)
    svc = BaselineModel.fit_new("svc", capped, x, y, 3, store.labels)
    assert isinstance(svc.estimator, ClipCap)
    assert sum(svc.estimator.estimator_[-1].calibrated_classifiers_[0].estimator.n_support_) <= 33
    assert map_at_k(y, svc.predict_proba(x)) > chance_map3(3) + 0.2
    assert svc.params["max_clips"] == 30  # part of the model's key: a cap change refits
    vote = BaselineModel.fit_new("vote", capped, x, y, 3, store.labels)
    members = dict(vote.estimator.named_estimators_)
    assert isinstance(members["svc"], ClipCap) and not isinstance(members["logreg"], ClipCap)
    back = BaselineModel.load(vote.save(tmp_path / "v.joblib"))
    np.testing.assert_array_equal(back.predict_proba(x), vote.predict_proba(x))
    uncapped = BaselineModel.fit_new("svc", dataclasses.replace(FAST, svc_max_clips=0), x, y, 3)
    assert not isinstance(uncapped.estimator, ClipCap)


def test_extratrees_grow_at_most_max_leaf_nodes_leaves_and_zero_means_unbounded():
    import dataclasses

    from fsd.config import ConfigError, from_dict

    store = learnable(n=200, n_classes=4, signal=1.0)
    x, y = store.summary, store.index["label_id"].to_numpy()
    capped = BaselineModel.fit_new("extratrees", dataclasses.replace(FAST, extratrees_max_leaf_nodes=8),
                                   x, y, 4, store.labels)
    assert max(t.tree_.n_leaves for t in capped.estimator.estimators_) <= 8
    assert capped.params["max_leaf_nodes"] == 8  # part of the model's key: a cap change refits
    assert map_at_k(y, capped.predict_proba(x)) > chance_map3(4) + 0.2
    full = BaselineModel.fit_new("extratrees", dataclasses.replace(FAST, extratrees_max_leaf_nodes=0),
                                 x, y, 4, store.labels)
    assert max(t.tree_.n_leaves for t in full.estimator.estimators_) > 8
    with pytest.raises(ConfigError, match="extratrees_max_leaf_nodes"):
        from_dict({}, ["baseline.extratrees_max_leaf_nodes=1"])
