"""TTA scoring split into shards: clip ranges scored apart and gathered back in clip order.

The ensemble stage scores many clips (every train clip out of fold, every test clip) with
folds x lengths x crops views. A :class:`ShardMap` decides where that work runs: the default,
:class:`LocalShards`, scores in this process as one shard (exactly the unsharded call);
``fsd.cluster.scoring`` maps the shards over Ray actors that each load the bundle once. Both
score a shard with :func:`score_shard`, so a shard's numbers do not depend on where it ran.

A shard is a contiguous range of the clips being scored: which split of the feature store,
the store rows of its clips (in clip order) and, per fold model, which of them that model
scores (out of fold: each model its own fold's clips; test: every model every clip).
:func:`gather` concatenates the shards' log-probability sums and view counts back in clip
order. Each clip's sum is over the same (length, model) views in the same order wherever its
shard runs, so the gathered result is the unsharded one where the networks' outputs for a view
do not depend on what else is in its batch (see benchmarks/README.md, "TTA shards").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fsd.model.tta import ClipRows, TTAResult

TRAIN = "train"


@dataclass(frozen=True)
class Shard:
    """Clips ``start:stop`` of one scoring: their store rows in ``split`` and, per fold model,
    the positions (within this shard) of the clips it scores (None: every model every clip)."""

    split: str
    start: int
    rows: np.ndarray
    members: tuple[np.ndarray, ...] | None = None

    @property
    def stop(self) -> int:
        return self.start + len(self.rows)

    @property
    def empty(self) -> bool:
        """No model scores any clip of this shard (out of fold: clips in no fold)."""
        return self.members is not None and not any(len(m) for m in self.members)


class ShardMap(Protocol):
    """Scores shards somewhere; results in the order of the shards given."""

    shards: int  # how many clip ranges one scoring is split into

    def __call__(self, shards: Sequence[Shard]) -> list[TTAResult]: ...

    def close(self) -> None: ...


# What the stage is given: from the bundle it built (a folder) and that bundle loaded here,
# a ShardMap (the stage closes it when done).
ScorerFactory = Callable[[Path, object], ShardMap]


def split_shards(split: str, rows: Sequence[int], members: Sequence[np.ndarray] | None,
                 n: int) -> list[Shard]:
    """``rows`` (store rows, in clip order) cut into ``n`` contiguous ranges of nearly equal
    size (fewer when there are fewer clips); ``members[k]`` (positions into ``rows``) split
    with them and made relative to each range."""
    rows = np.asarray(rows, dtype=np.int64)
    n = max(1, min(int(n), len(rows)))
    bounds = np.linspace(0, len(rows), n + 1).round().astype(np.int64)
    sets = None if members is None else [np.asarray(m, dtype=np.int64) for m in members]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        mine = None if sets is None else tuple(m[(m >= a) & (m < b)] - a for m in sets)
        out.append(Shard(split=split, start=int(a), rows=rows[a:b], members=mine))
    return out


def gather(results: Sequence[TTAResult], shards: Sequence[Shard]) -> TTAResult:
    """The shards' results as one, in clip order."""
    if len(results) != len(shards):
        raise ValueError(f"{len(shards)} shards but {len(results)} results")
    order = np.argsort([s.start for s in shards], kind="stable")
    log_sum = np.concatenate([results[i].log_sum for i in order], axis=0)
    count = np.concatenate([results[i].count for i in order], axis=0)
    if not count.any():
        raise ValueError("no model scored any clip (empty members)")
    return TTAResult(log_sum=log_sum, count=count)


def open_split(store, split: str):
    """The feature store's ``split`` (the train store itself for ``train``)."""
    return store if split == TRAIN else store.open_split(split)


def score_shard(ensemble, split_store, shard: Shard, with_summary: bool) -> TTAResult:
    """One shard's TTA sums with ``ensemble`` (:meth:`~fsd.ensemble.bundle.Ensemble.score`)
    on ``split_store``'s rows; a shard no model scores gets zero views."""
    if shard.empty:
        n_classes = len(ensemble.labels)
        return TTAResult(log_sum=np.zeros((len(shard.rows), n_classes)),
                         count=np.zeros(len(shard.rows), dtype=np.int64))
    logmels = ClipRows(split_store.logmel, shard.rows)
    summaries = np.asarray(split_store.summary)[shard.rows] if with_summary else None
    members = None if shard.members is None else list(shard.members)
    return ensemble.score(logmels, summaries, members=members)


class LocalShards:
    """Shards scored in this process, one after another (one shard: the unsharded call)."""

    def __init__(self, ensemble, store, with_summary: bool, shards: int = 1):
        self.ensemble = ensemble
        self.store = store
        self.with_summary = with_summary
        self.shards = shards
        self._splits: dict[str, object] = {}

    def __call__(self, shards: Sequence[Shard]) -> list[TTAResult]:
        out = []
        for s in shards:
            if s.split not in self._splits:
                self._splits[s.split] = open_split(self.store, s.split)
            out.append(score_shard(self.ensemble, self._splits[s.split], s, self.with_summary))
        return out

    def close(self) -> None:
        self._splits.clear()


def score_sharded(shard_map: ShardMap, split: str, rows: Sequence[int],
                  members: Sequence[np.ndarray] | None = None) -> TTAResult:
    """Score clips ``rows`` of ``split`` in ``shard_map.shards`` shards; gathered in clip
    order."""
    shards = split_shards(split, rows, members, shard_map.shards)
    return gather(shard_map(shards), shards)
