"""A fold's training checkpoint in the artifact store, for nodes that share no disk.

Under the Ray executor a fold may be retried on another node after its node died; its local
checkpoint died with it. So after each epoch (at most every ``cluster.checkpoint_every_s``)
the fold's run logs what resuming needs (``FoldDir.resumable()``: the checkpoint folder, the
history, the stage networks kept so far) as one tar file, replacing the last
(one object: a reader never sees half of it), and tags where it stands. A retried attempt
without a local checkpoint finds the newest unfinished run of the same fold, training and
features that holds one (:func:`checkpointed_attempt`), downloads it (:func:`fetch_checkpoint`)
and resumes from it in a new run; the old attempt's run is ended KILLED by the caller
(:func:`fsd.tracking.runs.mark_killed`).
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fsd.config import Config
from fsd.tracking.artifacts import CHECKPOINT_ARTIFACT, CHECKPOINT_FILE
from fsd.tracking.keys import train_key
from fsd.tracking.runs import set_experiment
from fsd.tracking.tags import TAG_CHECKPOINT, TAG_FOLD, TAG_STAGE, TAG_STORE_KEY, TAG_TRAIN_KEY

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


def upload_checkpoint(parts: dict[str, Path], where: str) -> float:
    """Log ``parts`` (name in the archive -> a file or folder) as the active run's checkpoint,
    replacing the last one, and tag it ``where``; returns the seconds it took."""
    import mlflow

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fsd-ckpt-") as tmp:
        archive = Path(tmp) / CHECKPOINT_FILE
        with tarfile.open(archive, "w") as tar:  # npz weights do not compress: plain tar
            for name, path in parts.items():
                if Path(path).exists():
                    tar.add(str(path), arcname=name)
        mlflow.log_artifact(str(archive), CHECKPOINT_ARTIFACT)
    mlflow.set_tag(TAG_CHECKPOINT, where)
    return time.perf_counter() - t0


def checkpointed_attempt(cfg: Config, fold: int, store_key: str) -> Run | None:
    """The newest unfinished run (RUNNING, KILLED or FAILED) of fold ``fold`` of ``cfg``'s
    training on the store ``store_key`` that has uploaded a checkpoint, or None."""
    from mlflow.tracking import MlflowClient

    exp_id = set_experiment(cfg)
    flt = (f"tags.`{TAG_STAGE}` = 'train_fold' and tags.`{TAG_FOLD}` = '{int(fold)}' and "
           f"tags.`{TAG_TRAIN_KEY}` = '{train_key(cfg)}' and tags.`{TAG_STORE_KEY}` = '{store_key}'"
           " and attributes.status != 'FINISHED'")
    runs = MlflowClient().search_runs([exp_id], filter_string=flt,
                                      order_by=["attributes.start_time DESC"], max_results=100)
    for run in runs:
        if run.data.tags.get(TAG_CHECKPOINT) and run.info.status in ("RUNNING", "KILLED", "FAILED"):
            return run
    return None


def fetch_checkpoint(run_id: str, dest: Path) -> None:
    """Unpack run ``run_id``'s uploaded checkpoint into the folder ``dest``."""
    import mlflow

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fsd-ckpt-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{CHECKPOINT_ARTIFACT}/{CHECKPOINT_FILE}", dst_path=tmp)
        with tarfile.open(local) as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths and links out of dest
