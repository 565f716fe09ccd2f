"""The tags ``fsd`` sets on runs: what a later step searches by, and what the UI shows."""

from __future__ import annotations

import os as _os  # (private: `import *` of this module gives the tags only)

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
TAG_STORE_RUN = "fsd.store_run"  # set where a reused store was logged by an earlier run
TAG_BASELINE = "fsd.baseline"  # the baseline model of a baseline run: logreg | hgb
TAG_BASELINE_KEY = "fsd.baseline_key"  # that model's settings (see keys.baseline_key)
STAGE_BASELINE = "baseline"
# Who runs a run: set at its start, so a later step can tell a run whose process is gone
# (killed, crashed machine) from one still working, and mark it KILLED (see runs.reap_dead_runs).
TAG_PID = "fsd.pid"
TAG_HOST = "fsd.host"
TAG_PROC_START = "fsd.proc_start"  # the process's start time (clock ticks), against pid reuse
TAG_CONTINUES = "fsd.continues"  # on a run that continues an interrupted one: that run's id
TAG_REAPED = "fsd.reaped"  # why a run was marked KILLED
# Under the Ray executor: the Ray node a fold run trained on; on a fold run whose checkpoint is
# in the artifact store, where it stands ("stage1 epoch 3"); on a run that resumed another
# attempt's uploaded checkpoint, that run and where it stood.
TAG_RAY_NODE = "fsd.ray_node"
TAG_CHECKPOINT = "fsd.checkpoint"
TAG_RESUMED_CHECKPOINT = "fsd.resumed_checkpoint"
# A featurize run that failed --strict: later steps refuse its features.
TAG_STRICT_FAILED = "fsd.strict_failed"

# The ensemble run: the fold runs it assembled, and the baseline it blends with (if any).
TAG_FOLD_RUNS = "fsd.fold_runs"
TAG_BLENDED = "fsd.blended"
TAG_BLEND_RUN = "fsd.blend_baseline_run"
TAG_BLEND_MODEL = "fsd.blend_baseline"
TAG_BLEND_REASON = "fsd.blend_reason"  # why ensemble.blend_rule chose that (baseline, weight)
# A distill run: the ensemble run its student learned from.
TAG_TEACHER_RUN = "fsd.teacher_run"
# The main run: its distill step's run (distill.enabled).
TAG_DISTILL_RUN = "fsd.distill_run"
# The baselines' parent run: the baseline runs it reused; a baseline scoring at chance.
TAG_BASELINE_RUNS = "fsd.baseline_runs"
TAG_AT_CHANCE = "fsd.at_chance"
# A sweep's parent run and its trials' nested runs.
TAG_SWEEP_STUDY = "fsd.sweep.study"
TAG_SWEEP_STORAGE = "fsd.sweep.storage"
TAG_SWEEP_TRIAL = "fsd.sweep.trial"
TAG_SWEEP_STATE = "fsd.sweep.state"
TAG_SWEEP_PRUNED = "fsd.sweep.pruned"
TAG_SWEEP_ERROR = "fsd.sweep.error"
TAG_SWEEP_BEST_TRIAL = "fsd.sweep.best_trial"
TAG_SWEEP_BEST_RUN = "fsd.sweep.best_run"
TAG_SWEEP_WORKDIR = "fsd.sweep.workdir"
TAG_ENSEMBLE_RUN = "fsd.ensemble_run"
TAG_MODEL_URI = "fsd.model_uri"  # the ensemble's logged pyfunc
TAG_REGISTERED_VERSION = "fsd.registered_version"
TAG_ALIAS_MOVED = "fsd.alias_moved"
TAG_ALIAS_REASON = "fsd.alias_reason"
TAG_BEST_BASELINE = "fsd.best_baseline"
TAG_BEST_BASELINE_RUN = "fsd.best_baseline_run"
# A featurize run that reused a store; a fold run that replayed an earlier run's epochs, and
# which training stage's network it kept.
TAG_REUSED = "fsd.reused"
TAG_REPLAYED_EPOCHS = "fsd.replayed_epochs"
TAG_REUSED_FROM = "fsd.reused_from"
TAG_SELECTED_STAGE = "fsd.selected_stage"
TAG_RESUMED_FROM_PID = "fsd.resumed_from_pid"
# Registered model versions: the score the alias moves by, why it moved (or not), and who
# holds the alias's lock.
TAG_OOF_MAP3 = "fsd.oof_map3"
TAG_PROMOTION = "fsd.promotion"
TAG_LOCK_OWNER = "fsd.lock_owner"

# What the MLflow UI shows: a run's description, and the experiment's kind (custom model
# development opens the experiment on its training runs, not on the GenAI traces overview).
TAG_NOTE = "mlflow.note.content"
TAG_PARENT = "mlflow.parentRunId"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The experiment's saved view of its runs table (MLflow's "Views" menu stores each as an
# experiment tag `mlflow.sharedViewState.<id>`): see tracking.experiment.saved_view.
TAG_SAVED_VIEW = "mlflow.sharedViewState.fsd-headline"
UI_URL = _os.environ.get("FSD_UI_URL", "http://127.0.0.1:5000")

__all__ = [name for name in dir() if name.isupper()]
