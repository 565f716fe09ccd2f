"""What a run logs as params: the config fields its stage reads, and a fold's bookkeeping."""

from __future__ import annotations

from typing import Any

from fsd.config import Config, dump_config

# MLflow caps a param value at 6000 characters; long lists are still readable in config.yaml.
_PARAM_LIMIT = 500

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
    import mlflow

    log_new_params(stage_params(cfg, stage))
    mlflow.log_text(dump_config(cfg), "config.yaml")


def param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."


def log_new_params(params: dict[str, Any]) -> None:
    """Log the params the active run does not hold yet (params cannot change)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    logged = MlflowClient().get_run(active.info.run_id).data.params if active else {}
    new = {k: param_value(v) for k, v in params.items() if k not in logged}
    if new:
        mlflow.log_params(new)


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
            params[FOLD_PARAMS[k]] = param_value(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics[FOLD_METRICS.get(k, k)] = float(v)
    return metrics, params
