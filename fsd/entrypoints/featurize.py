"""Decode every clip, compute log-mel and summary features, assign folds, and log it all.

Resumable: a killed run recomputes only the shards that are missing. A run whose features
already exist under the same key reuses them. Logs the resolved config, the dataset as an
MLflow dataset input, counts, throughput, the length histogram with the derived crop limits,
the PCA explained-variance plot, the fold assignment, the rejects report and the feature store.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fsd import tracking
from fsd.config import Config
from fsd.entrypoints.flags import parse_flag

HELP = "decode audio, compute features and folds (resumable), log them to MLflow"
log = logging.getLogger(__name__)

# resolve_store: how the steps after this one find its features (callers name it from here)
__all__ = ["featurize_logged", "resolve_store", "stats_split"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", nargs="?", const="true", default="false", type=parse_flag,
                   help="exit non-zero when any clip or CSV row was rejected (after logging)")


def resolve_store(cfg: Config, features_run_id: str = ""):
    """The feature store of a featurize run (:func:`fsd.tracking.lookups.resolve_store`)."""
    return tracking.resolve_store(cfg, features_run_id)


def run(cfg: Config, args: argparse.Namespace) -> int:
    import mlflow

    failed = False
    with tracking.stage_run(cfg, "featurize") as active:
        result = featurize_logged(cfg)
        log.info("featurize run %s: %d clips, %d rejected", active.info.run_id,
                 result.stats["n_clips"], result.stats["n_rejected"])
        if args.strict and result.rejects:
            # The run must not look usable: tagged (train_fold and the ensemble refuse it and
            # the search for features skips it) and ended FAILED.
            first = result.rejects[0]
            mlflow.set_tag(tracking.TAG_STRICT_FAILED,
                           f"{len(result.rejects)} clips or rows rejected")
            log.error("--strict: %d rejected (first: %s: %s); see rejects.csv in run %s",
                      len(result.rejects), first.fname, first.reason, active.info.run_id)
            failed = True
            mlflow.end_run(status="FAILED")
    return 3 if failed else 0


def featurize_logged(cfg: Config):
    """Run the featurize stage inside the active run and log what it produced."""
    import mlflow

    from fsd.features.featurize import featurize
    from fsd.tracking import datasets
    from fsd.tracking.artifacts import log_store
    from fsd.tracking.lookups import run_holding_store

    result = featurize(cfg)
    key = tracking.feature_key(cfg)
    mlflow.set_tags({tracking.TAG_FEATURE_KEY: key, tracking.TAG_STORE_KEY: result.store.key,
                     tracking.TAG_STORE_DIR: str(Path(result.store_dir).resolve()),
                     tracking.TAG_REUSED: str(result.reused).lower()})
    datasets.log_dataset(datasets.store_dataset(cfg, result.store.index, key), datasets.FEATURIZE)
    metrics, params = stats_split(result.stats)
    mlflow.log_metrics(metrics)
    tracking.log_new_params(params)
    # plots and reports once each, at the top (the store's copies stay out of features/)
    tracking.log_files(result.plots, "plots")
    tracking.log_files([result.rejects_path, result.folds_path], "reports")
    if cfg.store.log_to_mlflow:
        holder = run_holding_store(cfg, result.store.key) if result.reused else None
        if holder:
            # The same store (GBs on the full dataset) is already an artifact of that run.
            mlflow.set_tag(tracking.TAG_STORE_RUN, holder)
        else:
            log_store(Path(result.store_dir))
    tracking.describe(tracking.featurize_description(cfg, result))
    return result


# featurize's timings: metrics (under perf/); every other figure is a count or a size of the
# data, logged as a param "featurize.<name>"
_TIMINGS = ("extract_s", "elapsed_s", "audio_seconds_per_s")


def stats_split(stats: dict) -> tuple[dict[str, float], dict[str, str]]:
    metrics = {f"perf/{k}": float(v) for k, v in stats.items() if k in _TIMINGS and _is_number(v)}
    params = {f"featurize.{k}": (f"{v:.1f}" if isinstance(v, float) else str(v))
              for k, v in stats.items() if k not in _TIMINGS and _is_number(v)}
    return metrics, params


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
