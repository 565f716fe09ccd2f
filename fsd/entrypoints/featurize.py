"""Decode every clip, compute log-mel and summary features, assign folds, and log it all.

Resumable: a killed run recomputes only the shards that are missing. A run whose features
already exist under the same key reuses them. Logs the resolved config, the dataset as an
MLflow dataset input, counts, throughput, the length histogram with the derived crop limits,
the PCA explained-variance plot, the fold assignment, the rejects report and the feature store.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from pathlib import Path

import mlflow

from fsd import tracking
from fsd.config import Config, ConfigError
from fsd.entrypoints.flags import parse_flag

HELP = "decode audio, compute features and folds (resumable), log them to MLflow"
log = logging.getLogger(__name__)

STORE_ARTIFACT = "features"
TAG_STORE_RUN = "fsd.store_run"  # set where a reused store was logged by an earlier run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", nargs="?", const="true", default="false", type=parse_flag,
                   help="exit non-zero when any clip or CSV row was rejected (after logging)")


def run(cfg: Config, args: argparse.Namespace) -> int:
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
    from fsd.features.featurize import featurize

    result = featurize(cfg)
    key = tracking.feature_key(cfg)
    mlflow.set_tags({tracking.TAG_FEATURE_KEY: key, tracking.TAG_STORE_KEY: result.store.key,
                     tracking.TAG_STORE_DIR: str(Path(result.store_dir).resolve()),
                     "fsd.reused": str(result.reused).lower()})
    index = result.store.index
    with warnings.catch_warnings():
        # MLflow hints about integer columns and ambiguous local sources; neither applies here.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            index[["fname", "label", "fold", "verified", "seconds"]],
            source=_dataset_source(cfg), name=f"{cfg.data.source}-{key}", targets="label",
        )
    mlflow.log_input(dataset, context="featurize")
    metrics, params = stats_split(result.stats)
    mlflow.log_metrics(metrics)
    tracking.log_new_params(params)
    # plots and reports once each, at the top (the store's copies stay out of features/)
    tracking.log_files(result.plots, "plots")
    tracking.log_files([result.rejects_path, result.folds_path], "reports")
    if cfg.store.log_to_mlflow:
        holder = _run_holding_store(cfg, result.store.key) if result.reused else None
        if holder:
            # The same store (GBs on the full dataset) is already an artifact of that run.
            mlflow.set_tag(TAG_STORE_RUN, holder)
        else:
            _log_store(Path(result.store_dir))
    tracking.describe(_description(cfg, result))
    return result


# featurize's timings: metrics (under perf/); every other figure is a count or a size of the
# data, logged as a param "featurize.<name>"
_TIMINGS = ("extract_s", "elapsed_s", "audio_seconds_per_s")


def stats_split(stats: dict) -> tuple[dict[str, float], dict[str, str]]:
    metrics = {f"perf/{k}": float(v) for k, v in stats.items() if k in _TIMINGS and _is_number(v)}
    params = {f"featurize.{k}": (f"{v:.1f}" if isinstance(v, float) else str(v))
              for k, v in stats.items() if k not in _TIMINGS and _is_number(v)}
    return metrics, params


def _description(cfg: Config, result) -> str:
    st = result.stats
    hop = cfg.logmel.hop_length / cfg.logmel.sample_rate
    folds = result.store.index["fold"].nunique()
    lines = [f"**featurize** of `{cfg.name}`: {tracking.data_summary(cfg)}.", "",
             f"- **{st.get('n_clips', '?')} train clips** in {st.get('n_labels', '?')} classes, "
             f"{folds} folds; {st.get('n_rejected', 0)} rejected, {st.get('n_warnings', 0)} "
             f"warnings (`reports/rejects.csv`); {st.get('n_test', 0)} test clips",
             f"- {st.get('audio_seconds', 0) / 60:.1f} min of audio; crop limits "
             f"{st.get('crop_min')}-{st.get('crop_max')} frames "
             f"({st.get('crop_min', 0) * hop:.2f}-{st.get('crop_max', 0) * hop:.2f} s)"]
    if result.reused:
        lines.append(f"- features **reused** from `{result.store_dir}` (nothing recomputed)")
    elif st.get("audio_seconds_per_s"):
        lines.append(f"- {st['audio_seconds_per_s']:.1f} audio-s/s with {st.get('workers')} "
                     "workers")
    lines.append("- plots: `plots/`; the feature store: `features/`")
    return "\n".join(lines)


def _run_holding_store(cfg: Config, store_key: str) -> str | None:
    """A finished featurize run that logged the store with this key, if any."""
    for run in tracking.featurize_runs(cfg):
        if run.data.tags.get(tracking.TAG_STORE_KEY) == store_key:
            return run.data.tags.get(TAG_STORE_RUN, run.info.run_id)
    return None


def _log_store(store_dir: Path) -> None:
    # Shards are a resume aid for this machine; other machines need only the consolidated files.
    # Its plots and reports are logged once, under plots/ and reports/.
    for child in sorted(store_dir.iterdir()):
        if child.name in ("shards", "plots", "rejects.csv", "folds.csv") or child.name.startswith("."):
            continue
        if child.is_dir():
            mlflow.log_artifacts(str(child), f"{STORE_ARTIFACT}/{child.name}")
        else:
            mlflow.log_artifact(str(child), STORE_ARTIFACT)


def _dataset_source(cfg: Config) -> str:
    if cfg.data.source == "fsdkaggle2018":
        return str(Path(cfg.data.root).resolve())
    if cfg.data.source == "folder":
        return str(Path(cfg.data.csv).resolve())
    from fsd.data.synthetic import ensure_sample

    # The generated sample is real files on disk; MLflow resolves a local path as the source.
    return str(ensure_sample(cfg.store.cache_dir, cfg.data.synthetic_clips_per_class,
                             cfg.data.synthetic_seed, cfg.audio.sample_rate).resolve())


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve_store(cfg: Config, features_run: str = ""):
    """The FeatureStore a training step should use, and the featurize run it came from.

    With ``features_run`` that run's features are used (refused when its feature parameters
    differ from ``cfg``'s); otherwise the newest finished featurize run with the same feature key.
    The local store is used where it exists (same machine); otherwise the run's ``features``
    artifacts are downloaded into the local cache, so a fold can train on another machine.
    """
    from fsd.features.store import FeatureStore, StoreError

    key = tracking.feature_key(cfg)
    if features_run:
        run = mlflow.get_run(features_run)
        refused = tracking.strict_failure(run)
        if refused:
            raise ConfigError(refused)
        if run.info.status != "FINISHED":
            raise ConfigError(f"featurize run {features_run} is {run.info.status}, not "
                              "FINISHED: its features may be incomplete; run featurize again")
        run_key = run.data.tags.get(tracking.TAG_FEATURE_KEY, "")
        if run_key != key:
            raise ConfigError(
                f"features of run {features_run} are stale for this config: feature key "
                f"{run_key or '?'} != {key} (data/audio/logmel/summary/folds settings differ); "
                "run featurize with this config"
            )
    else:
        runs = tracking.featurize_runs(cfg)
        failed = [r for r in tracking.find_runs(cfg, "featurize", finished_only=False,
                                                tags={tracking.TAG_FEATURE_KEY: key})[:1]
                  if tracking.strict_failure(r)]
        if failed and (not runs or failed[0].info.start_time > runs[0].info.start_time):
            # the newest featurize of this config failed --strict: never fall back silently
            # to older features
            raise ConfigError(tracking.strict_failure(failed[0]))
        if not runs:
            raise ConfigError(
                f"no finished featurize run with feature key {key} in experiment "
                f"{cfg.experiment_name!r}: run `fsd featurize --config ...` "
                "(or `mlflow run . -e featurize`) with the same config first"
            )
        run = runs[0]
    store_key = run.data.tags.get(tracking.TAG_STORE_KEY) or None
    local = run.data.tags.get(tracking.TAG_STORE_DIR, "")
    cache = Path(cfg.store.cache_dir) / "features" / (store_key or key)
    for candidate in (Path(local) if local else None, cache):
        if candidate is not None and candidate.exists():
            try:
                return FeatureStore.open(candidate, expected_key=store_key), run.info.run_id
            except StoreError as exc:
                log.warning("store %s unusable (%s); fetching from MLflow", candidate, exc)
    holder = run.data.tags.get(TAG_STORE_RUN, run.info.run_id)
    log.info("downloading features of run %s into %s", holder, cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # A private download folder, moved into place in one step: folds started together on one
    # machine each fetch, and the first complete copy wins.
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as tmp:
        downloaded = tracking.download_artifacts(holder, STORE_ARTIFACT, Path(tmp))
        try:
            os.replace(downloaded, cache)
        except OSError:
            if not cache.exists():
                raise
    return FeatureStore.open(cache, expected_key=store_key), run.info.run_id
