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

# What the MLflow UI shows: a run's description, and the experiment's kind (custom model
# development opens the experiment on its training runs, not on the GenAI traces overview).
TAG_NOTE = "mlflow.note.content"
TAG_PARENT = "mlflow.parentRunId"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_URL = os.environ.get("FSD_UI_URL", "http://127.0.0.1:5000")
# Runs that train: MLflow samples CPU, memory (and GPU where pynvml finds one) beside them.
SYSTEM_METRICS_STAGES = ("train_fold", "sweep")
STAGES = ("stage1", "stage2")  # a fold's training stages, in order (fsd.train.fit.STAGES)
EPOCH_METRICS = ("loss", "val_loss", "val_map3", "val_accuracy", "lr")

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
        _tag_experiment_kind(exp_id)
        return exp_id
    exp = mlflow.set_experiment(cfg.experiment_name)
    _tag_experiment_kind(exp.experiment_id, exp.tags)
    return exp.experiment_id


def _tag_experiment_kind(exp_id: str, tags: dict | None = None) -> None:
    """Mark the experiment as model training, so MLflow 3's UI opens it on the runs table
    (without the tag it lands on the GenAI overview: "Traces 0")."""
    try:
        if tags is None:
            tags = MlflowClient().get_experiment(exp_id).tags
        if TAG_EXPERIMENT_KIND not in (tags or {}):
            MlflowClient().set_experiment_tag(exp_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    except Exception as exc:  # cosmetic: never stop a step for it
        log.debug("cannot tag experiment %s: %s", exp_id, exc)


def runs_url(experiment_id: str, base: str = "") -> str:
    """The MLflow UI page of the experiment's runs in the model-training view."""
    return f"{(base or UI_URL).rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# Without it MLflow 3 opens a run page in the GenAI view (its sidebar: traces, judges...).
_ML_VIEW = "?workflowType=machine_learning"


def run_url(experiment_id: str, run_id: str, base: str = "") -> str:
    return f"{(base or UI_URL).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{_ML_VIEW}"


def run_link(run_id: str, label: str = "") -> str:
    """A Markdown link to a run that works inside the MLflow UI (a description, a note)."""
    try:
        exp = MlflowClient().get_run(run_id).info.experiment_id
    except Exception:
        return f"`{label or run_id}`"
    return f"[{label or run_id[:8]}](#/experiments/{exp}/runs/{run_id}{_ML_VIEW})"


def data_summary(cfg: Config) -> str:
    """The data a config reads, in words."""
    d = cfg.data
    if d.source == "synthetic":
        return (f"the embedded sample (synthetic, {d.synthetic_clips_per_class} clips per class, "
                f"seed {d.synthetic_seed})")
    if d.source == "fsdkaggle2018":
        return f"FSDKaggle2018 (`{d.root}`)"
    return f"`{d.csv}` (audio in `{d.audio_dir}`)"


def describe(text: str, *, run_id: str | None = None) -> None:
    """Set a run's description (the active run's by default), closing with its parent.

    ``text`` is Markdown: the step, the data and the headline result; the line naming the
    parent run is added here."""
    client = MlflowClient()
    rid = run_id or mlflow.active_run().info.run_id
    parent = client.get_run(rid).data.tags.get(TAG_PARENT, "")
    if parent:
        try:
            pname = client.get_run(parent).data.tags.get("mlflow.runName", parent[:8])
        except Exception:
            pname = parent[:8]
        text = text.rstrip() + f"\n\nParent run: {run_link(parent, pname)}."
    client.set_tag(rid, TAG_NOTE, text[:5000])


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
    with mlflow.start_run(run_name=name, nested=nested, tags=all_tags,
                          log_system_metrics=system_metrics(stage)) as run:
        log_config(cfg, stage)
        if TAG_NOTE not in run.data.tags:
            describe(f"**{stage}** of `{cfg.name}` on {data_summary(cfg)}: running.")
        yield run


def system_metrics(stage: str) -> bool | None:
    """Whether a run of ``stage`` samples CPU/memory/GPU: training stages, when psutil is
    importable (None leaves MLflow's own setting, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)."""
    if stage not in SYSTEM_METRICS_STAGES:
        return None
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    return True


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


# The config sections each stage reads (the rest would only be noise in its Parameters tab);
# the whole config is always in config.yaml.
_STAGE_SECTIONS = {
    "featurize": ("name", "output_dir", "data", "audio", "logmel", "summary", "folds", "store",
                  "pca", "tracking"),
    "baseline": ("name", "output_dir", "data", "audio", "logmel", "summary", "folds", "store",
                 "baseline", "tracking"),
    "baselines": ("name", "output_dir", "data", "audio", "logmel", "summary", "folds", "store",
                  "baseline", "tracking"),
}
_NOT_IN = {"main": ("sweep.",), "ensemble": ("sweep.",), "train_fold": ("sweep.",)}
_FOLD_STAGES = ("train_fold", "sweep_trial")  # the only ones trained on one given fold


def stage_params(cfg: Config, stage: str | None = None) -> dict[str, Any]:
    """The resolved fields a run of ``stage`` logs as params: the sections it reads, no
    ``sweep.*`` outside a sweep, ``train.fold`` only on a fold's run, no empty
    ``tracking.*``. ``stage`` None: every field but the empty tracking ones."""
    flat = cfg.flat()
    out = {}
    for k, v in flat.items():
        if k.startswith("tracking.") and v in ("", None):
            continue
        if stage is None:
            out[k] = v
            continue
        if stage in _STAGE_SECTIONS and k.split(".")[0] not in _STAGE_SECTIONS[stage]:
            continue
        if any(k.startswith(p) for p in _NOT_IN.get(stage, ())):
            continue
        if k == "train.fold" and stage not in _FOLD_STAGES:
            continue
        out[k] = v
    return out


def log_config(cfg: Config, stage: str | None = None) -> None:
    """Log the resolved fields ``stage`` reads as params (see :func:`stage_params`) and the
    whole config as config.yaml.

    Under `mlflow run`, the -P values were already logged under the same dotted keys as the
    user typed them ("2" where the config holds 2.0); params cannot change, so those stay.
    """
    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.params if active else {}
    params = {k: _param_value(v) for k, v in stage_params(cfg, stage).items() if k not in logged}
    mlflow.log_params(params)
    mlflow.log_text(dump_config(cfg), "config.yaml")


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."


def epoch_logger(prefix: str = "", history_path: Path | None = None,
                 ) -> Callable[[str, int, dict[str, float]], None]:
    """An ``on_epoch`` callback logging ``<prefix><stage>/<metric>`` at one step per epoch
    counted across both stages (stage 2's first epoch follows stage 1's last), the x axis of
    the fold's training-curves plot. With ``history_path`` (the fold's history.csv, written
    before each call) the step is the epoch's row there, so a resumed fold continues the
    steps of its earlier epochs; without it, stage 2 follows the stage 1 epochs seen."""
    seen: dict[str, int] = {}

    def step_of(stage: str, epoch: int) -> int:
        if history_path is not None and Path(history_path).is_file():
            import pandas as pd

            try:
                h = pd.read_csv(history_path, usecols=["stage", "epoch"])
                rows = h.index[(h["stage"] == stage) & (h["epoch"] == epoch)]
                if len(rows):
                    return int(rows[-1])
            except (OSError, ValueError) as exc:
                log.debug("cannot read %s: %s", history_path, exc)
        before = STAGES[: STAGES.index(stage)] if stage in STAGES else ()
        return sum(seen.get(s, -1) + 1 for s in before) + int(epoch)

    def on_epoch(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        seen[stage] = max(seen.get(stage, -1), int(epoch))
        mlflow.log_metrics(
            {f"{prefix}{stage}/{k}": float(v) for k, v in metrics.items() if v is not None},
            step=step_of(stage, epoch),
        )

    return on_epoch


def replay_history(run_id: str, history_path: Path, prefix: str = "") -> int:
    """Log every epoch of a fold's ``history.csv`` that run ``run_id`` does not hold yet, at
    its own step (its row: the epoch counted across both stages), as :func:`epoch_logger`
    would have: a run that reuses or resumes a fold's work carries that work's whole history.
    Returns the number of epochs logged."""
    import time

    import pandas as pd
    from mlflow.entities import Metric

    path = Path(history_path)
    if not path.is_file():
        return 0
    hist = pd.read_csv(path)
    if not len(hist):
        return 0
    client = MlflowClient()
    have: dict[str, set[int]] = {}
    for stage in hist["stage"].unique():
        key = f"{prefix}{stage}/val_loss"
        have[stage] = {m.step for m in client.get_metric_history(run_id, key)}
    now = int(time.time() * 1000)
    batch, replayed = [], 0
    for step, row in hist.iterrows():
        if int(step) in have.get(row["stage"], set()):
            continue
        replayed += 1
        for k in EPOCH_METRICS:
            if k in row and pd.notna(row[k]):
                batch.append(Metric(f"{prefix}{row['stage']}/{k}", float(row[k]), now, int(step)))
    for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    return replayed


# result.json keys of a fold (fsd.train.fit) that are bookkeeping, not measurements: logged
# as params ("fold.<name>"), so they neither draw a chart nor pass for a score.
FOLD_PARAMS = {"n_train": "fold.n_train", "n_val": "fold.n_val", "epochs": "fold.epochs",
               "epochs_stage1": "fold.epochs_stage1", "epochs_stage2": "fold.epochs_stage2",
               "crop_min": "fold.crop_min", "crop_max": "fold.crop_max",
               "pca_components": "fold.pca_components", "params": "fold.model_parameters",
               "distinct_shapes": "fold.distinct_shapes", "val_lengths": "fold.val_lengths",
               "selected_stage": "fold.selected_stage"}
# the rest under names that say what they are: the kept model's validation (no TTA) as
# val_*, each stage's best epoch as best/stageN_val_*, times under perf/
FOLD_METRICS = {"val_map3": "val_map3", "val_accuracy": "val_accuracy", "val_loss": "val_loss",
                "stage1_val_map3": "best/stage1_val_map3",
                "stage1_val_accuracy": "best/stage1_val_accuracy",
                "stage2_val_map3": "best/stage2_val_map3",
                "stage2_val_accuracy": "best/stage2_val_accuracy",
                "samples_per_s": "perf/train_samples_per_s", "train_seconds": "perf/train_seconds"}


def fold_summary(result: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A fold's result.json as (metrics, params) under the names above; a numeric key not
    listed stays a metric under its own name."""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for k, v in result.items():
        if k == "fold":
            continue
        if k in FOLD_PARAMS:
            params[FOLD_PARAMS[k]] = _param_value(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics[FOLD_METRICS.get(k, k)] = float(v)
    return metrics, params


def log_new_params(params: dict[str, Any]) -> None:
    """Log the params the active run does not hold yet (params cannot change)."""
    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.params if active else {}
    new = {k: _param_value(v) for k, v in params.items() if k not in logged}
    if new:
        mlflow.log_params(new)


def fold_description(cfg: Config, fold: int, result: dict[str, Any], features_run: str = "",
                     reused: str = "") -> str:
    """The description of a fold's run: step, data, headline result, reuse."""
    def f(key: str) -> str:
        v = result.get(key)
        return f"{v:.3f}" if isinstance(v, (int, float)) and v == v else "n/a"

    kept = result.get("selected_stage", "stage2")
    lines = [
        f"**train_fold {fold}** of `{cfg.name}` on {data_summary(cfg)}: trained on "
        f"{result.get('n_train', '?')} clips, validated on the {result.get('n_val', '?')} of "
        f"fold {fold}.",
        "",
        f"- kept model ({kept}): **val MAP@3 {f('val_map3')}**, accuracy {f('val_accuracy')} "
        "(fixed lengths, centre crops, no TTA)",
        f"- best epoch of stage 1: val MAP@3 {f('stage1_val_map3')}; of stage 2: "
        f"{f('stage2_val_map3')}",
        f"- {result.get('epochs', '?')} epochs ({result.get('epochs_stage1', '?')} + "
        f"{result.get('epochs_stage2', '?')}), per-epoch curves under `stage1/` and `stage2/` "
        "(step = epoch across both stages)",
    ]
    if features_run:
        lines.append(f"- features: {run_link(features_run, 'featurize run')}")
    if reused:
        lines += ["", reused]
    return "\n".join(lines)


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


def download_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Fetch a run's artifact folder into ``dst`` (a local cache); returns the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(dst)))


def print_ui_urls(base: str = "") -> None:
    """Print, for each experiment of the tracking store, the UI link to its runs (``make ui``)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        print(f"no tracking store at {uri} yet: run `make demo` first")
        return
    exps = [e for e in MlflowClient(uri).search_experiments() if e.name != "Default"]
    if not exps:
        print(f"no experiments in {uri} yet: run `make demo` first")
    for e in exps:
        print(f"  {e.name}: {runs_url(e.experiment_id, base)}")
