"""The MLflow edge: runs, the resolved config, per-epoch metrics, artifacts, and finding the
runs of earlier steps (and their artifacts) again.

Only this module, ``fsd/entrypoints/`` and the serving pyfunc import mlflow; every stage is a
plain function that takes a Config and returns plain results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from fsd.config import Config, dump_config
from fsd.features.store import STORE_SECTIONS

log = logging.getLogger(__name__)

TAG_STAGE = "fsd.stage"
TAG_CONFIG = "fsd.config_name"
TAG_FEATURE_KEY = "fsd.feature_key"
TAG_TRAIN_KEY = "fsd.train_key"
TAG_FOLD = "fsd.fold"
TAG_FEATURES_RUN = "fsd.features_run"
TAG_STORE_DIR = "fsd.store_dir"
# The feature store's own key: the feature settings *and* the dataset's fingerprint (file names,
# sizes, mtimes), so changed clips never reuse old features or folds trained on them.
TAG_STORE_KEY = "fsd.store_key"
TAG_BASELINE = "fsd.baseline"  # the baseline model of a baseline run: logreg | hgb
TAG_BASELINE_KEY = "fsd.baseline_key"  # that model's settings (see baseline_key)
STAGE_BASELINE = "baseline"
# Who runs a run: set at its start, so a later step can tell a run whose process is gone
# (killed, crashed machine) from one still working, and mark it KILLED (see reap_dead_runs).
TAG_PID = "fsd.pid"
TAG_HOST = "fsd.host"
TAG_PROC_START = "fsd.proc_start"  # the process's start time (clock ticks), against pid reuse
TAG_CONTINUES = "fsd.continues"  # on a run that continues an interrupted one: that run's id
TAG_REAPED = "fsd.reaped"  # why a run was marked KILLED
# A featurize run that failed --strict: later steps refuse its features.
TAG_STRICT_FAILED = "fsd.strict_failed"

# MLflow caps a param value at 6000 characters; long lists are still readable in config.yaml.
_PARAM_LIMIT = 500

# Sections that define the features; train keys add the model and training sections.
FEATURE_SECTIONS = ("data",) + STORE_SECTIONS
TRAIN_SECTIONS = FEATURE_SECTIONS + ("pca", "model", "train")


def feature_key(cfg: Config) -> str:
    return cfg.section_key(*FEATURE_SECTIONS)


def train_key(cfg: Config) -> str:
    """Identifies one training recipe across its folds (the fold number itself, and the number
    of folds trained at once, excluded)."""
    fold, workers = cfg.train.fold, cfg.train.fold_workers
    cfg.train.fold, cfg.train.fold_workers = 0, 1
    try:
        return cfg.section_key(*TRAIN_SECTIONS)
    finally:
        cfg.train.fold, cfg.train.fold_workers = fold, workers


def baseline_key(cfg: Config, name: str) -> str:
    """Identifies baseline ``name``'s settings (only its own: another model's change, or the
    list of models, does not make a finished run stale). The data, features and folds are the
    store key's part."""
    import hashlib
    import json

    from fsd.baseline.model import model_params

    payload = json.dumps(model_params(name, cfg.baseline), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def set_experiment(cfg: Config) -> str:
    """Select (or create) the config's experiment; return its id."""
    if "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri().startswith("file:"):
        # MLflow 3 refuses the plain ./mlruns file store; sqlite is its own recommended default.
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
    active = mlflow.active_run()
    launched_by = active.info.run_id if active else os.environ.get("MLFLOW_RUN_ID")
    if launched_by:
        # `mlflow run` (or a parent step) opened a run in the experiment it was told; that
        # experiment wins, so nested steps and later steps launched the same way find it.
        exp_id = MlflowClient().get_run(launched_by).info.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
        return exp_id
    exp = mlflow.set_experiment(cfg.experiment_name)
    return exp.experiment_id


@contextmanager
def stage_run(
    cfg: Config, stage: str, *, nested: bool = False, tags: dict[str, str] | None = None,
    run_name: str | None = None,
) -> Iterator[Run]:
    """A run for one stage, with the fully resolved config logged as params and config.yaml."""
    exp_id = set_experiment(cfg)
    reaped = reap_dead_runs(exp_id)
    name = run_name or cfg.tracking.run_name or f"{stage}"
    all_tags = {TAG_STAGE: stage, TAG_CONFIG: cfg.name, **process_tags(), **(tags or {})}
    # A run of the same stage and config that just turned out to be dead is what this one
    # continues (featurize resumes its shards, main skips its finished steps): say so.
    same = [r for r in reaped if r.data.tags.get(TAG_STAGE) == stage
            and r.data.tags.get(TAG_CONFIG) == cfg.name]
    if same and TAG_CONTINUES not in all_tags:
        all_tags[TAG_CONTINUES] = max(same, key=lambda r: r.info.start_time or 0).info.run_id
    with mlflow.start_run(run_name=name, nested=nested, tags=all_tags) as run:
        log_config(cfg)
        yield run


def _proc_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), '' elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses; fields follow the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags naming the process that runs a run: pid, host name, start time."""
    import socket

    pid = os.getpid() if pid is None else pid
    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PROC_START: _proc_start(pid)}


def process_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (on this host) is still the one that started with ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if start:
        now = _proc_start(pid)
        if now and now != start:
            return False  # the pid was reused by another process
    return True


def run_process_gone(run: Run) -> bool:
    """A RUNNING run started on this host whose process no longer exists. Runs of other hosts,
    and runs without the process tags (started elsewhere or by an older version), are not
    judged."""
    import socket

    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(TAG_HOST) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(TAG_PID, ""))
    except ValueError:
        return False
    return not process_alive(pid, tags.get(TAG_PROC_START, ""))


def reap_dead_runs(experiment_id: str) -> list[Run]:
    """Mark KILLED every RUNNING run of the experiment whose process (on this host) is gone;
    returns those runs (as they were). Called when a step starts, so a kill -9 or a crash does not leave runs
    RUNNING forever."""
    import socket

    client = MlflowClient()
    try:
        runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000)
    except Exception as exc:  # never let housekeeping stop a step
        log.debug("cannot look for dead runs: %s", exc)
        return []
    reaped = []
    for run in runs:
        if not run_process_gone(run):
            continue
        rid = run.info.run_id
        pid = run.data.tags.get(TAG_PID)
        try:
            client.set_tag(rid, TAG_REAPED, f"process {pid} on {socket.gethostname()} was gone "
                           f"when process {os.getpid()} started a step; marked KILLED")
            client.set_terminated(rid, status="KILLED")
        except Exception as exc:
            log.warning("could not mark run %s KILLED: %s", rid, exc)
            continue
        log.warning("run %s (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                    rid, run.data.tags.get("mlflow.runName", ""), pid)
        reaped.append(run)
    return reaped


def strict_failure(run: Run) -> str:
    """Why a featurize run's features must not be used ('' when they may)."""
    reason = run.data.tags.get(TAG_STRICT_FAILED, "")
    if reason:
        return (f"featurize run {run.info.run_id} failed --strict ({reason}; see "
                "reports/rejects.csv); fix the data, or run featurize again without --strict")
    return ""


def log_config(cfg: Config) -> None:
    """Log every resolved field as a param (and the whole config as config.yaml).

    Under `mlflow run`, the -P values were already logged under the same dotted keys as the
    user typed them ("2" where the config holds 2.0); params cannot change, so those stay.
    """
    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.params if active else {}
    params = {k: _param_value(v) for k, v in cfg.flat().items() if k not in logged}
    mlflow.log_params(params)
    mlflow.log_text(dump_config(cfg), "config.yaml")


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."


def epoch_logger(prefix: str = "") -> Callable[[str, int, dict[str, float]], None]:
    """An ``on_epoch`` callback logging ``<stage>/<metric>`` with the epoch as step."""

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(
            {f"{prefix}{stage}/{k}": float(v) for k, v in metrics.items() if v is not None},
            step=int(epoch),
        )

    return on_epoch


def log_files(paths: dict[str, Path] | list[Path], artifact_path: str | None = None) -> None:
    items = paths.values() if isinstance(paths, dict) else paths
    for p in items:
        if p and Path(p).exists():
            mlflow.log_artifact(str(p), artifact_path)


def find_runs(
    cfg: Config, stage: str, *, tags: dict[str, str] | None = None, finished_only: bool = True,
) -> list[Run]:
    """Runs of ``stage`` in the config's experiment carrying ``tags``, newest first."""
    exp_id = set_experiment(cfg)
    flt = f"tags.`{TAG_STAGE}` = '{stage}'"
    if finished_only:
        flt += " and attributes.status = 'FINISHED'"
    for key, value in (tags or {}).items():
        flt += f" and tags.`{key}` = '{value}'"
    return MlflowClient().search_runs(
        [exp_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1000
    )


def featurize_runs(cfg: Config) -> list[Run]:
    """Finished featurize runs whose features match ``cfg``, newest first; runs that failed
    ``--strict`` are left out."""
    runs = find_runs(cfg, "featurize", tags={TAG_FEATURE_KEY: feature_key(cfg)})
    return [r for r in runs if not r.data.tags.get(TAG_STRICT_FAILED)]


def finished_folds(cfg: Config, store_key: str | None = None) -> dict[int, Run]:
    """The newest finished fold run of ``cfg``'s training recipe, per fold, on one store.

    ``store_key`` None: the store of the newest such fold run (the latest features).
    """
    runs = find_runs(cfg, "train_fold", tags={TAG_TRAIN_KEY: train_key(cfg)})
    if store_key is None and runs:
        store_key = runs[0].data.tags.get(TAG_STORE_KEY, "")
    by_fold: dict[int, Run] = {}
    for r in runs:
        if r.data.tags.get(TAG_STORE_KEY, "") == store_key:
            by_fold.setdefault(int(r.data.tags[TAG_FOLD]), r)
    return by_fold


def finished_baselines(cfg: Config, store_key: str, name: str | None = None,
                       key: str | None = None) -> list[Run]:
    """Finished baseline runs on the store ``store_key``, newest first; ``name`` and ``key``
    (a :func:`baseline_key`) narrow them to one model and its settings."""
    tags = {TAG_STORE_KEY: store_key}
    if name:
        tags[TAG_BASELINE] = name
    if key:
        tags[TAG_BASELINE_KEY] = key
    return find_runs(cfg, STAGE_BASELINE, tags=tags)


def finished_baseline(cfg: Config, store_key: str, name: str) -> Run | None:
    """The newest finished run of baseline ``name`` with ``cfg``'s settings on this store."""
    runs = finished_baselines(cfg, store_key, name, baseline_key(cfg, name))
    return runs[0] if runs else None


def best_baseline(cfg: Config, store_key: str, metric: str = "oof_map3") -> Run | None:
    """The finished baseline run on this store with the highest ``metric`` (ties: newest)."""
    scored = [r for r in finished_baselines(cfg, store_key) if metric in r.data.metrics]
    # newest first, and max() keeps the first of equal scores
    return max(scored, key=lambda r: r.data.metrics[metric]) if scored else None


def download_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Fetch a run's artifact folder into ``dst`` (a local cache); returns the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(dst)))
