"""Combine the fold models of one training into a TTA ensemble, score it, register it.

Finds the fold runs of one training (same training key; or exactly the runs given with
--fold-runs) and refuses an incomplete or mixed set. Downloads each fold's model and scaler+PCA,
scores every train clip out of fold with the recipe's test-time augmentation (folds x lengths x
random crops, geometric mean) and logs MAP@3 overall, per fold and per class with plots. Where
the dataset has test clips it writes a Kaggle submission (every test clip, three labels; a clip
without features gets the training prior's top 3) and scores it where test labels exist
(public/private MAP@3). Logs the whole ensemble as an MLflow pyfunc that takes raw audio and
registers it; the alias (e.g. ``champion``) moves only when the out-of-fold MAP@3 beats the
holder's, and the comparison is recorded in the run.

With ``ensemble.blend`` and finished baseline runs on the same feature store (``fsd
baseline``), one baseline is blended in: ``p = w * cnn + (1 - w) * baseline``. For each
baseline, ``w`` is chosen on both out-of-fold predictions (aligned by file name) over
``ensemble.blend_steps + 1`` values in [0, 1] (ties: the larger ``w``); the baseline whose
blend scores best out of fold is kept (``blend/blend_candidates.csv`` lists them all). The headline
``oof_map3``/``oof_accuracy``, the alias comparison, the test predictions and the served model
are then the blend's (param ``ensemble.blended=true``); ``cnn_oof_map3``/``cnn_oof_accuracy``
keep the CNN's own. A weight of 1 blends nothing: the bundle stays CNN-only.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from fsd import tracking
from fsd.config import Config, ConfigError, load_config
from fsd.entrypoints.featurize import resolve_store
from fsd.entrypoints.flags import parse_flag
from fsd.entrypoints.train_fold import FOLD_ARTIFACT, fold_runs
from fsd.train.metrics import reciprocal_ranks

HELP = "TTA ensemble of a training's folds: out-of-fold MAP@3, submission, registered pyfunc"
log = logging.getLogger(__name__)

TAG_FOLD_RUNS = "fsd.fold_runs"
TAG_BLENDED = "fsd.blended"
TAG_BLEND_RUN = "fsd.blend_baseline_run"
TAG_BLEND_MODEL = "fsd.blend_baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fold-runs", default="",
                   help="comma-separated fold run ids (default: the newest finished run of each "
                        "fold with this config's training key)")
    p.add_argument("--register", nargs="?", const="true", default="true", type=parse_flag,
                   help="register the model under ensemble.model_name and move ensemble.alias "
                        "when it beats the holder (default: %(default)s)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    ids = [r.strip() for r in (args.fold_runs or "").split(",") if r.strip()]
    result = build_ensemble(cfg, ids or None, register=args.register)
    log.info("ensemble run %s: out-of-fold MAP@3 %.4f%s", result["run_id"], result["oof_map3"],
             f"; {result['promotion']['reason']}" if result.get("promotion") else "")
    return 0


def select_fold_runs(cfg: Config, run_ids: list[str] | None) -> dict[int, mlflow.entities.Run]:
    """The fold runs to combine; refuses duplicates, mixed trainings and mixed features."""
    if run_ids and len(set(run_ids)) != len(run_ids):
        raise ConfigError(f"--fold-runs lists a run twice: {run_ids}")
    if run_ids:
        folds = [_get_run(r).data.tags.get(tracking.TAG_FOLD) for r in run_ids]
        dup = sorted({f for f in folds if folds.count(f) > 1}, key=str)
        if dup:
            raise ConfigError(f"--fold-runs gives more than one run for fold(s) {dup}")
        if None in folds:
            raise ConfigError(f"run {run_ids[folds.index(None)]} is not a train_fold run "
                              "(no fsd.fold tag)")
    runs = fold_runs(cfg, run_ids)
    feats = {r.data.tags.get(tracking.TAG_FEATURES_RUN, "") for r in runs.values()}
    if len(feats) != 1:
        raise ConfigError(f"fold runs were trained on different featurize runs {sorted(feats)}; "
                          "retrain the folds on one feature store")
    return runs


def _get_run(run_id: str) -> mlflow.entities.Run:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"--fold-runs: run {run_id!r} not found in {mlflow.get_tracking_uri()} "
                          f"({exc.message.splitlines()[0] if exc.message else exc})") from None


def training_config(cfg: Config, run: mlflow.entities.Run) -> Config:
    """The config the folds were trained with (features, model), with this run's ensemble,
    baseline, tracking and output settings: serving must featurize exactly as training did,
    and the baselines to blend with are this run's choice."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    except Exception as exc:  # an old run without config.yaml: fall back to the given config
        log.warning("fold run %s has no readable config.yaml (%s); using this config",
                    run.info.run_id, exc)
        return cfg
    path = cfg.experiment_dir / "ensemble" / f".config-{run.info.run_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    trained = load_config(path)
    trained.name, trained.output_dir = cfg.name, cfg.output_dir
    trained.ensemble, trained.tracking, trained.store = cfg.ensemble, cfg.tracking, cfg.store
    trained.baseline = cfg.baseline
    return trained


def ensemble_logged(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                    nested: bool = False) -> str:
    """The ensemble stage in its own (optionally nested) run; returns that run's id."""
    return build_ensemble(cfg, run_ids, register=register, nested=nested)["run_id"]


def build_ensemble(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                   nested: bool = False) -> dict:
    """The ensemble stage; returns a summary dict (run_id, oof_map3, model_uri, promotion...)."""
    from fsd.ensemble.bundle import BundleInfo, Ensemble, FoldFiles, attach_baseline, build_bundle
    from fsd.ensemble.oof import per_class_table, plot_oof, score_oof
    from fsd.ensemble.submission import class_prior
    from fsd.model.tta import ClipRows, tta_lengths
    from fsd.serving.pyfunc import log_ensemble_model, register_and_promote

    runs = select_fold_runs(cfg, run_ids)
    first = next(iter(runs.values()))
    train_cfg = training_config(cfg, first)
    key = first.data.tags.get(tracking.TAG_TRAIN_KEY, "")
    features_run = first.data.tags.get(tracking.TAG_FEATURES_RUN, "")
    store, features_run = resolve_store(train_cfg, features_run)
    index = store.index
    labels = list(store.labels)
    work = cfg.experiment_dir / "ensemble" / (key or "adhoc")
    tags = {tracking.TAG_TRAIN_KEY: key, tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(train_cfg),
            TAG_FOLD_RUNS: ",".join(r.info.run_id for r in runs.values())}
    with tracking.stage_run(train_cfg, "ensemble", tags=tags, nested=nested) as active:
        files = []
        for fold, r in runs.items():
            local = tracking.download_artifacts(r.info.run_id, FOLD_ARTIFACT,
                                                work / "downloads" / r.info.run_id)
            proj = local / "projector.joblib"
            files.append(FoldFiles(fold=fold, model=local / "model.keras",
                                   projector=proj if proj.exists() else None, run_id=r.info.run_id))
        # outputs per run: two ensemble runs of one training never share a folder
        out = work / active.info.run_id
        crop_min, crop_max = _crop_limits(train_cfg, store, work / "downloads", runs)
        lengths = tta_lengths(cfg.ensemble, crop_min, crop_max)
        e = cfg.ensemble
        info = BundleInfo(
            labels=labels, tta_lengths=lengths, tta_crops=e.tta_crops, seed=e.seed, top_k=e.top_k,
            batch_size=e.batch_size, crop_min=crop_min, crop_max=crop_max,
            prior=class_prior(index["label_id"].to_numpy(), len(labels)).tolist(),
            max_request_clips=e.max_request_clips, max_clip_bytes=e.max_clip_bytes,
            max_request_frames=e.max_request_frames, train_key=key,
        )
        mlflow.log_params({"ensemble.folds": len(files), "ensemble.lengths_used": str(lengths),
                           "ensemble.views_per_clip": len(lengths) * e.tta_crops})
        bundle = build_bundle(out / "bundle", files, train_cfg, info)
        ensemble = Ensemble.load(bundle)

        # --- out of fold: each train clip scored by the fold model that held it out -------
        t0 = time.perf_counter()
        logmels = ClipRows(store.logmel, range(len(index)))
        summaries = store.summary if train_cfg.summary.enabled else None
        folds = index["fold"].to_numpy()
        members = [np.flatnonzero(folds == f) for f in ensemble.folds]
        res = ensemble.score(logmels, summaries, members=members)
        scored = res.count > 0
        if not scored.all():
            log.warning("%d train clips are in no fold of this ensemble; left out of the OOF score",
                        int((~scored).sum()))
        y = index["label_id"].to_numpy()[scored]
        names = index["fname"].astype(str)[scored].tolist()
        cnn_probs = res.probs()[scored]
        cnn_oof = score_oof(names, y, folds[scored], cnn_probs, labels, k=3)
        seconds = time.perf_counter() - t0
        mlflow.log_metrics({"perf/oof_seconds": seconds,
                            "perf/oof_clips_per_s": float(scored.sum()) / max(seconds, 1e-9),
                            "cnn_oof_map3": cnn_oof.overall, "cnn_oof_accuracy": cnn_oof.accuracy})
        blend = _choose_blend(train_cfg, store, names, y, cnn_probs, labels, work / "downloads",
                              out) if e.blend else None
        probs, oof = cnn_probs, cnn_oof
        blended = blend is not None and blend["weight"] < 1.0
        if blended:
            probs = blend["probs"]
            oof = score_oof(names, y, folds[scored], probs, labels, k=3)
            attach_baseline(bundle, blend["model"], blend["weight"], name=blend["name"],
                            run_id=blend["run_id"])
            ensemble.reload_baseline(bundle)  # test clips and serving: the blended model
            info.baseline, info.blend_weight = ensemble.info.baseline, ensemble.info.blend_weight
            _log_frame(cnn_oof.frame, out / "oof_cnn.csv", "oof")
        mlflow.log_param("ensemble.blended", str(blended).lower())
        mlflow.set_tag(TAG_BLENDED, str(blended).lower())
        mlflow.log_metrics(oof.metrics(group="tta"))
        mlflow.log_metrics(_training_scores(work / "downloads", runs))
        plots = plot_oof(oof, y, probs, labels, out / "plots",
                         what=f"with TTA + {blend['name']}" if blended else "with TTA")
        tracking.log_files(plots, "plots")
        _log_frame(oof.frame, out / "oof_ensemble.csv", "oof")
        _log_frame(per_class_table(oof), out / "oof_per_class.csv", "oof")
        info.scores = {"oof_map3": oof.overall, "oof_accuracy": oof.accuracy,
                       "cnn_oof_map3": cnn_oof.overall}
        if blend is not None:
            info.scores.update({"blend_weight": blend["weight"],
                                "blend_oof_map3": blend["oof_map3"]})

        # --- test clips: predictions, submission, scores where labelled ---------------------
        test_scores = _score_test(train_cfg, store, ensemble, info, out)
        info.scores.update(test_scores)
        (bundle / "ensemble.json").write_text(_with_scores(bundle / "ensemble.json", info.scores))

        model_info = log_ensemble_model(bundle, info, name=logged_model_name(e.model_name),
                                        sample_rate=train_cfg.audio.sample_rate)
        mlflow.set_tag("fsd.model_uri", model_info.model_uri)
        summary = {"run_id": active.info.run_id, "oof_map3": oof.overall,
                   "oof_accuracy": oof.accuracy, "cnn_oof_map3": cnn_oof.overall,
                   "train_key": key,
                   "blended": blended, "model_uri": model_info.model_uri, "tta_lengths": lengths,
                   **test_scores}
        if blend is not None:
            summary.update({"blend_weight": blend["weight"], "baseline_run": blend["run_id"],
                            "blend_oof_map3": blend["oof_map3"]})
        if register:
            promo = register_and_promote(model_info.model_uri, e.model_name, e.alias, oof.overall,
                                         run_id=active.info.run_id, train_key=key)
            describe_registered(e.model_name, promo.version, train_cfg, summary, runs,
                                active.info.run_id)
            mlflow.log_dict(promo.as_dict(), "registry/promotion.json")
            mlflow.set_tags({"fsd.registered_version": promo.version,
                             "fsd.alias_moved": str(promo.moved).lower(),
                             "fsd.alias_reason": promo.reason})
            if promo.previous_score is not None:
                mlflow.log_metric("holder_oof_map3", promo.previous_score)
            summary["promotion"] = promo.as_dict()
        tracking.describe(_description(train_cfg, summary, runs, lengths, e.tta_crops))
    return summary


def logged_model_name(model_name: str) -> str:
    """The logged model's name (MLflow 3 LoggedModel; ``runs:/<run>/<name>``): the registered
    name's, as a logged-model name allows (letters, digits, - _ .)."""
    import re

    return re.sub(r"[^0-9A-Za-z_.-]", "_", f"{model_name}-tta-ensemble")


def _scores_line(summary: dict) -> str:
    line = (f"out-of-fold MAP@3 **{summary['oof_map3']:.3f}**, accuracy "
            f"{summary['oof_accuracy']:.3f}")
    if summary.get("blended"):
        line += (f" (blend: {summary['blend_weight']:.2f} x CNN ensemble + "
                 f"{1 - summary['blend_weight']:.2f} x baseline; CNN ensemble alone "
                 f"{summary['cnn_oof_map3']:.3f})")
    return line


def _description(cfg: Config, summary: dict, runs: dict, lengths: list[int], crops: int) -> str:
    folds = ", ".join(tracking.run_link(r.info.run_id, f"fold {k}") for k, r in runs.items())
    lines = [f"**ensemble** of `{cfg.name}` on {tracking.data_summary(cfg)}: the {len(runs)} "
             f"fold models, test-time augmentation {len(lengths)} lengths x {crops} crops.",
             "", f"- {_scores_line(summary)}",
             "- per fold (with TTA): `tta/fold_<k>_map3`; the folds' own validation (no TTA): "
             "`folds_mean/val_map3`", f"- folds: {folds}"]
    if summary.get("baseline_run"):
        lines.append(f"- blended baseline: {tracking.run_link(summary['baseline_run'], 'run')}")
    promo = summary.get("promotion")
    if promo:
        lines.append(f"- registered as `{promo['name']}` version {promo['version']}: "
                     f"{'took' if promo['moved'] else 'did not take'} @{promo['alias']} "
                     f"({promo['reason']})")
    for k in ("public_map3", "private_map3"):
        if k in summary:
            lines.append(f"- test {k.split('_')[0]} MAP@3 {summary[k]:.3f}")
    return "\n".join(lines)


def describe_registered(name: str, version: str, cfg: Config, summary: dict, runs: dict,
                        run_id: str) -> None:
    """Descriptions of the registered model (what it is, how to call it) and of this version
    (data, folds, out-of-fold score, the config that made it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    model_text = (
        f"Sound tagger trained by `fsd` (config `{cfg.name}`): raw audio in (column `audio`, "
        "base64-encoded bytes of any format soundfile reads), the top-k labels with scores out. "
        "An ensemble of the CNN fold models with test-time augmentation (blended with a "
        "summary-feature baseline where that scores better out of fold). Each version's "
        f"description gives its data, folds and out-of-fold MAP@3; `@{cfg.ensemble.alias}` "
        "moves to a version only when its out-of-fold MAP@3 beats the holder's.\n\n"
        f"Serve: `fsd serve --model \"models:/{name}@{cfg.ensemble.alias}\"`")
    folds = ", ".join(str(k) for k in runs)
    version_text = (
        f"{_scores_line(summary)}; data: {tracking.data_summary(cfg)}; {len(runs)} folds "
        f"({folds}) of training key `{summary.get('train_key', '')}`; config `{cfg.name}` "
        f"(model {cfg.model.backbone}, width {cfg.model.width}; the full config is "
        f"`config.yaml` of ensemble run {run_id}); TTA lengths {summary.get('tta_lengths')} x "
        f"{cfg.ensemble.tta_crops} crops.")
    try:
        client.update_registered_model(name, description=model_text)
        client.update_model_version(name, str(version), description=version_text)
    except Exception as exc:  # a description is no reason to fail the step
        log.warning("could not describe registered model %s v%s: %s", name, version, exc)


def _blend_candidates(cfg: Config, store_key: str) -> list:
    """The baseline runs the ensemble may blend with, best alone first: the newest finished run
    of each model in ``baseline.models`` with the current settings; when there is none, every
    finished baseline run on this store (a standalone ``fsd ensemble`` after older runs)."""
    runs = [r for name in cfg.baseline.models
            if (r := tracking.finished_baseline(cfg, store_key, name)) is not None]
    if not runs:
        runs = tracking.finished_baselines(cfg, store_key)
    scored = [r for r in runs if "oof_map3" in r.data.metrics]
    return sorted(scored, key=lambda r: -r.data.metrics["oof_map3"])


def _choose_blend(cfg: Config, store, fnames: list[str], y: np.ndarray, cnn: np.ndarray,
                  labels: list[str], downloads: Path, out: Path) -> dict | None:
    """Blend the CNN's out-of-fold ``cnn`` with the finished baseline that blends best.

    Each candidate (:func:`_blend_candidates`) gets its weight chosen out of fold; the pair
    (baseline, weight) with the highest blended out-of-fold MAP@3 wins (ties: the baseline
    that scores better alone). Logs the blend's metrics, tags and the candidates' table and
    returns {weight, probs (blended, one row per clip), oof_map3, name, run_id, model (local
    path of its final model)}; None when there is no usable baseline run (nothing is logged
    then but a line saying so).
    """
    import pandas as pd

    from fsd.baseline.blend import align_probabilities, blend, choose_weight
    from fsd.entrypoints.baseline import download_model, load_oof_probabilities

    candidates = _blend_candidates(cfg, store.key)
    if not candidates:
        log.info("ensemble.blend: no finished baseline run on this feature store (store key %s); "
                 "the ensemble is the CNN alone (run `fsd baseline` to blend)", store.key[:8])
        return None
    best = None
    rows = []
    for run in candidates:
        rid = run.info.run_id
        name = run.data.tags.get(tracking.TAG_BASELINE, "baseline")
        try:
            frame = load_oof_probabilities(rid, downloads / rid)
            base, found = align_probabilities(frame, fnames, labels)
        except (OSError, ValueError, mlflow.exceptions.MlflowException) as exc:
            log.warning("ensemble.blend: baseline run %s is unusable (%s); skipped", rid, exc)
            continue
        if not found.any():
            log.warning("ensemble.blend: baseline run %s scored none of these clips; skipped", rid)
            continue
        if not found.all():
            log.warning("ensemble.blend: baseline run %s has no out-of-fold probabilities for %d "
                        "of %d clips; those keep the CNN's", rid, int((~found).sum()), len(found))
        choice = choose_weight(y[found], cnn[found], base[found], cfg.ensemble.blend_steps, k=3)
        base = np.where(found[:, None], base, cnn)  # a clip without a baseline row keeps the CNN's
        probs = blend(cnn, base, choice.weight)
        score = float(reciprocal_ranks(y, probs, 3).mean())
        accuracy = float(reciprocal_ranks(y, probs, 1).mean())
        rows.append({"baseline": name, "run_id": rid,
                     "baseline_oof_map3": run.data.metrics["oof_map3"],
                     "weight": choice.weight, "blend_oof_map3": score,
                     "blend_oof_accuracy": accuracy})
        if best is None or round(score, 12) > round(best["oof_map3"], 12):
            best = {"weight": choice.weight, "probs": probs, "oof_map3": score,
                    "oof_accuracy": accuracy, "name": name, "run_id": rid, "choice": choice,
                    "found": found, "run": run}
    if best is None:
        return None
    rid, name, choice = best["run_id"], best["name"], best["choice"]
    try:
        best["model"] = download_model(rid, downloads / rid)
    except (OSError, mlflow.exceptions.MlflowException) as exc:
        log.warning("ensemble.blend: baseline run %s has no usable model (%s); no blend", rid, exc)
        return None
    mlflow.log_metrics({"blend_weight": choice.weight, "blend_oof_map3": best["oof_map3"],
                        "blend_oof_accuracy": best["oof_accuracy"],
                        "baseline_oof_map3": best["run"].data.metrics.get("oof_map3",
                                                                          float("nan"))})
    mlflow.log_param("blend.clips", int(best["found"].sum()))
    mlflow.set_tags({TAG_BLEND_RUN: rid, TAG_BLEND_MODEL: name})
    _log_frame(choice.table(), out / "blend_weights.csv", "blend")
    _log_frame(pd.DataFrame(rows), out / "blend_candidates.csv", "blend")
    log.info("ensemble.blend: %s (run %s) at w=%.2f: out-of-fold MAP@3 %.4f (CNN alone %.4f; "
             "%d candidates)", name, rid, choice.weight, best["oof_map3"],
             float(reciprocal_ranks(y, cnn, 3).mean()), len(rows))
    return {key: best[key] for key in ("weight", "probs", "oof_map3", "name", "run_id", "model")}


def _crop_limits(cfg: Config, store, downloads: Path, runs: dict) -> tuple[int, int]:
    """The crop limits training used (each fold records them), else as training derives them."""
    from fsd.train.batches import resolve_crop_limits

    found = set()
    for r in runs.values():
        try:
            data = json.loads((downloads / r.info.run_id / FOLD_ARTIFACT / "result.json").read_text())
            found.add((int(data["crop_min"]), int(data["crop_max"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        log.warning("folds trained with different crop limits %s; using their hull", sorted(found))
        return min(lo for lo, _ in found), max(hi for _, hi in found)
    frames = store.index["frames"].to_numpy(np.int64)
    return resolve_crop_limits(cfg.train, dict(getattr(store, "meta", {}) or {}), frames)


def _with_scores(manifest: Path, scores: dict[str, float]) -> str:
    data = json.loads(manifest.read_text())
    data["scores"] = {k: float(v) for k, v in scores.items()}
    return json.dumps(data, indent=2)


def _training_scores(downloads: Path, runs: dict) -> dict[str, float]:
    """The mean of the folds' own validation scores (the fold runs' ``val_map3`` and
    ``val_accuracy``: fixed lengths, centre crops, no TTA), as ``folds_mean/val_*``."""
    values: dict[str, list[float]] = {"val_map3": [], "val_accuracy": []}
    for r in runs.values():
        path = downloads / r.info.run_id / FOLD_ARTIFACT / "result.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name in values:
            if isinstance(data.get(name), (int, float)):
                values[name].append(float(data[name]))
    return {f"folds_mean/{k}": float(np.mean(v)) for k, v in values.items() if v}


def _log_frame(frame: pd.DataFrame, path: Path, artifact_path: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    mlflow.log_artifact(str(path), artifact_path)


def _score_test(cfg: Config, store, ensemble, info, work: Path) -> dict[str, float]:
    """Predict the store's test split, write and log the submission, score it where labelled.

    The test index lists every test clip of the dataset, the undecodable ones too (``ok``
    false, 0 frames): those get the training prior's top 3, so the submission is complete.
    """
    from fsd.ensemble.submission import build_submission, score_submission, validate_submission
    from fsd.model.tta import ClipRows

    if "test" not in getattr(store, "splits", []):
        log.info("no test split in this dataset: no submission")
        return {}
    test = store.open_split("test")
    tindex = test.index
    ok = tindex["ok"].astype(bool).to_numpy() if "ok" in tindex else np.ones(len(tindex), bool)
    ok = ok & (tindex["frames"].to_numpy() > 0)
    rows = np.flatnonzero(ok)
    names = tindex["fname"].astype(str).to_numpy()[rows].tolist()
    probs = np.zeros((0, len(info.labels)), dtype=np.float32)
    if len(rows):
        t0 = time.perf_counter()
        logmels = ClipRows(test.logmel, rows)
        summaries = np.asarray(test.summary)[rows] if cfg.summary.enabled else None
        probs = ensemble.predict(logmels, summaries)
        seconds = time.perf_counter() - t0
        mlflow.log_metrics({"perf/test_seconds": seconds,
                            "perf/test_clips_per_s": len(rows) / max(seconds, 1e-9)})
        mlflow.log_param("test.clips_predicted", len(rows))
        pred = pd.DataFrame(probs, columns=info.labels)
        pred.insert(0, "fname", names)
        _log_frame(pred, work / "test_probabilities.csv", "test")
    expected = tindex["fname"].astype(str).tolist()
    sub = build_submission(expected, names, probs, info.labels, np.asarray(info.prior), k=3)
    validate_submission(sub, expected, info.labels, k=3)
    n_prior = int((~ok).sum())
    mlflow.log_param("test.clips_prior_only", n_prior)
    if n_prior:
        failed = tindex.loc[~ok, "fname"].astype(str).tolist()
        log.warning("%d test clips have no features (%s); they get the training prior's top 3",
                    n_prior, ", ".join(failed[:5]))
    _log_frame(sub, work / "submission.csv", "submission")
    scores = score_submission(sub, tindex)
    if scores:
        mlflow.log_metrics(scores)
        log.info("test MAP@3: %s", ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                             if k.endswith("map3")))
    return {k: v for k, v in scores.items() if k.endswith("map3")}
