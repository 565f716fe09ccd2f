"""Fit the scikit-learn baselines on a featurize run's summary features, on the CNN's folds.

One MLflow run per model in ``baseline.models`` (``logreg``: StandardScaler +
LogisticRegression; ``hgb``: HistGradientBoostingClassifier; ``svc``: quantile-scaled RBF SVC;
``extratrees``; ``vote``: the soft vote of ``baseline.vote_members``), tagged ``fsd.stage=baseline``
and ``fsd.baseline=<model>``. Each logs the metrics the ensemble run logs under the same names
(``oof_map3``, ``oof_accuracy``; per fold ``oof/fold_<k>_map3`` and per class
``oof_class_map3/<label>``, where the ensemble's, scored with TTA, are ``tta/...``) plus
per-class average precision (``oof_class_ap/<label>``), fit times (``perf/``), the counts as
params (``fit.n_clips``, ``fit.n_skipped``, ``fit.n_features``), the per-class/per-fold/confusion plots, the
out-of-fold probabilities (``oof/oof_probabilities.csv``: fname, label, one column per
class) and the final model fitted on every train clip (``model/baseline.joblib``).

Skip-when-done: a model with a finished run on the same feature store (store key) and the
same settings (baseline key) is not fitted again. Standalone (``fsd baseline``, ``mlflow run
-e baseline``) the model runs nest under one ``baselines`` run; under ``fsd main`` under the
main run. The ensemble step blends the CNN with the one that blends best (``ensemble.blend``).
"""

from __future__ import annotations

import argparse
import logging

import mlflow

from fsd import tracking
from fsd.config import Config, ConfigError
from fsd.tracking.artifacts import MODEL_ARTIFACT, MODEL_FILE, OOF_ARTIFACT, OOF_PROBS, log_frame

HELP = ("scikit-learn baselines (logreg, hgb, svc, extratrees, vote) on the summary features, "
        "out of fold, one run each")
log = logging.getLogger(__name__)

STAGE_GROUP = "baselines"
TAG_REUSED = "fsd.baseline_runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features-run", default="",
                   help="featurize run id to take features from (default: newest with the same key)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    store, features_run = tracking.resolve_store(cfg, args.features_run or "")
    tags = {tracking.TAG_FEATURES_RUN: features_run, tracking.TAG_STORE_KEY: store.key,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg)}
    with tracking.stage_run(cfg, STAGE_GROUP, tags=tags, run_name="baselines"):
        runs = baselines_logged(cfg, store, features_run, nested=True)
        _log_group_summary(runs)
    return 0


def baselines_logged(cfg: Config, store, features_run: str, *, nested: bool = False,
                     progress: bool = True) -> dict[str, str]:
    """Each model of ``cfg.baseline.models`` in its own run (reusing finished ones); returns
    model -> run id. Nothing to do (and {}) when the list is empty."""
    _check_summary(cfg, store)
    out: dict[str, str] = {}
    for name in cfg.baseline.models:
        done = tracking.finished_baseline(cfg, store.key, name)
        if done is not None:
            log.info("baseline %s: finished run %s has the same settings and features, reused",
                     name, done.info.run_id)
            out[name] = done.info.run_id
            continue
        out[name] = baseline_logged(cfg, store, features_run, name, nested=nested,
                                    progress=progress)
    return out


def _check_summary(cfg: Config, store) -> None:
    import numpy as np

    if not cfg.baseline.models:
        return
    shape = np.shape(store.summary)
    if not cfg.summary.enabled or len(shape) != 2 or shape[1] == 0:
        raise ConfigError("the baselines fit the summary features, and this store has none "
                          "(summary.enabled is false); featurize with summary.enabled=true or "
                          "set baseline.models= (empty) to skip them")


def baseline_logged(cfg: Config, store, features_run: str, name: str, *, nested: bool = False,
                    progress: bool = True) -> str:
    """Fit baseline ``name`` on ``store`` inside a new run and log it; returns the run id."""
    from fsd.baseline.fit import run_baseline
    from fsd.baseline.model import model_params
    from fsd.evaluation.plots import plot_oof

    tags = {tracking.TAG_BASELINE: name,
            tracking.TAG_BASELINE_KEY: tracking.baseline_key(cfg, name),
            tracking.TAG_FEATURES_RUN: features_run, tracking.TAG_STORE_KEY: store.key,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg)}
    with tracking.stage_run(cfg, tracking.STAGE_BASELINE, nested=nested, tags=tags,
                            run_name=f"baseline-{name}") as active:
        mlflow.log_params({f"baseline.{k}": v for k, v in model_params(name, cfg.baseline).items()
                           if k in ("model", "version")})
        result = run_baseline(store, name, cfg.baseline, final=True, progress=progress)
        mlflow.log_metrics(result.metrics())
        tracking.log_new_params(result.params())
        out = cfg.experiment_dir / "baseline" / f"{name}-{store.key[:8]}" / active.info.run_id
        plots = plot_oof(result.scores, result.y, result.probs, result.labels, out / "plots",
                         what=name)
        tracking.log_files(plots, "plots")
        log_frame(result.probabilities_frame(), out / OOF_PROBS, OOF_ARTIFACT)
        log_frame(result.scores.frame, out / "oof_baseline.csv", OOF_ARTIFACT)
        log_frame(result.per_class_frame(), out / "oof_per_class.csv", OOF_ARTIFACT)
        path = result.model.save(out / MODEL_FILE)
        mlflow.log_artifact(str(path), MODEL_ARTIFACT)
        log.info("baseline %s run %s: out-of-fold MAP@3 %.4f, accuracy %.4f", name,
                 active.info.run_id, result.oof_map3, result.oof_accuracy)
        what = _describe_model(cfg, name)
        tracking.describe(
            f"**baseline {name}** ({what}) of `{cfg.name}` on the summary features of "
            f"{tracking.data_summary(cfg)}, on the CNN's folds.\n\n"
            f"- out of fold (no TTA): **MAP@3 {result.oof_map3:.3f}**, accuracy "
            f"{result.oof_accuracy:.3f}, {len(result.y)} clips in "
            f"{len(result.fold_seconds)} folds\n"
            f"- features: {tracking.run_link(features_run, 'featurize run')}; the model "
            f"fitted on every clip: `{MODEL_ARTIFACT}/{MODEL_FILE}`")
        return active.info.run_id


def _describe_model(cfg: Config, name: str) -> str:
    """What model ``name`` is, in a few words (the run description)."""
    b = cfg.baseline
    scaler = {"standard": "StandardScaler", "quantile": "QuantileTransformer (normal)"}
    words = {"logreg": f"{scaler[b.logreg_scaler]} + LogisticRegression(C={b.logreg_c:g})",
             "hgb": "HistGradientBoostingClassifier",
             "svc": f"QuantileTransformer (normal) + RBF SVC(C={b.svc_c:g})",
             "extratrees": f"ExtraTreesClassifier({b.extratrees_n_estimators} trees)"}
    if name == "vote":
        members = ", ".join(m + (" (quantile-scaled)" if m in ("logreg", "svc")
                                 and b.vote_scaler == "quantile" else "")
                            for m in b.vote_members)
        return f"soft vote of {members}"
    return words.get(name, name)


def _log_group_summary(runs: dict[str, str]) -> None:
    client = mlflow.tracking.MlflowClient()
    scores = {}
    for name, rid in runs.items():
        value = client.get_run(rid).data.metrics.get("oof_map3")
        if value is not None:
            scores[name] = value
            mlflow.log_metric(f"{name}_oof_map3", value)
    mlflow.set_tag(TAG_REUSED, ",".join(f"{n}={r}" for n, r in runs.items()))
    lines = [f"- {tracking.run_link(rid, name)}: out-of-fold MAP@3 {scores[name]:.3f}"
             if name in scores else f"- {tracking.run_link(rid, name)}"
             for name, rid in runs.items()]
    if scores:
        best = max(scores, key=scores.get)
        mlflow.set_tags({"fsd.best_baseline": best, "fsd.best_baseline_run": runs[best]})
        mlflow.log_metric("best_oof_map3", scores[best])
        lines.insert(0, f"**baselines**: the best is **{best}**, out-of-fold MAP@3 "
                        f"{scores[best]:.3f}.\n")
    else:
        lines.insert(0, "**baselines**\n")
    tracking.describe("\n".join(lines))
