"""The whole pipeline: featurize -> train every fold -> baselines -> ensemble (blend, register)
-> with ``distill.enabled`` a distilled student (register), as nested runs under one ``main``
run.

Like MLflow's multistep_workflow example, a step that already ran with the same inputs is
not run again: featurize is reused when a finished run with the same feature key exists, a
fold is skipped when a finished fold run of the same training key exists, a baseline when a
finished run of the same model settings on the same store exists, and an interrupted fold
resumes from its checkpoint. Rerunning after a crash therefore continues where it stopped.

``main`` logs only the pipeline's headline, each under a name that says what it measures
(its children keep their own figures): ``oof_map3`` / ``oof_accuracy`` (the registered model,
out of fold, its blend chosen on the other folds: what ``@champion`` is decided on),
``cnn_oof_map3`` (the CNN fold ensemble alone) and ``best_baseline_oof_map3`` (the best
summary-feature baseline); ``results.md`` compares every model on the same folds, and the run
logs the clip table as its dataset input.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from fsd import tracking
from fsd.config import Config

if TYPE_CHECKING:
    import pandas as pd

HELP = ("run the whole pipeline (featurize, all folds, baselines, ensemble), skipping steps "
        "already done")
log = logging.getLogger(__name__)
# the parent run's tags naming the runs it composed (summary keys -> tags)
_SUMMARY_TAGS = {"features_run": tracking.TAG_FEATURES_RUN, "fold_runs": tracking.TAG_FOLD_RUNS,
                 "baseline_runs": tracking.TAG_BASELINE_RUNS,
                 "ensemble_run": tracking.TAG_ENSEMBLE_RUN,
                 "distill_run": tracking.TAG_DISTILL_RUN}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", default="",
                   help="comma-separated folds to train (default: all folds of the config)")
    p.add_argument("--no-ensemble", action="store_true",
                   help="stop after training the folds (and the baselines)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the baselines (as baseline.models= does); the ensemble then blends "
                        "only with baseline runs that already exist")
    p.add_argument("--executor", choices=("local", "ray"), default="",
                   help="where the folds and baselines run (overrides cluster.executor): this "
                        "machine, or a Ray cluster (pip install 'fsd[ray]')")
    p.add_argument("--ray-address", default="",
                   help="the Ray cluster to join (overrides cluster.address; default: "
                        "RAY_ADDRESS, else a Ray started for this run)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    import mlflow

    from fsd.entrypoints import baseline as baseline_step
    from fsd.entrypoints import ensemble as ensemble_step
    from fsd.entrypoints import featurize as featurize_step
    from fsd.entrypoints import train_fold as train_step
    from fsd.entrypoints.report import results_table
    from fsd.tracking import datasets

    if args.executor or args.ray_address:
        cfg.cluster.executor = args.executor or cfg.cluster.executor
        cfg.cluster.address = args.ray_address or cfg.cluster.address
        cfg.validate()
    with tracking.stage_run(cfg, "main", run_name="main") as parent:
        features_run = _featurize(cfg, featurize_step)
        store, features_run = tracking.resolve_store(cfg, features_run)
        datasets.log_dataset(datasets.store_dataset(cfg, store.index, tracking.feature_key(cfg)),
                             datasets.TRAINING)
        folds = [int(f) for f in args.folds.split(",") if f.strip()] if args.folds else \
            sorted(int(f) for f in store.index["fold"].unique())
        baseline_runs: list[str] = []

        def baselines() -> None:
            if _baselines_wanted(cfg, args):
                by_model = baseline_step.baselines_logged(cfg, store, features_run, nested=True)
                baseline_runs.extend(by_model[m] for m in cfg.baseline.models)

        if cfg.cluster.executor == "ray":
            runs, baseline_runs = _on_ray(cfg, store, features_run, folds, parent.info.run_id,
                                          _baselines_wanted(cfg, args))
        else:
            runs = _train_folds(cfg, store, features_run, folds, parent.info.run_id, train_step,
                                meanwhile=baselines)
        fold_run_ids = [runs[fold] for fold in folds]
        summary = {"features_run": features_run, "fold_runs": fold_run_ids}
        if baseline_runs:
            summary["baseline_runs"] = baseline_runs
        if not args.no_ensemble:
            ensemble_run = ensemble_step.ensemble_logged(cfg, fold_run_ids, register=True, nested=True)
            summary["ensemble_run"] = ensemble_run
            if cfg.distill.enabled:
                from fsd.entrypoints import distill as distill_step

                summary["distill_run"] = distill_step.distill_logged(
                    cfg, ensemble_run, register=True, nested=True)["run_id"]
        # run lists comma-separated, as the ensemble run's fsd.fold_runs
        mlflow.set_tags({_SUMMARY_TAGS[k]: ",".join(v) if isinstance(v, list) else str(v)
                         for k, v in summary.items()})
        table = results_table(parent.info.run_id)
        headline = _log_headline(summary, table)
        tracking.describe(tracking.pipeline_description(cfg, summary, headline))
    _print_summary(cfg, parent.info.run_id, summary, table)
    return 0


def _train_folds(cfg: Config, store, features_run: str, folds: list[int], parent_run: str,
                 train_step, meanwhile) -> dict[int, str]:
    """Each fold's run id: finished runs of the same training are reused, the other folds
    trained here, one after another or ``train.fold_workers`` at a time in worker processes.
    ``meanwhile()`` (the baselines) runs here while the workers train, else after the folds."""
    done = {fold: r.info.run_id for fold, r in tracking.finished_folds(cfg, store.key).items()}
    runs = {}
    for fold in folds:
        if fold in done:
            log.info("fold %d: finished run %s exists, skipped", fold, done[fold])
            runs[fold] = done[fold]
    todo = [fold for fold in folds if fold not in done]
    if cfg.train.fold_workers > 1 and len(todo) > 1:
        from fsd.entrypoints.fold_workers import train_folds_in_workers

        runs |= train_folds_in_workers(
            cfg, todo, features_run, parent_run,
            lambda fold: train_step.fold_workdir(cfg, fold, store.key) / train_step.RUN_ID_FILE,
            meanwhile=meanwhile)
        return runs
    for fold in todo:
        import keras

        cfg.train.fold = fold
        _, runs[fold] = train_step.train_fold_logged(cfg, store, features_run, nested=True)
        keras.backend.clear_session()  # one process trains every fold: free the last graph
    meanwhile()
    return runs


def _baselines_wanted(cfg: Config, args: argparse.Namespace) -> bool:
    """Whether the pipeline fits the baselines (saying why not when it does not)."""
    if args.no_baseline or not cfg.baseline.models:
        log.info("baselines: skipped (%s)", "--no-baseline" if args.no_baseline
                 else "baseline.models is empty")
        return False
    if not cfg.summary.enabled:
        log.info("baselines: skipped (they fit the summary features; summary.enabled is false)")
        return False
    return True


def _on_ray(cfg: Config, store, features_run: str, folds: list[int], parent_run: str,
            with_baselines: bool) -> tuple[dict[int, str], list[str]]:
    """The folds and baselines not done yet as Ray tasks side by side (:mod:`fsd.cluster.folds`);
    returns each fold's run id and the baselines' run ids, all read from the tracking server
    (finished runs of the same training, settings and features are reused, as locally)."""
    from fsd.cluster.folds import train_on_ray

    done = tracking.finished_folds(cfg, store.key)
    for fold in folds:
        if fold in done:
            log.info("fold %d: finished run %s exists, skipped", fold, done[fold].info.run_id)
    models = cfg.baseline.models if with_baselines else []
    todo_models = [m for m in models if tracking.finished_baseline(cfg, store.key, m) is None]
    for model in models:
        if model not in todo_models:
            log.info("baseline %s: finished run with the same settings and features, reused", model)
    todo = [fold for fold in folds if fold not in done]
    if todo or todo_models:
        train_on_ray(cfg, todo, todo_models, features_run, parent_run,
                     fold_node=lambda fold: _last_node(cfg, fold, store.key))
        done = tracking.finished_folds(cfg, store.key)
    missing = [fold for fold in folds if fold not in done]
    if missing:  # a task that returned without a finished run: never expected, said plainly
        raise RuntimeError(f"folds {missing} have no finished run after their Ray tasks")
    baseline_runs = [tracking.finished_baseline(cfg, store.key, m).info.run_id for m in models]
    return {fold: done[fold].info.run_id for fold in folds}, baseline_runs


def _last_node(cfg: Config, fold: int, store_key: str) -> str:
    """The Ray node of the newest run of ``fold`` ('' when it has none)."""
    runs = tracking.find_runs(cfg, "train_fold", finished_only=False,
                              tags={tracking.TAG_FOLD: str(fold), tracking.TAG_STORE_KEY: store_key,
                                    tracking.TAG_TRAIN_KEY: tracking.train_key(cfg)})
    return runs[0].data.tags.get(tracking.TAG_RAY_NODE, "") if runs else ""


def _featurize(cfg: Config, featurize_step) -> str:
    from fsd.features.featurize import expected_store_key

    key = expected_store_key(cfg)
    runs = [r for r in tracking.featurize_runs(cfg) if r.data.tags.get(tracking.TAG_STORE_KEY) == key]
    if runs:
        log.info("featurize: finished run %s has the same settings and data, reused",
                 runs[0].info.run_id)
        return runs[0].info.run_id
    with tracking.stage_run(cfg, "featurize", nested=True) as child:
        featurize_step.featurize_logged(cfg)
        return child.info.run_id




def _log_headline(summary: dict, table: pd.DataFrame) -> dict[str, float]:
    """The pipeline's headline on the main run itself
    (:data:`fsd.tracking.descriptions.HEADLINE`; the children keep their own figures) and the
    comparison of every model on the same folds (``results.md``).
    Returns the metrics logged."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from fsd.entrypoints.report import to_markdown

    client = MlflowClient()
    out: dict[str, float] = {}
    if summary.get("ensemble_run"):
        m = client.get_run(summary["ensemble_run"]).data.metrics
        out.update({k: m[k] for k in ("oof_map3", "oof_accuracy", "cnn_oof_map3") if k in m})
    baselines = [client.get_run(rid).data.metrics.get("oof_map3")
                 for rid in summary.get("baseline_runs", [])]
    baselines = [v for v in baselines if v is not None]
    if baselines:
        out["best_baseline_oof_map3"] = max(baselines)
    tracking.log_run_metrics(out)
    if len(table):
        mlflow.log_text(to_markdown(table) + "\n", "results.md")
    return out


def _print_summary(cfg: Config, run_id: str, summary: dict, table: pd.DataFrame) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp_id = client.get_run(run_id).info.experiment_id
    lines = [f"\nexperiment {cfg.experiment_name!r}, main run {run_id}",
             f"  tracking URI: {mlflow.get_tracking_uri()}",
             f"  runs in the MLflow UI: {tracking.runs_url(exp_id)}",
             f"    (start it with: fsd ui --backend-store-uri {mlflow.get_tracking_uri()})"]
    for rid in summary.get("baseline_runs", []):
        r = client.get_run(rid)
        lines.append(f"  baseline {r.data.tags.get(tracking.TAG_BASELINE)}: {rid}  "
                     f"oof_map3={r.data.metrics.get('oof_map3', float('nan')):.4f}")
    shown = {"features_run": ("perf.audio_seconds_per_s",),  # a param: a timing
             "ensemble_run": ("oof_map3", "oof_accuracy", "cnn_oof_map3", "blend_weight",
                              "blend_insample_oof_map3"),
             "distill_run": ("student_oof_map3", "teacher_oof_map3")}
    for key in ("features_run", "ensemble_run", "distill_run"):
        if summary.get(key):
            r = client.get_run(summary[key])
            figures = {**r.data.params, **r.data.metrics}
            metrics = ", ".join(f"{k}={float(figures[k]):.4g}" for k in shown[key]
                                if k in figures)
            lines.append(f"  {key}: {r.info.run_id}  {metrics}")
    for rid in summary.get("fold_runs", []):
        r = client.get_run(rid)
        lines.append(f"  fold {r.data.tags.get(tracking.TAG_FOLD)}: {rid}  "
                     f"val_map3={r.data.metrics.get('val_map3', float('nan')):.4f}")
    if len(table):
        lines += ["", "  the models of this run, on the same folds:"]
        lines += ["    " + line for line in table.drop(columns="run").to_string(
            index=False, float_format=lambda v: f"{v:.3f}").splitlines()]
    print("\n".join(lines))
