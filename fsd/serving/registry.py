"""The model registry: a logged ensemble registered as a new version, and its alias moved
only when its out-of-fold MAP@3 beats the holder's, under a lock held in the registry itself."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fsd.processes import process_alive
from fsd.tracking.tags import TAG_LOCK_OWNER, TAG_OOF_MAP3, TAG_PROMOTION, TAG_TRAIN_KEY

log = logging.getLogger(__name__)



@dataclass
class Promotion:
    """The outcome of registering a model version and comparing it with the alias holder."""

    name: str
    alias: str
    version: str
    score: float
    previous_version: str | None
    previous_score: float | None
    moved: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def holder_score(client: MlflowClient, mv) -> float | None:
    """A version's recorded out-of-fold MAP@3: its tag, else its run's ``oof_map3`` metric."""
    tag = (mv.tags or {}).get(TAG_OOF_MAP3)
    if tag not in (None, ""):
        try:
            return float(tag)
        except ValueError:
            pass
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get("oof_map3")
        except MlflowException:
            value = None
        if value is not None:
            return float(value)
    return None


def register_and_promote(model_uri: str, name: str, alias: str, score: float,
                         run_id: str | None = None, train_key: str = "") -> Promotion:
    """Register ``model_uri`` as a new version of ``name``; move ``alias`` to it only when
    ``score`` beats the current holder's (strictly). A holder without a recorded score loses.

    Reading the holder, comparing and moving the alias happen under ``alias_lock`` (a lock in
    the registry itself), so two ensembles finishing together cannot both read the old holder
    and leave the alias on the worse of them."""
    client = MlflowClient()
    mv = mlflow.register_model(model_uri, name, tags={TAG_OOF_MAP3: f"{score:.6f}",
                                                      TAG_TRAIN_KEY: train_key})
    version = str(mv.version)
    with alias_lock(client, name, alias):
        held = client.get_registered_model(name).aliases or {}
        holder = client.get_model_version(name, str(held[alias])) if alias in held else None
        prev_version = str(holder.version) if holder is not None else None
        prev_score = holder_score(client, holder) if holder is not None else None
        if holder is None:
            moved, reason = True, f"no version held @{alias}"
        elif prev_version == version:
            moved, reason = False, "already the holder"
        elif prev_score is None:
            moved, reason = True, f"v{prev_version} has no recorded oof_map3"
        elif score > prev_score:
            moved, reason = True, f"oof_map3 {score:.4f} > {prev_score:.4f} of v{prev_version}"
        else:
            moved, reason = False, f"oof_map3 {score:.4f} <= {prev_score:.4f} of v{prev_version}"
        if moved:
            client.set_registered_model_alias(name, alias, version)
            # re-check after the set: the alias must now name this version
            now = str((client.get_registered_model(name).aliases or {}).get(alias, ""))
            if now != version:
                raise MlflowException(f"@{alias} of {name} names v{now or '-'} right after it was "
                                      f"moved to v{version}: the alias lock was not respected")
        client.set_model_version_tag(name, version, TAG_PROMOTION,
                                     f"{'moved' if moved else 'kept'} @{alias}: {reason}")
    log.info("%s v%s: %s @%s (%s)", name, version, "took" if moved else "did not take", alias,
             reason)
    return Promotion(name=name, alias=alias, version=version, score=float(score),
                     previous_version=prev_version, previous_score=prev_score, moved=moved,
                     reason=reason)


LOCK_STALE_S = 600.0


def lock_model_name(name: str, alias: str) -> str:
    return f"{name}.lock.{alias}"


@contextmanager
def alias_lock(client: MlflowClient, name: str, alias: str, timeout: float = 600.0,
               stale_s: float = LOCK_STALE_S):
    """A mutex in the model registry: creating a registered model is atomic (its name is the
    store's primary key; a second create fails with RESOURCE_ALREADY_EXISTS), on every
    database-backed tracking server, so the lock holds across processes and machines that
    share one. Released by deleting it. A lock left by a killed holder is broken when its
    process is gone (same host) or when it is older than ``stale_s`` (the critical section
    takes seconds)."""
    lock = lock_model_name(name, alias)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            client.create_registered_model(
                lock, tags={TAG_LOCK_OWNER: owner},
                description=f"A lock, held while an ensemble moves @{alias} of `{name}`; "
                            "deleted when done.")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException:
            continue  # released in between: try again at once
        held_by = (held.tags or {}).get(TAG_LOCK_OWNER, "")
        age = time.time() - (held.creation_timestamp or 0) / 1000
        host, _, pid = held_by.rpartition(":")
        dead = host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
        if dead or age > stale_s:
            log.warning("breaking the lock %s of %s (%s)", lock, held_by or "?",
                        "its process is gone" if dead else f"{age:.0f} s old")
            _delete_model(client, lock)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"@{alias} of {name} stayed locked by {held_by or '?'} for "
                               f"{timeout:.0f} s (registered model {lock})")
        if not waited:
            log.info("@%s of %s is being moved by %s; waiting", alias, name, held_by or "?")
            waited = True
        time.sleep(0.1 + random.random() * 0.3)
    try:
        yield lock
    finally:
        _delete_model(client, lock)


def _delete_model(client: MlflowClient, name: str) -> None:
    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
