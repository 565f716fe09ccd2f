"""The Optuna study: search space, objective, storage, pruning, and the study's summary.

No MLflow here: the objective tells a :class:`TrialTracker` what happens (a trial starts, an
epoch ends, a fold scores, the trial ends with a state) and the MLflow edge
(``fsd.entrypoints.sweep``) turns that into nested runs.

A trial samples four config keys (the Optuna parameter names *are* the dotted keys, so a
trial's params apply to a :class:`~fsd.config.Config` as they are):

- ``train.stage1.mixup_alpha`` in [sweep.alpha1_min, sweep.alpha1_max]
- ``train.stage2.mixup_alpha`` in [sweep.alpha2_min, sweep.alpha2_max]
- ``train.crop_min`` in [sweep.crop_min_low, sweep.crop_min_high]
- ``train.crop_max`` in [max(sweep.crop_max_low, crop_min + 1), sweep.crop_max_high]

and trains the folds ``sweep.folds`` with the short schedules of the sweep section; its value
is their mean validation MAP@3 (maximised).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from fsd.config import Config, ConfigError, StageConfig, SweepConfig, from_dict
from fsd.train.experimentdir import ExperimentDir

log = logging.getLogger(__name__)

OnEpoch = Callable[[str, int, dict[str, float]], None]
# fsd.train.fit.train_fold(cfg, store, fold, workdir, on_epoch=None, progress=True) -> FoldResult
TrainFn = Callable[..., Any]

ALPHA1 = "train.stage1.mixup_alpha"
ALPHA2 = "train.stage2.mixup_alpha"
CROP_MIN = "train.crop_min"
CROP_MAX = "train.crop_max"
PARAM_KEYS = (ALPHA1, ALPHA2, CROP_MIN, CROP_MAX)

OBJECTIVE = "val_map3"

# Heartbeats for shared (non-sqlite) storages: a worker that dies leaves its trial RUNNING;
# after the grace period another worker marks it failed and re-queues its params (at most
# MAX_RETRY times).
HEARTBEAT_S = 60
GRACE_S = 180
MAX_RETRY = 2


# -- search space -------------------------------------------------------------------------------

def check_space(cfg: Config) -> None:
    """Refuse a sweep section that cannot be sampled or trained (before any work)."""
    sw = cfg.sweep
    for lo, hi in (("alpha1_min", "alpha1_max"), ("alpha2_min", "alpha2_max"),
                   ("crop_min_low", "crop_min_high"), ("crop_max_low", "crop_max_high")):
        if getattr(sw, lo) > getattr(sw, hi):
            raise ConfigError(f"sweep.{lo} ({getattr(sw, lo)}) must not exceed sweep.{hi} "
                              f"({getattr(sw, hi)})")
    if sw.alpha1_min < 0 or sw.alpha2_min < 0:
        raise ConfigError("sweep.alpha1_min/alpha2_min must be >= 0 (mixup alpha)")
    if sw.crop_min_low < 1:
        raise ConfigError(f"sweep.crop_min_low must be >= 1 frame, got {sw.crop_min_low}")
    if sw.crop_min_high >= sw.crop_max_high:
        raise ConfigError("sweep.crop_min_high must be below sweep.crop_max_high")
    if min(sw.cyclic_epochs, sw.plateau_low_epochs, sw.plateau_high_epochs) < 0 or (
            sw.cyclic_epochs + sw.plateau_low_epochs + sw.plateau_high_epochs) < 1:
        raise ConfigError("sweep.cyclic_epochs/plateau_low_epochs/plateau_high_epochs must be "
                          ">= 0 and give at least one epoch")
    if not sw.folds:
        raise ConfigError("sweep.folds must name at least one fold")
    if len(set(sw.folds)) != len(sw.folds):
        raise ConfigError(f"sweep.folds repeats a fold: {sw.folds}")
    if not cfg.folds.use_dataset_folds:
        bad = [f for f in sw.folds if not 0 <= f < cfg.folds.n_folds]
        if bad:
            raise ConfigError(f"sweep.folds {bad} outside [0, {cfg.folds.n_folds})")
    if sw.n_trials < 0 or sw.timeout < 0:
        raise ConfigError("sweep.n_trials and sweep.timeout must be >= 0")


def suggest_params(trial: optuna.Trial, sweep: SweepConfig) -> dict[str, float | int]:
    """Sample one point of the search space; ``crop_min < crop_max`` always holds."""
    params: dict[str, float | int] = {
        ALPHA1: _suggest_alpha(trial, ALPHA1, sweep.alpha1_min, sweep.alpha1_max),
        ALPHA2: _suggest_alpha(trial, ALPHA2, sweep.alpha2_min, sweep.alpha2_max),
    }
    crop_min = trial.suggest_int(CROP_MIN, sweep.crop_min_low, sweep.crop_min_high)
    # crop_max is exclusive: conditioning its lower bound on crop_min keeps every sample valid
    # instead of spending trials on an infeasible corner. check_space guarantees
    # crop_min + 1 <= crop_min_high + 1 <= crop_max_high, so the range is never empty.
    low = max(sweep.crop_max_low, crop_min + 1)
    params[CROP_MIN] = crop_min
    params[CROP_MAX] = trial.suggest_int(CROP_MAX, low, sweep.crop_max_high)
    return params


def _suggest_alpha(trial: optuna.Trial, name: str, low: float, high: float) -> float:
    # Beta(a, a) changes shape multiplicatively (0.1 vs 0.2 differs as much as 1 vs 2), so a
    # positive range is searched on a log scale; a range starting at 0 (mixup off) cannot be.
    return trial.suggest_float(name, low, high, log=0 < low < high)


def apply_params(cfg: Config, values: dict[str, Any]) -> Config:
    """A validated copy of ``cfg`` with dotted ``key: value`` pairs set."""
    data = cfg.to_dict()
    for key, value in values.items():
        *path, leaf = key.split(".")
        node = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"{key!r} is not a config key")
        if leaf not in node:
            raise ConfigError(f"{key!r} is not a config key")
        node[leaf] = value
    return from_dict(data)


def trial_config(cfg: Config, params: dict[str, Any]) -> Config:
    """The config one trial trains: the sampled values and the sweep's short schedules."""
    sw = cfg.sweep
    values = dict(params)
    for stage in ("stage1", "stage2"):
        values[f"train.{stage}.cyclic_epochs"] = sw.cyclic_epochs
        values[f"train.{stage}.plateau_low_epochs"] = sw.plateau_low_epochs
        values[f"train.{stage}.plateau_high_epochs"] = sw.plateau_high_epochs
    return apply_params(cfg, values)


# -- storage, sampler, pruner -------------------------------------------------------------------

def study_name(cfg: Config) -> str:
    return cfg.sweep.study_name or f"{cfg.name}-sweep"


def study_dir(cfg: Config) -> Path:
    """Trial workdirs and the best config of one study: ``<experiment>/sweep/<study>``."""
    return ExperimentDir.of(cfg).study(study_name(cfg))


def storage_url(cfg: Config) -> str:
    """``sweep.storage``, or a sqlite file beside the experiment's outputs."""
    if cfg.sweep.storage:
        return cfg.sweep.storage
    return f"sqlite:///{ExperimentDir.of(cfg).optuna_db.resolve()}"


def is_sqlite(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] == "sqlite"


def redact(url: str) -> str:
    """The URL without its password, fit for logs, tags and written configs.

    The password is dropped, not masked, so the URL still works where the driver finds the
    password itself (PGPASSWORD, ~/.pgpass, MYSQL_PWD).
    """
    if not url:
        return url
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL SQLAlchemy understands: say nothing of it rather than leak
        return "<unparsable storage URL>"
    if parsed.password is None:
        return url
    bare = sqlalchemy.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host,
                                        parsed.port, parsed.database, parsed.query)
    return bare.render_as_string(hide_password=False)


def make_storage(url: str, *, heartbeat: bool | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage for any SQLAlchemy URL.

    ``heartbeat`` (default: for every URL but sqlite, the storages that several workers share)
    turns on trial heartbeats with a retry of trials whose worker died.
    """
    import sqlalchemy

    sqlite = is_sqlite(url)
    kwargs: dict[str, Any] = {}
    if sqlite:
        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A second process reading the file (optuna-dashboard, a rerun) must wait, not fail.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat is None:
        heartbeat = not sqlite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            kwargs.update(_heartbeat_kwargs())
        return optuna.storages.RDBStorage(url, **kwargs)


def heartbeat_seconds() -> tuple[int, int]:
    """(heartbeat interval, grace period): HEARTBEAT_S and GRACE_S, or the environment's
    FSD_SWEEP_HEARTBEAT_S / FSD_SWEEP_GRACE_S (short ones for tests)."""
    beat = int(os.environ.get("FSD_SWEEP_HEARTBEAT_S") or HEARTBEAT_S)
    grace = int(os.environ.get("FSD_SWEEP_GRACE_S") or GRACE_S)
    return max(beat, 1), max(grace, beat, 1)


def _heartbeat_kwargs() -> dict[str, Any]:
    storages = optuna.storages
    beat, grace = heartbeat_seconds()
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        return {"heartbeat_interval": beat, "grace_period": grace,
                "heartbeat_stale_trial_callback":
                    storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)}
    return {"heartbeat_interval": beat, "grace_period": grace,
            "failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    if sweep.pruner == "median":
        warmup = sweep.pruner_warmup_steps if sweep.pruner_warmup_steps >= 0 else sweep.cyclic_epochs
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                           n_warmup_steps=warmup)
    raise ConfigError(f"sweep.pruner must be median or none, got {sweep.pruner!r}")


def open_study(cfg: Config, storage: str | optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create the study, or load it when one of that name exists (a rerun continues it)."""
    check_space(cfg)
    if storage is None:
        storage = make_storage(storage_url(cfg))
    study = optuna.create_study(storage=storage, study_name=study_name(cfg),
                                direction="maximize", pruner=make_pruner(cfg.sweep),
                                load_if_exists=True)
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(cfg, study, storage))
    return study


def sampler_seed(cfg: Config, study: optuna.Study, storage: Any) -> int:
    """sweep.seed plus how far the study has got: reproducible, yet a rerun does not replay
    the first run's random start-up samples. Workers sharing a server storage also mix in who
    they are, or workers started together would all draw the same samples (such a sweep is
    not reproducible anyway: trials interleave)."""
    seed = cfg.sweep.seed + len(study.trials)
    url = getattr(storage, "url", storage if isinstance(storage, str) else "")
    if url and not is_sqlite(url):
        seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return seed % 2**32


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float],
             n_trials: int | None, timeout: float | None) -> None:
    """Run trials; a failing trial is recorded as FAIL and the sweep goes on.

    A trial that another worker sharing the storage already marked FAIL (its heartbeats
    stopped arriving in time, e.g. on a starved machine; its params are re-queued by the
    retry callback) cannot be told: Optuna raises, and this worker would die with it. It is
    logged, counted as one of this worker's trials, and the sweep goes on."""
    import time

    start = time.monotonic()
    ran = [0]

    def count(_study: optuna.Study, _trial: FrozenTrial) -> None:
        ran[0] += 1

    while True:
        left = None if not n_trials else n_trials - ran[0]
        time_left = None if not timeout else timeout - (time.monotonic() - start)
        if (left is not None and left <= 0) or (time_left is not None and time_left <= 0):
            return
        try:
            study.optimize(objective, n_trials=left, timeout=time_left, catch=(Exception,),
                           gc_after_trial=True, callbacks=[count])
            return
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
            if not _finished_elsewhere(exc):
                raise
            log.warning("a trial of this worker was already ended by another worker (its "
                        "heartbeat went stale: %s); it is retried under a new number; going on",
                        exc)
            ran[0] += 1


def _finished_elsewhere(exc: BaseException) -> bool:
    text = str(exc)
    return (isinstance(exc, optuna.exceptions.UpdateFinishedTrialError)
            or text.startswith("Cannot tell a ") or "has already finished" in text)


# -- the objective ------------------------------------------------------------------------------

class TrialTracker:
    """What the objective tells the outside world about a trial; the default tells no one."""

    def start(self, trial: optuna.Trial, params: dict[str, Any], cfg: Config) -> None:
        """A trial begins, with its sampled params and the config it trains."""

    def on_epoch(self, fold: int) -> OnEpoch | None:
        """An extra per-epoch callback for ``fold`` (e.g. metric logging), or None."""
        return None

    def fold_done(self, fold: int, value: float, workdir: Path) -> None:
        """A fold of the trial finished with validation MAP@3 ``value``."""

    def finish(self, trial: optuna.Trial, state: TrialState, value: float | None,
               error: BaseException | None) -> None:
        """The trial ends: COMPLETE with ``value``, PRUNED, or FAIL with ``error``."""


def stage_epochs(stage: StageConfig) -> int:
    return stage.cyclic_epochs + stage.plateau_low_epochs + stage.plateau_high_epochs


class EpochReporter:
    """``on_epoch`` for one fold of a trial: reports val_map3 to Optuna and asks to prune.

    Steps are global across stages and folds, laid out by the schedule's epoch budgets
    (stage 2 starts after stage 1's budget, fold i after i budgets of both), so step s means
    the same point of training in every trial even when early stopping ends a phase early.
    """

    def __init__(self, trial: optuna.Trial, cfg: Config, fold_index: int,
                 also: OnEpoch | None = None) -> None:
        s1, s2 = stage_epochs(cfg.train.stage1), stage_epochs(cfg.train.stage2)
        base = fold_index * (s1 + s2)
        self.offsets = {"stage1": base, "stage2": base + s1}
        self.trial = trial
        self.also = also
        self.last_step = base - 1

    def __call__(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.also is not None:
            self.also(stage, epoch, metrics)
        value = metrics.get(OBJECTIVE)
        if value is None or not math.isfinite(float(value)):
            return
        # Never report a step twice (Optuna ignores repeats): an unexpected epoch numbering
        # still yields increasing steps.
        step = max(self.offsets.get(stage, self.last_step + 1) + int(epoch), self.last_step + 1)
        self.last_step = step
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned at step {step} ({stage} epoch {epoch}): "
                f"{OBJECTIVE} {float(value):.4f}")


def fold_value(result: Any, workdir: Path) -> float:
    """The fold's validation MAP@3 from train_fold's result (or its result.json)."""
    value = getattr(result, OBJECTIVE, None)
    if value is None:
        value = (getattr(result, "metrics", None) or {}).get(OBJECTIVE)
    if value is None:
        from fsd.train.folddir import FoldDir

        value = FoldDir(workdir).read_result()[OBJECTIVE]
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{OBJECTIVE} is {value}")
    return value


def _drop_checkpoints(trial_dir: Path) -> None:
    # A stopped trial never resumes (a retry is a new trial), so its resume snapshots (weights
    # and optimizer state, several times the model's size) are only clutter.
    for ckpt in Path(trial_dir).glob("fold_*/checkpoint"):
        shutil.rmtree(ckpt, ignore_errors=True)


def _release_models() -> None:
    # Every trial builds new networks; without this, Keras' global state (layer name counters,
    # TF graphs of traced functions) grows over a long sweep.
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()


def _default_train() -> TrainFn:
    from fsd.train.fit import train_fold  # TensorFlow loads only when a trial trains

    return train_fold


@dataclass
class Objective:
    """Train ``sweep.folds`` with a trial's params; return their mean validation MAP@3."""

    cfg: Config
    store: Any
    root: Path  # the study's folder; trials train in root/trial_<n>/fold_<k>
    tracker: TrialTracker = field(default_factory=TrialTracker)
    train_fn: TrainFn | None = None
    progress: bool = False

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.cfg.sweep)
        tcfg = trial_config(self.cfg, params)
        trial_dir = Path(self.root) / f"trial_{trial.number}"
        trial.set_user_attr("workdir", str(trial_dir))
        self.tracker.start(trial, params, tcfg)
        try:
            value = self._evaluate(trial, tcfg, trial_dir)
        except optuna.TrialPruned as exc:
            log.info("%s", exc)
            _drop_checkpoints(trial_dir)
            self.tracker.finish(trial, TrialState.PRUNED, None, exc)
            raise
        except BaseException as exc:
            _drop_checkpoints(trial_dir)
            self.tracker.finish(trial, TrialState.FAIL, None, exc)
            raise
        finally:
            _release_models()
        self.tracker.finish(trial, TrialState.COMPLETE, value, None)
        log.info("trial %d: %s = %.4f with %s", trial.number, OBJECTIVE, value, params)
        return value

    def _evaluate(self, trial: optuna.Trial, tcfg: Config, trial_dir: Path) -> float:
        train = self.train_fn or _default_train()
        values: dict[int, float] = {}
        for i, fold in enumerate(tcfg.sweep.folds):
            fold_cfg = apply_params(tcfg, {"train.fold": fold})
            workdir = trial_dir / f"fold_{fold}"
            if workdir.exists():
                # Trials never resume: a leftover folder belongs to a deleted study of the same
                # name, and train_fold would resume its checkpoint.
                shutil.rmtree(workdir)
            workdir.mkdir(parents=True)
            report = EpochReporter(trial, tcfg, i, also=self.tracker.on_epoch(fold))
            result = train(fold_cfg, self.store, fold, workdir, on_epoch=report,
                           progress=self.progress)
            values[fold] = fold_value(result, workdir)
            self.tracker.fold_done(fold, values[fold], workdir)
        trial.set_user_attr("fold_" + OBJECTIVE, {str(k): v for k, v in values.items()})
        return sum(values.values()) / len(values)


# -- the study's summary ------------------------------------------------------------------------

def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, the params, and where it ran."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "value": t.value}
        for key in PARAM_KEYS:
            row[key] = t.params.get(key)
        row.update({k: v for k, v in t.params.items() if k not in PARAM_KEYS})
        row["last_step"] = t.last_step
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id", "")
        rows.append(row)
    columns = ["number", "state", "value", *PARAM_KEYS]
    return pd.DataFrame(rows, columns=None if rows else columns)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if completed else None


def summary(study: optuna.Study) -> dict[str, Any]:
    """Counts by state and the best trial (None when no trial completed)."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "n_trials": len(trials),
        "n_complete": counts[TrialState.COMPLETE],
        "n_pruned": counts[TrialState.PRUNED],
        "n_failed": counts[TrialState.FAIL],
        "n_running": counts[TrialState.RUNNING] + counts[TrialState.WAITING],
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else None,
    }


def importances_unavailable(study: optuna.Study) -> str:
    """Why parameter importances cannot be computed (empty when they can)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return f"needs at least 2 completed trials, the study has {len(done)}"
    if len({t.value for t in done}) < 2:
        return f"all {len(done)} completed trials scored the same {OBJECTIVE}"
    if all(len({repr(t.params.get(k)) for t in done}) < 2 for k in PARAM_KEYS):
        return "no parameter varied across the completed trials"
    return ""


def save_plots(study: optuna.Study, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Optuna's optimization history and param importances as PNGs, plus notes on skipped ones."""
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run on servers and inside `mlflow run`
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    notes: list[str] = []

    def save(name: str, draw: Callable[[], Any]) -> None:
        try:
            ax = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"{name} skipped: {exc}")
            return
        fig = getattr(ax, "figure", None) or plt.gcf()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        plots[name] = path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if best_trial(study) is None:
            notes.append("optimization_history skipped: no completed trial")
        else:
            save("optimization_history", lambda: ovm.plot_optimization_history(study))
        reason = importances_unavailable(study)
        if reason:
            notes.append(f"param_importances skipped: {reason}")
        else:
            save("param_importances", lambda: ovm.plot_param_importances(study))
            dynamic = _dynamic_params(study)
            if "param_importances" in plots and dynamic:
                # Optuna rates only parameters whose range was the same in every trial.
                notes.append(f"param_importances leaves out {', '.join(dynamic)}: its range "
                             "depended on another parameter (crop ranges overlap)")
    return plots, notes


def _dynamic_params(study: optuna.Study) -> list[str]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({k for t in done for k in t.distributions})
    return [k for k in names if len({repr(t.distributions.get(k)) for t in done}) > 1]
