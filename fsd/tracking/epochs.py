"""Per-epoch metrics: logged as a fold trains, or replayed from its history.csv afterwards."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")  # a fold's training stages, in order (fsd.train.checkpoint.STAGES)
EPOCH_METRICS = ("loss", "val_loss", "val_map3", "val_accuracy", "lr")


def epoch_logger(prefix: str = "", history_path: Path | None = None,
                 ) -> Callable[[str, int, dict[str, float]], None]:
    """An ``on_epoch`` callback logging ``<prefix><stage>/<metric>`` at one step per epoch
    counted across both stages (stage 2's first epoch follows stage 1's last), the x axis of
    the fold's training-curves plot. With ``history_path`` (the fold's history.csv, written
    before each call) the step is the epoch's row there, so a resumed fold continues the
    steps of its earlier epochs; without it, stage 2 follows the stage 1 epochs seen."""
    import mlflow
    import pandas as pd

    seen: dict[str, int] = {}

    def step_of(stage: str, epoch: int) -> int:
        if history_path is not None and Path(history_path).is_file():
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
    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

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
