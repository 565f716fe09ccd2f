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
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Run

from fsd import tracking
from fsd.config import Config
from fsd.entrypoints.flags import parse_flag
from fsd.tracking.artifacts import (
    FOLD_ARTIFACT,
    OOF_ARTIFACT,
    download_baseline_model,
    load_oof_probabilities,
    log_frame,
)
from fsd.tracking.lookups import blend_candidates, select_fold_runs, training_config

if TYPE_CHECKING:  # the stage loads TensorFlow: imported where it runs
    from fsd.ensemble.stage import BlendCandidate, EnsembleResult, FoldModel, TestScores

HELP = "TTA ensemble of a training's folds: out-of-fold MAP@3, submission, registered pyfunc"
log = logging.getLogger(__name__)

TAG_FOLD_RUNS = "fsd.fold_runs"
TAG_BLENDED = "fsd.blended"
TAG_BLEND_RUN = "fsd.blend_baseline_run"
TAG_BLEND_MODEL = "fsd.blend_baseline"

__all__ = ["build_ensemble", "ensemble_logged", "logged_model_name", "select_fold_runs"]


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


def ensemble_logged(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                    nested: bool = False) -> str:
    """The ensemble stage in its own (optionally nested) run; returns that run's id."""
    return build_ensemble(cfg, run_ids, register=register, nested=nested)["run_id"]


def build_ensemble(cfg: Config, run_ids: list[str] | None = None, *, register: bool = True,
                   nested: bool = False) -> dict:
    """Resolve the fold runs, their features and the blend candidates, run the stage
    (:func:`fsd.ensemble.stage.run_ensemble`) in a run and log it; returns a summary dict
    (run_id, oof_map3, model_uri, promotion...)."""
    from fsd.ensemble.stage import run_ensemble

    runs = select_fold_runs(cfg, run_ids)
    first = next(iter(runs.values()))
    train_cfg = training_config(cfg, first)
    key = first.data.tags.get(tracking.TAG_TRAIN_KEY, "")
    store, features_run = tracking.resolve_store(
        train_cfg, first.data.tags.get(tracking.TAG_FEATURES_RUN, ""))
    work = cfg.experiment_dir / "ensemble" / (key or "adhoc")
    downloads = work / "downloads"
    tags = {tracking.TAG_TRAIN_KEY: key, tracking.TAG_FEATURES_RUN: features_run,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(train_cfg),
            TAG_FOLD_RUNS: ",".join(r.info.run_id for r in runs.values())}
    with tracking.stage_run(train_cfg, "ensemble", tags=tags, nested=nested) as active:
        folds = _download_folds(runs, downloads)
        candidates = _candidates(train_cfg, store.key, downloads) if cfg.ensemble.blend else []
        # outputs per run: two ensemble runs of one training never share a folder
        out = work / active.info.run_id
        result = run_ensemble(train_cfg, store, folds, candidates, out, train_key=key)
        _log_result(result, out, len(folds), cfg.ensemble.tta_crops)
        summary = _summary(result, active.info.run_id, key)
        summary.update(_log_model(cfg, train_cfg, result, summary, runs, active.info.run_id,
                                  register))
        tracking.describe(_description(train_cfg, summary, runs, result.lengths,
                                       cfg.ensemble.tta_crops))
    return summary


def _download_folds(runs: dict[int, Run], downloads: Path) -> list[FoldModel]:
    from fsd.ensemble.stage import FoldModel
    from fsd.train.folddir import FoldDir

    return [FoldModel(fold=fold, run_id=r.info.run_id, files=FoldDir(tracking.download_artifacts(
                r.info.run_id, FOLD_ARTIFACT, downloads / r.info.run_id)))
            for fold, r in runs.items()]


def _candidates(cfg: Config, store_key: str, downloads: Path) -> list[BlendCandidate]:
    """The blend candidates (:func:`~fsd.tracking.lookups.blend_candidates`) whose out-of-fold
    probabilities can be read; the final model is fetched only for the winner."""
    from fsd.ensemble.stage import BlendCandidate

    runs = blend_candidates(cfg, store_key)
    if not runs:
        log.info("ensemble.blend: no finished baseline run on this feature store (store key %s); "
                 "the ensemble is the CNN alone (run `fsd baseline` to blend)", store_key[:8])
    out = []
    for run in runs:
        rid = run.info.run_id
        try:
            frame = load_oof_probabilities(rid, downloads / rid)
        except (OSError, ValueError, mlflow.exceptions.MlflowException) as exc:
            log.warning("ensemble.blend: baseline run %s is unusable (%s); skipped", rid, exc)
            continue
        out.append(BlendCandidate(
            name=run.data.tags.get(tracking.TAG_BASELINE, "baseline"), run_id=rid,
            oof_map3=run.data.metrics["oof_map3"], probabilities=frame,
            fetch_model=lambda rid=rid: _fetch_baseline_model(rid, downloads / rid)))
    return out


def _fetch_baseline_model(run_id: str, dst: Path) -> Path | None:
    try:
        return download_baseline_model(run_id, dst)
    except (OSError, mlflow.exceptions.MlflowException) as exc:
        log.warning("ensemble.blend: baseline run %s has no usable model (%s); no blend",
                    run_id, exc)
        return None


def _log_result(result: EnsembleResult, out: Path, n_folds: int, crops: int) -> None:
    """The stage's scores, tables and plots on the active run."""
    from fsd.evaluation.oof import per_class_table
    from fsd.evaluation.plots import plot_oof

    cnn, chosen = result.cnn, result.blend
    mlflow.log_params({"ensemble.folds": n_folds, "ensemble.lengths_used": str(result.lengths),
                       "ensemble.views_per_clip": len(result.lengths) * crops})
    mlflow.log_metrics({"perf/oof_seconds": cnn.seconds,
                        "perf/oof_clips_per_s": len(cnn.y) / max(cnn.seconds, 1e-9),
                        "cnn_oof_map3": cnn.scores.overall,
                        "cnn_oof_accuracy": cnn.scores.accuracy})
    if chosen is not None:
        mlflow.log_metrics({"blend_weight": chosen.weight, "blend_oof_map3": chosen.oof_map3,
                            "blend_oof_accuracy": chosen.oof_accuracy,
                            "baseline_oof_map3": chosen.baseline_oof_map3})
        mlflow.log_param("blend.clips", chosen.clips)
        mlflow.set_tags({TAG_BLEND_RUN: chosen.run_id, TAG_BLEND_MODEL: chosen.name})
        log_frame(chosen.choice.table(), out / "blend_weights.csv", "blend")
        log_frame(chosen.candidates, out / "blend_candidates.csv", "blend")
    if result.blended:
        log_frame(cnn.scores.frame, out / "oof_cnn.csv", OOF_ARTIFACT)
    mlflow.log_param("ensemble.blended", str(result.blended).lower())
    mlflow.set_tag(TAG_BLENDED, str(result.blended).lower())
    mlflow.log_metrics(result.oof.metrics(group="tta"))
    mlflow.log_metrics(result.folds_mean)
    plots = plot_oof(result.oof, cnn.y, result.probs, cnn.labels, out / "plots",
                     what=f"with TTA + {chosen.name}" if result.blended else "with TTA")
    tracking.log_files(plots, "plots")
    log_frame(result.oof.frame, out / "oof_ensemble.csv", OOF_ARTIFACT)
    log_frame(per_class_table(result.oof), out / "oof_per_class.csv", OOF_ARTIFACT)
    if result.test is not None:
        _log_test(result.test, out)


def _log_test(test: TestScores, out: Path) -> None:
    if test.probabilities is not None:
        mlflow.log_metrics({"perf/test_seconds": test.seconds,
                            "perf/test_clips_per_s": len(test.probabilities)
                            / max(test.seconds, 1e-9)})
        mlflow.log_param("test.clips_predicted", len(test.probabilities))
        log_frame(test.probabilities, out / "test_probabilities.csv", "test")
    mlflow.log_param("test.clips_prior_only", len(test.prior_only))
    log_frame(test.submission, out / "submission.csv", "submission")
    if test.scores:
        mlflow.log_metrics(test.scores)


def _summary(result: EnsembleResult, run_id: str, key: str) -> dict:
    summary = {"run_id": run_id, "oof_map3": result.oof.overall,
               "oof_accuracy": result.oof.accuracy, "cnn_oof_map3": result.cnn.scores.overall,
               "train_key": key, "blended": result.blended, "tta_lengths": result.lengths,
               **(result.test.map3 if result.test is not None else {})}
    if result.blend is not None:
        summary.update({"blend_weight": result.blend.weight, "baseline_run": result.blend.run_id,
                        "blend_oof_map3": result.blend.oof_map3})
    return summary


def _log_model(cfg: Config, train_cfg: Config, result: EnsembleResult, summary: dict,
               runs: dict, run_id: str, register: bool) -> dict:
    """Log the bundle as the pyfunc and, with ``register``, register it and move the alias
    when it beats the holder; returns the summary's model_uri (and promotion)."""
    from fsd.serving.pyfunc import log_ensemble_model
    from fsd.serving.registry import register_and_promote

    e = cfg.ensemble
    model_info = log_ensemble_model(result.bundle, result.info, name=logged_model_name(e.model_name),
                                    sample_rate=train_cfg.audio.sample_rate)
    mlflow.set_tag("fsd.model_uri", model_info.model_uri)
    out = {"model_uri": model_info.model_uri}
    if register:
        promo = register_and_promote(model_info.model_uri, e.model_name, e.alias,
                                     result.oof.overall, run_id=run_id,
                                     train_key=summary["train_key"])
        describe_registered(e.model_name, promo.version, train_cfg, {**summary, **out}, runs,
                            run_id)
        mlflow.log_dict(promo.as_dict(), "registry/promotion.json")
        mlflow.set_tags({"fsd.registered_version": promo.version,
                         "fsd.alias_moved": str(promo.moved).lower(),
                         "fsd.alias_reason": promo.reason})
        if promo.previous_score is not None:
            mlflow.log_metric("holder_oof_map3", promo.previous_score)
        out["promotion"] = promo.as_dict()
    return out


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
