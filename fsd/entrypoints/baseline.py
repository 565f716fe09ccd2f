"""Fit the scikit-learn baselines on a featurize run's summary features, on the CNN's folds.

One MLflow run per model in ``baseline.models`` (``logreg``: StandardScaler +
LogisticRegression; ``hgb``: HistGradientBoostingClassifier; ``svc``: quantile-scaled RBF SVC;
``extratrees``; ``vote``: the soft vote of ``baseline.vote_members``), tagged ``fsd.stage=baseline``
and ``fsd.baseline=<model>``. Each logs the headline metrics the ensemble run logs under the
same names (``oof_map3``, ``oof_accuracy``) and the macro mean of per-class average precision
(``oof_ap_macro``), linked to its LoggedModel and to the clip table they were measured on; per
fold ``oof/fold_<k>_map3`` (where the ensemble's are ``cnn/...`` and ``blend/...``), fit times
(``perf/``), the counts as params (``fit.n_clips``, ``fit.n_skipped``, ``fit.n_features``), the
per-class/per-fold/confusion plots, per class a table (``oof/oof_per_class.csv``: MAP@3, AP,
clips), the out-of-fold probabilities (``oof/oof_probabilities.csv``: fname, label, one column
per class) and the final model fitted on every train clip, twice: the scikit-learn estimator as
the run's LoggedModel (``baseline-<model>``, skops format, the summary features in, class ids
out), and the whole wrapper the ensemble bundles (``model/baseline.joblib``: label-aligned
columns, feature cleaning). A model whose accuracy is within two standard errors of chance is
tagged ``fsd.at_chance`` and its description says so.

Skip-when-done: a model with a finished run on the same feature store (store key) and the
same settings (baseline key) is not fitted again. Standalone (``fsd baseline``, ``mlflow run
-e baseline``) the model runs nest under one ``baselines`` run; under ``fsd main`` under the
main run. The ensemble step blends the CNN with the one that blends best (``ensemble.blend``).
"""

from __future__ import annotations

import argparse
import logging

from fsd import tracking
from fsd.config import Config, ConfigError

HELP = ("scikit-learn baselines (logreg, hgb, svc, extratrees, vote) on the summary features, "
        "out of fold, one run each")
log = logging.getLogger(__name__)

STAGE_GROUP = "baselines"
# what a baseline's LoggedModel is scored by (the run's too); the rest are the run's only
MODEL_METRICS = ("oof_map3", "oof_accuracy", "oof_ap_macro")


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
    import mlflow

    from fsd.baseline.fit import run_baseline
    from fsd.baseline.model import model_params
    from fsd.evaluation.metrics import at_chance
    from fsd.evaluation.plots import plot_oof
    from fsd.tracking import datasets, models
    from fsd.tracking.artifacts import (
        MODEL_ARTIFACT,
        MODEL_FILE,
        OOF_ARTIFACT,
        OOF_PROBS,
        log_frame,
    )
    from fsd.train.experimentdir import ExperimentDir

    tags = {tracking.TAG_BASELINE: name,
            tracking.TAG_BASELINE_KEY: tracking.baseline_key(cfg, name),
            tracking.TAG_FEATURES_RUN: features_run, tracking.TAG_STORE_KEY: store.key,
            tracking.TAG_FEATURE_KEY: tracking.feature_key(cfg)}
    with tracking.stage_run(cfg, tracking.STAGE_BASELINE, nested=nested, tags=tags,
                            run_name=f"baseline-{name}") as active:
        settings = model_params(name, cfg.baseline)
        mlflow.log_params({f"baseline.{k}": v for k, v in settings.items()
                           if k in ("model", "version")})
        clips = datasets.store_dataset(cfg, store.index, tracking.feature_key(cfg))
        datasets.log_dataset(clips, datasets.TRAINING)
        result = run_baseline(store, name, cfg.baseline, final=True, progress=progress)
        tracking.log_new_params(result.params())
        n_classes = len(result.labels)
        chance = at_chance(result.oof_accuracy, len(result.y), n_classes)
        what = _describe_model(cfg, name)
        metrics = result.metrics()
        scores = {k: metrics.pop(k) for k in MODEL_METRICS if k in metrics}
        model_id = ""
        if result.model is not None and result.model.estimator is not None:
            model_id = _log_model(cfg, name, what, result, settings, store, scores, chance,
                                  clips.name)
            models.log_model_metrics(scores, model_id, clips)
        else:
            tracking.log_run_metrics(scores)
        tracking.log_run_metrics(metrics)
        out = ExperimentDir.of(cfg).baseline(name, store.key, active.info.run_id)
        plots = plot_oof(result.scores, result.y, result.probs, result.labels, out / "plots",
                         what=name)
        tracking.log_files(plots, "plots")
        log_frame(result.probabilities_frame(), out / OOF_PROBS, OOF_ARTIFACT)
        log_frame(result.scores.frame, out / "oof_baseline.csv", OOF_ARTIFACT)
        log_frame(result.per_class_frame(), out / "oof_per_class.csv", OOF_ARTIFACT)
        path = result.model.save(out / MODEL_FILE)
        mlflow.log_artifact(str(path), MODEL_ARTIFACT)
        mlflow.set_tag(tracking.TAG_AT_CHANCE, str(chance).lower())
        log.info("baseline %s run %s: out-of-fold MAP@3 %.4f, accuracy %.4f%s", name,
                 active.info.run_id, result.oof_map3, result.oof_accuracy,
                 " (at chance)" if chance else "")
        tracking.describe(tracking.baseline_description(
            cfg, name, what, result.oof_map3, result.oof_accuracy, len(result.y),
            len(result.fold_seconds), chance_words(result.oof_accuracy, n_classes) if chance else "",
            features_run, model_id, f"{MODEL_ARTIFACT}/{MODEL_FILE}"))
        return active.info.run_id


def chance_words(accuracy: float, n_classes: int) -> str:
    """Why a baseline reads as chance, in words (descriptions, the results table)."""
    from fsd.evaluation.metrics import chance_map_at_k

    return (f"accuracy {accuracy:.3f} against chance {1 / n_classes:.3f} ({n_classes} classes; "
            f"chance MAP@3 {chance_map_at_k(n_classes):.3f}): no better than guessing")


def _log_model(cfg: Config, name: str, what: str, result, settings: dict, store,
               scores: dict[str, float], chance: bool, dataset_name: str) -> str:
    """The final estimator as the run's scikit-learn LoggedModel; returns its model id."""
    import numpy as np
    from mlflow.models import infer_signature

    from fsd.baseline.model import clean_features
    from fsd.tracking import models

    sample = clean_features(np.asarray(store.summary[:2]))
    signature = infer_signature(sample, result.model.estimator.predict(sample))
    figures = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    description = (
        f"**baseline {name}**: {what}, fitted on all {len(result.y)} clips of `{cfg.name}` "
        f"({result.n_features} summary features per clip, NaN/inf as 0; predicts class ids, "
        f"`predict_proba` one column per class id the clips held). Scored out of fold on "
        f"dataset `{dataset_name}`: {figures}."
        + (" **At chance**: no better than guessing." if chance else ""))
    params = {**settings, "n_features": result.n_features,
              "n_clips": len(result.y)}
    model = models.log_sklearn_model(result.model.estimator, name=f"baseline-{name}",
                                     description=description, params=params,
                                     signature=signature)
    return model.model_id


def _describe_model(cfg: Config, name: str) -> str:
    """What model ``name`` is, in a few words (the run description)."""
    b = cfg.baseline
    scaler = {"standard": "StandardScaler", "quantile": "QuantileTransformer (normal)"}
    words = {"logreg": f"{scaler[b.logreg_scaler]} + LogisticRegression(C={b.logreg_c:g})",
             "hgb": "HistGradientBoostingClassifier",
             "svc": f"QuantileTransformer (normal) + RBF SVC(C={b.svc_c:g})",
             "extratrees": f"ExtraTreesClassifier({b.extratrees_n_estimators} trees, "
                           f"{b.extratrees_max_leaf_nodes or 'unbounded'} leaves each)"}
    if name == "vote":
        members = ", ".join(m + (" (quantile-scaled)" if m in ("logreg", "svc")
                                 and b.vote_scaler == "quantile" else "")
                            for m in b.vote_members)
        return f"soft vote of {members}"
    return words.get(name, name)


def _log_group_summary(runs: dict[str, str]) -> None:
    """The group run: its children linked in its description, the best one named; the only
    metric it logs is that best one's (``best_baseline_oof_map3``), the rest stay the
    children's."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    scores, at_chance = {}, set()
    for name, rid in runs.items():
        run = client.get_run(rid)
        value = run.data.metrics.get("oof_map3")
        if value is not None:
            scores[name] = value
        if run.data.tags.get(tracking.TAG_AT_CHANCE) == "true":
            at_chance.add(name)
    mlflow.set_tag(tracking.TAG_BASELINE_RUNS, ",".join(f"{n}={r}" for n, r in runs.items()))
    if scores:
        best = max(scores, key=scores.get)
        mlflow.set_tags({tracking.TAG_BEST_BASELINE: best, tracking.TAG_BEST_BASELINE_RUN: runs[best]})
        tracking.log_run_metrics({"best_baseline_oof_map3": scores[best]})
    tracking.describe(tracking.baselines_description(runs, scores, at_chance))
