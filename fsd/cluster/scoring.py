"""The ensemble's TTA scoring on Ray actors (``cluster.executor: ray``).

:func:`ray_scorer` gives the ensemble stage (:func:`fsd.ensemble.stage.run_ensemble`) a
:class:`~fsd.ensemble.shards.ShardMap` of ``cluster.scoring_actors`` actors, spread over the
cluster's nodes. Each actor is constructed once and loads what scoring needs once:

- the bundle the driver built, as one tar archive put in Ray's object store (nodes share no
  disk: no path of the driver's is ever opened elsewhere), unpacked into a node-local
  temporary folder and loaded (:meth:`fsd.ensemble.bundle.Ensemble.load`);
- the feature store of the featurize run, by its run id (:func:`fsd.tracking.resolve_store`:
  the node's local copy where one exists, else downloaded from the artifact store into the
  node's cache, once per node).

The tracking URI reaches the actors through the job's runtime environment and the
credentials through the object store (:mod:`fsd.cluster.runtime`), never as arguments.
Then each shard (a clip range) is one ``score`` call, scored by
:func:`fsd.ensemble.shards.score_shard` as the local scoring scores it, and the results come
back in shard order (``ray.util.ActorPool.map``). An actor whose node dies is restarted
elsewhere and its call retried (``cluster.max_retries``).
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsd.config import Config, dump_config
from fsd.ensemble.shards import ScorerFactory, Shard, open_split, score_shard
from fsd.model.tta import TTAResult

log = logging.getLogger(__name__)


def pack_bundle(bundle: Path) -> bytes:
    """The bundle folder as an uncompressed tar archive (its model files are zips already)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(bundle), arcname="bundle")
    return buf.getvalue()


def unpack_bundle(blob: bytes, dst: Path) -> Path:
    """Unpack :func:`pack_bundle`'s archive under ``dst``; returns the bundle folder."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(dst, filter="data")  # "data": no links out, no absolute paths
    return dst / "bundle"


class ShardScorer:
    """One scoring actor's state (wrapped by ``ray.remote`` in :func:`ray_scorer`): the bundle
    and the feature store, loaded once; :meth:`score` scores one shard."""

    def __init__(self, bundle_blob: bytes, config_text: str, features_run: str,
                 with_summary: bool, secrets: list):
        import os

        import yaml

        from fsd.cluster.runtime import task_environment
        from fsd.config import from_dict

        # the driver's credentials, for this process's downloads from the artifact store
        os.environ.update(task_environment(secrets, base={}))
        from fsd.ensemble.bundle import Ensemble
        from fsd.tracking import resolve_store

        self._tmp = Path(tempfile.mkdtemp(prefix="fsd-scoring-"))
        self.ensemble = Ensemble.load(unpack_bundle(bundle_blob, self._tmp))
        cfg = from_dict(yaml.safe_load(config_text))
        self.store, _ = resolve_store(cfg, features_run)
        self.with_summary = with_summary
        self._splits: dict[str, Any] = {}

    def score(self, shard: Shard) -> TTAResult:
        if shard.split not in self._splits:
            self._splits[shard.split] = open_split(self.store, shard.split)
        return score_shard(self.ensemble, self._splits[shard.split], shard, self.with_summary)

    def node(self) -> str:
        """The Ray node id this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)


class RayShards:
    """A :class:`~fsd.ensemble.shards.ShardMap` over scoring actors: one clip range per actor
    per scoring, results in shard order."""

    def __init__(self, ray: Any, actors: list, blob: Any = None):
        self.ray = ray
        self.actors = actors
        self.blob = blob  # the bundle's object: kept while an actor may be restarted from it
        self.shards = len(actors)

    def __call__(self, shards: Sequence[Shard]) -> list[TTAResult]:
        from ray.util import ActorPool

        pool = ActorPool(list(self.actors))
        return list(pool.map(lambda actor, shard: actor.score.remote(shard), list(shards)))

    def nodes(self, timeout: float | None = None) -> list[str]:
        """The node id of each actor (waiting at most ``timeout`` seconds for them to start)."""
        return self.ray.get([a.node.remote() for a in self.actors], timeout=timeout)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors, self.blob = [], None


# How long the driver waits for its scoring actors to start (placed, bundle and features
# loaded) before it gives up with an error instead of waiting on resources forever.
ACTOR_START_TIMEOUT_S = 900.0


def actor_count(cluster_resources: dict[str, float], cfg: Config) -> int:
    """How many scoring actors to start: ``cluster.scoring_actors``, but no more than the
    live cluster holds at ``cluster.cpus_per_fold`` / ``gpus_per_fold`` each (after a node
    died, an actor asking for its share would wait for a node that never comes), at least 1."""
    c = cfg.cluster
    fits = [c.scoring_actors]
    if c.cpus_per_fold:
        fits.append(int(cluster_resources.get("CPU", 0) // c.cpus_per_fold))
    if c.gpus_per_fold:
        fits.append(int(cluster_resources.get("GPU", 0) // c.gpus_per_fold))
    return max(1, min(fits))


def ray_scorer(cfg: Config, train_cfg: Config, features_run: str) -> ScorerFactory:
    """What the ensemble stage calls with its bundle: ``cfg.cluster.scoring_actors`` actors on
    the cluster (:func:`fsd.cluster.runtime.connect`), each with ``cfg.cluster``'s per-fold
    CPUs and GPUs, that load that bundle and ``train_cfg``'s features of run
    ``features_run``."""
    from fsd.cluster.runtime import connect, secrets_ref

    c = cfg.cluster

    def start(bundle: Path, _ensemble: object) -> RayShards:
        ray = connect(cfg)
        blob = ray.put(pack_bundle(bundle))
        remote = ray.remote(ShardScorer).options(
            num_cpus=c.cpus_per_fold, num_gpus=c.gpus_per_fold, scheduling_strategy="SPREAD",
            max_restarts=c.max_retries, max_task_retries=c.max_retries)
        config_text = dump_config(train_cfg)
        n = actor_count(ray.cluster_resources(), cfg)
        if n < c.scoring_actors:
            log.warning("ensemble: %d scoring actors, not %d: the live cluster holds no more at "
                        "cluster.cpus_per_fold=%g, cluster.gpus_per_fold=%g", n,
                        c.scoring_actors, c.cpus_per_fold, c.gpus_per_fold)
        actors = [remote.remote(blob, config_text, features_run, train_cfg.summary.enabled,
                                secrets_ref()) for _ in range(n)]
        shards = RayShards(ray, actors, blob)
        try:
            nodes = shards.nodes(timeout=ACTOR_START_TIMEOUT_S)
        except Exception as exc:
            shards.close()
            if isinstance(exc, ray.exceptions.GetTimeoutError):
                raise RuntimeError(
                    f"the {n} TTA scoring actors did not start within "
                    f"{ACTOR_START_TIMEOUT_S:g} s (each asks for {c.cpus_per_fold:g} CPUs and "
                    f"{c.gpus_per_fold:g} GPUs): lower cluster.scoring_actors or add nodes"
                ) from exc
            raise
        log.info("ensemble: TTA scoring on %d Ray actors (nodes %s)", len(actors),
                 ", ".join(sorted({x[:8] for x in nodes})))
        return shards

    return start
