"""The featurize stage: every clip of the dataset into a resumable, memory-mappable store.

``featurize(cfg)`` loads the dataset, assigns folds, and computes log-mel + summary
features for every train and test clip on all cores (a process pool; BLAS limited to one
thread per worker so the cores are not oversubscribed). Clips are processed in shards of
``store.shard_size``; each finished shard is written atomically, so a killed run loses at
most the shards in flight and a rerun recomputes only those. Then the shards are streamed
into the consolidated store (see :mod:`fsd.features.store`), the length histogram and the
PCA explained-variance plot are drawn, and ``meta.json`` is written last.

A clip whose audio is unusable becomes ``Reject(fname, "audio", reason)`` and is left out of
the train split; a failing test clip (FSDKaggle2018 has three empty ones) stays in the test
index with ``frames`` 0, ``ok`` false and its ``reason``, so a submission can still list it.
A rerun on a complete store returns at once with ``reused=True``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fsd.config import Config
from fsd.data.rejects import WARNING_STAGE, Reject, rejects_frame
from fsd.features.store import (
    FEATURE_VERSION,
    SHARDS,
    STORE_SECTIONS,
    ClipResult,
    FeatureStore,
    ShardSpec,
    StoreError,
    clean_stale_shards,
    consolidate,
    length_stats,
    plan_shards,
    read_meta,
    read_shard_info,
    shard_is_valid,
    store_dir,
    store_key,
    write_csv,
    write_json,
    write_shard,
)
from fsd.locks import file_lock

log = logging.getLogger(__name__)

# Environment for worker processes: one thread per numeric library, so N workers use N cores.
_THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                                "NUMBA_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                "TF_NUM_INTEROP_THREADS")}


@dataclass
class FeaturizeResult:
    """What the stage produced; ``store`` is the train split (``store.open_split("test")``)."""

    store_dir: Path
    store: FeatureStore
    rejects: list[Reject]
    stats: dict
    plots: dict[str, Path] = field(default_factory=dict)
    reused: bool = False
    rejects_path: Path | None = None
    folds_path: Path | None = None


# --- per-clip work (runs in the workers) -----------------------------------------------------


def extract_one(fname: str, path: str, cfg: Config) -> ClipResult:
    """Features of one clip, or the reason it has none. Only AudioError is a per-clip verdict;
    anything else is a bug and propagates."""
    from fsd.data.audio import AudioError, truncation
    from fsd.features.extract import extract_clip

    try:
        feats = extract_clip(path, cfg)
    except AudioError as exc:
        return ClipResult(fname, False, str(exc), None, None, 0.0)
    # a kept clip's reason is a warning for the rejects report (e.g. a truncated WAV)
    warning = truncation(path) or ""
    return ClipResult(fname, True, warning, feats.logmel, feats.summary, float(feats.seconds))


def _extract_chunk(items: Sequence[tuple[str, str]], cfg: Config) -> list[ClipResult]:
    return [extract_one(fname, path, cfg) for fname, path in items]


def _init_worker() -> None:
    os.environ.update(_THREAD_ENV)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def resolve_workers(cfg: Config) -> int:
    n = int(cfg.store.workers)
    return max(1, os.cpu_count() or 1) if n <= 0 else n


# Imported once by the fork server, so workers start warm: librosa loads these lazily on
# first use, which took 2-9 s per worker on a busy machine.
_PRELOAD = ["fsd.features.extract", "fsd.features.summary", "librosa.core.spectrum",
            "librosa.core.audio", "librosa.core.constantq", "librosa.core.convert",
            "librosa.feature", "librosa.filters", "librosa.effects", "librosa.decompose",
            "librosa.util", "scipy.signal", "scipy.fft", "scipy.sparse", "soxr", "threadpoolctl"]
# Below this much pending audio (bytes on disk; ~6 min of 16-bit 44.1 kHz WAV) one in-process
# worker finishes before a pool would have started.
_POOL_MIN_BYTES = 32_000_000


def _pool_context():
    methods = mp.get_all_start_methods()
    # Never fork: the parent may hold threads (TensorFlow, MLflow) that fork would deadlock on.
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


# --- the stage -------------------------------------------------------------------------------


def expected_store_key(cfg: Config) -> str:
    """The key featurize would give this config's dataset as it is on disk now."""
    from fsd.data.sources import load_dataset

    return store_key(cfg, load_dataset(cfg).fingerprint())


def featurize(cfg: Config, progress: bool = True) -> FeaturizeResult:
    """Compute (or reuse) the feature store of ``cfg``'s dataset. See the module docstring."""
    from fsd.data.sources import load_dataset

    t_start = time.perf_counter()
    ds = load_dataset(cfg)
    fingerprint = ds.fingerprint()
    root = store_dir(cfg, store_key(cfg, fingerprint))
    # One builder per store: a second featurize of the same key (another worker, a second
    # `fsd main`) waits here, then finds the store complete and reuses it.
    with file_lock(lock_path(root), what=f"feature store {root}"):
        return _featurize_locked(cfg, ds, fingerprint, root, t_start, progress)


def lock_path(root: Path) -> Path:
    """The lock file of a store: beside its folder, so deleting the store keeps the lock."""
    return root.parent / f".{root.name}.lock"


def _featurize_locked(cfg: Config, ds, fingerprint: str, root: Path, t_start: float,
                      progress: bool) -> FeaturizeResult:
    """Reuse the complete store at ``root``, or compute its missing shards and consolidate
    them (holding the store's lock)."""
    from fsd.features.summary import summary_dim

    key = store_key(cfg, fingerprint)
    train = _with_folds(ds.train, cfg)  # before reuse, as always: its checks and warnings
    reused = _reuse_complete(cfg, root, key, t_start)
    if reused is not None:
        return reused
    root.mkdir(parents=True, exist_ok=True)
    splits = _split_indexes(ds, train)
    specs = {s: plan_shards(s, idx["fname"].tolist(), cfg.store.shard_size)
             for s, (idx, _) in splits.items()}
    clean_stale_shards(root, [sp.name for ss in specs.values() for sp in ss])
    shard_dir = root / SHARDS
    todo = [sp for ss in specs.values() for sp in ss if not shard_is_valid(shard_dir / sp.name, sp)]
    n_shards = sum(len(ss) for ss in specs.values())
    log.info("featurize %s: %d train + %d test clips in %d shards (%d to compute) -> %s",
             ds.name, len(splits["train"][0]), len(splits["test"][0]) if "test" in splits else 0,
             n_shards, len(todo), root)

    n_sum = summary_dim(cfg.summary) if cfg.summary.enabled else 0
    t0 = time.perf_counter()
    computed = _compute_shards(cfg, todo, {s: p for s, (_, p) in splits.items()}, shard_dir,
                               n_sum, progress)
    extract_s = time.perf_counter() - t0
    indexes = {split: consolidate(root, split, idx, specs[split], cfg.logmel.n_mels, n_sum,
                                  cfg.store.float16, keep_failed=(split == "test"))
               for split, (idx, _) in splits.items()}
    report = _report(ds, root, specs["train"], indexes)
    tr, te = indexes["train"], indexes.get("test")
    hop_s = cfg.logmel.hop_length / cfg.logmel.sample_rate
    lengths = length_stats(tr["frames"].to_numpy(), hop_s)
    stats = {**report.counts(ds, tr, te), **_size_stats(tr, te, lengths, computed, extract_s),
             "n_shards": n_shards, "n_shards_computed": len(todo)}
    stats = {k: stats[k] for k in _STATS_ORDER}
    store_meta = _store_meta(cfg, ds, key, fingerprint, list(splits), n_sum, hop_s, lengths,
                             stats, report.failed_test)
    summary = np.load(root / "train" / "summary.npy", mmap_mode="r")
    plots = make_plots(cfg, root, tr["frames"].to_numpy(), lengths, hop_s, summary)
    stats["elapsed_s"] = time.perf_counter() - t_start
    store_meta["stats"] = stats
    store_meta["complete"] = True
    write_json(root / "meta.json", store_meta)  # last: from here on the store is complete
    store = FeatureStore.open(root, "train", expected_key=key)
    log.info("featurized %d clips (%.0f s of audio) in %.1f s: %.1f audio-s/s with %d workers",
             stats["n_clips"], stats["audio_seconds"], stats["elapsed_s"],
             stats["audio_seconds_per_s"], stats["workers"])
    return FeaturizeResult(store_dir=root, store=store, rejects=report.rejects, stats=stats,
                           plots=plots, reused=False, rejects_path=report.rejects_path,
                           folds_path=report.folds_path)


def _reuse_complete(cfg: Config, root: Path, key: str, t_start: float) -> FeaturizeResult | None:
    """The store at ``root`` when it is complete and usable; None when it must be (re)built
    (an interrupted or unusable store loses its meta.json and resumes from its shards)."""
    if not (root / "meta.json").is_file():
        return None
    try:
        read_meta(root)
    except StoreError:
        pass  # an interrupted run: resume from the shards
    else:
        try:
            return _reused(cfg, root, key, t_start)
        except StoreError as exc:
            log.warning("feature store %s is unusable (%s); rebuilding it from its shards",
                        root, exc)
    (root / "meta.json").unlink(missing_ok=True)
    return None


def _split_indexes(ds, train: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Each split's index (fname, label, label_id, fold, verified[, usage]) and audio paths."""
    label_ids = {name: i for i, name in enumerate(ds.labels)}
    train_index = pd.DataFrame({
        "fname": train["fname"].astype(str).to_numpy(),
        "label": train["label"].astype(str).to_numpy(),
        "label_id": train["label"].map(label_ids).astype("int64").to_numpy(),
        "fold": train["fold"].astype("int64").to_numpy(),
        "verified": train["verified"].astype(bool).to_numpy(),
    })
    splits = {"train": (train_index, train["path"].astype(str).tolist())}
    test = ds.test
    if test is not None and len(test):
        labels = test["label"].fillna("").astype(str)
        test_index = pd.DataFrame({
            "fname": test["fname"].astype(str).to_numpy(),
            "label": labels.to_numpy(),
            "label_id": labels.map(lambda s: label_ids.get(s, -1)).astype("int64").to_numpy(),
            "fold": np.full(len(test), -1, dtype=np.int64),
            "verified": np.zeros(len(test), dtype=bool),
        })
        if "usage" in test.columns:
            test_index["usage"] = test["usage"].fillna("").astype(str).to_numpy()
        splits["test"] = (test_index, test["path"].astype(str).tolist())
    return splits


@dataclass
class _Report:
    """What the store's reports say: rejected clips and rows, warnings, failed test clips."""

    rejects: list[Reject]
    audio_rejects: list[Reject]
    warnings: list[Reject]
    failed_test: pd.DataFrame | None
    rejects_path: Path
    folds_path: Path

    def counts(self, ds, tr: pd.DataFrame, te: pd.DataFrame | None) -> dict[str, int]:
        return {"n_clips": int(len(tr)), "n_rejected": int(len(self.rejects)),
                "n_rejected_audio": int(len(self.audio_rejects)),
                "n_rejected_metadata": int(len(ds.rejects)),
                "n_warnings": int(len(self.warnings)),
                "n_test": int(len(te)) if te is not None else 0,
                "n_test_failed": int((~te["ok"]).sum()) if te is not None else 0,
                "n_labels": len(ds.labels)}


def _report(ds, root: Path, train_specs: list[ShardSpec], indexes: dict[str, pd.DataFrame],
            ) -> _Report:
    """rejects.csv (the dataset's metadata rows, then train clips whose audio failed, then the
    kept clips' warnings) and folds.csv; refuses a store without a single train clip."""
    audio_rejects: list[Reject] = []
    warnings: list[Reject] = []
    for sp in train_specs:
        info = read_shard_info(root / SHARDS / sp.name)
        audio_rejects += [Reject(str(f), "audio", str(r))
                          for f, ok, r in zip(info["fnames"], info["ok"], info["reason"]) if not ok]
        warnings += [Reject(str(f), WARNING_STAGE, str(r))
                     for f, ok, r in zip(info["fnames"], info["ok"], info["reason"]) if ok and r]
    rejects = list(ds.rejects) + audio_rejects
    if warnings:
        log.warning("%d train clips kept with a warning (first: %s: %s)", len(warnings),
                    warnings[0].fname, warnings[0].reason)
    # The report lists the kept clips' warnings too (stage "warning"); they are not rejects.
    rejects_path = write_csv(root / "rejects.csv", rejects_frame(rejects + warnings))
    tr, te = indexes["train"], indexes.get("test")
    folds_path = write_csv(root / "folds.csv", tr[["fname", "label", "fold", "verified"]])
    failed_test = te.loc[~te["ok"], ["fname", "reason"]] if te is not None else None
    if failed_test is not None and len(failed_test):
        log.warning("%d test clips have no features (kept in the test index with frames 0): %s",
                    len(failed_test), ", ".join(f"{f} ({r})" for f, r in
                                                failed_test.head(5).itertuples(index=False)))
    if audio_rejects:
        log.warning("%d train clips rejected for their audio (first: %s: %s); see %s",
                    len(audio_rejects), audio_rejects[0].fname, audio_rejects[0].reason,
                    rejects_path)
    if tr.empty:
        raise StoreError("no train clip could be featurized; see " + str(rejects_path))
    return _Report(rejects, audio_rejects, warnings, failed_test, rejects_path, folds_path)


# featurize's stats, in the order they always had (meta.json, the run's params)
_STATS_ORDER = ("n_clips", "n_rejected", "n_rejected_audio", "n_rejected_metadata", "n_warnings",
                "n_test", "n_test_failed", "n_labels", "audio_seconds", "audio_seconds_computed",
                "total_frames", "crop_min", "crop_max", "n_shards", "n_shards_computed",
                "workers", "extract_s", "audio_seconds_per_s")


def _size_stats(tr: pd.DataFrame, te: pd.DataFrame | None, lengths: dict, computed: dict,
                extract_s: float) -> dict[str, float | int]:
    """How much audio, how many frames, the crop limits, and the extraction's throughput."""
    seconds = computed["seconds"]
    return {
        "audio_seconds": float(tr["seconds"].sum() + (te["seconds"].sum() if te is not None else 0)),
        "audio_seconds_computed": seconds,
        "total_frames": int(tr["frames"].sum()),
        "crop_min": lengths["crop_min"],
        "crop_max": lengths["crop_max"],
        "workers": computed["workers"],
        "extract_s": extract_s,
        "audio_seconds_per_s": seconds / extract_s if extract_s > 0 and seconds else 0.0,
    }


def _store_meta(cfg: Config, ds, key: str, fingerprint: str, splits: list[str], n_sum: int,
                hop_s: float, lengths: dict, stats: dict, failed_test: pd.DataFrame | None,
                ) -> dict:
    """meta.json of the store (``complete`` false until the store is)."""
    return {
        "key": key,
        "feature_version": FEATURE_VERSION,
        "fingerprint": fingerprint,
        "dataset": ds.name,
        "complete": False,
        "splits": splits,
        "labels": list(ds.labels),
        "n_mels": cfg.logmel.n_mels,
        "summary_dim": n_sum,
        "logmel_dtype": "float16" if cfg.store.float16 else "float32",
        "hop_seconds": hop_s,
        "crop_min": lengths["crop_min"],
        "crop_max": lengths["crop_max"],
        "length_percentiles": {"frames": lengths["frames"], "seconds": lengths["seconds"]},
        "config": {s: cfg.to_dict()[s] for s in ("data",) + STORE_SECTIONS},
        "counts": {"train": stats["n_clips"], "test": stats["n_test"],
                   "test_failed": stats["n_test_failed"],
                   "rejected_audio": stats["n_rejected_audio"],
                   "rejected_metadata": stats["n_rejected_metadata"]},
        "test_failed": ([] if failed_test is None else
                        [{"fname": f, "reason": r} for f, r in failed_test.itertuples(index=False)]),
    }


def _with_folds(train: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    from fsd.folds import assign_folds

    folds = assign_folds(train["label"].astype(str).tolist(), cfg.folds,
                         train["fold"].to_numpy() if "fold" in train else None,
                         groups=train["group"].tolist() if "group" in train else None)
    out = train.copy()
    out["fold"] = np.asarray(folds, dtype=np.int64)
    return out


def _reused(cfg: Config, root: Path, key: str, t_start: float) -> FeaturizeResult:
    store = FeatureStore.open(root, "train", expected_key=key)
    dtype = "float16" if cfg.store.float16 else "float32"
    if store.meta.get("logmel_dtype", dtype) != dtype:  # built before the dtype was in the key
        raise StoreError(f"it holds {store.meta.get('logmel_dtype')} log-mels, store.float16 "
                         f"asks for {dtype}")
    rejects_path = root / "rejects.csv"
    rejects: list[Reject] = []
    if rejects_path.is_file():
        frame = pd.read_csv(rejects_path, dtype=str, keep_default_na=False)
        rejects = [Reject(r.fname, r.stage, r.reason) for r in frame.itertuples(index=False)
                   if r.stage != WARNING_STAGE]  # kept clips' warnings are not rejects
    stats = dict(store.meta.get("stats", {}))
    hop_s = float(store.meta.get("hop_seconds", cfg.logmel.hop_length / cfg.logmel.sample_rate))
    lengths = {"crop_min": store.meta["crop_min"], "crop_max": store.meta["crop_max"]}
    plots = make_plots(cfg, root, store.frames, lengths, hop_s, store.summary, only_missing=True)
    stats["elapsed_s"] = time.perf_counter() - t_start
    log.info("feature store %s is complete; reusing it (%d clips)", root, len(store))
    return FeaturizeResult(store_dir=root, store=store, rejects=rejects, stats=stats, plots=plots,
                           reused=True, rejects_path=rejects_path, folds_path=root / "folds.csv")


def make_plots(cfg: Config, root: Path, frames: np.ndarray, lengths: dict, hop_s: float,
               summary: np.ndarray | None, only_missing: bool = False) -> dict[str, Path]:
    """Length histogram with the crop limits; PCA explained variance on all train clips."""
    from fsd.features.report import plot_lengths, plot_pca_variance

    out_dir = root / "plots"
    plots: dict[str, Path] = {}
    target = out_dir / "length_histogram.png"
    if not (only_missing and target.is_file()):
        plot_lengths(frames, int(lengths["crop_min"]), int(lengths["crop_max"]), target, hop_s)
    plots["length_histogram"] = target
    target = out_dir / "pca_explained_variance.png"
    if cfg.summary.enabled and summary is not None and summary.shape[0] >= 2 and summary.shape[1]:
        if not (only_missing and target.is_file()):
            from fsd.features.projection import SummaryProjector

            X = np.asarray(summary, dtype=np.float64)
            # every component, for the whole curve; the configured count is marked on it
            projector = SummaryProjector(n_components=min(X.shape)).fit(X)
            plot_pca_variance(projector.explained_variance_ratio_, cfg.pca.n_components, target)
        plots["pca_explained_variance"] = target
    return plots


# --- running the shards ------------------------------------------------------------------------


def _compute_shards(cfg: Config, todo: list[ShardSpec], paths: dict[str, list[str]],
                    shard_dir: Path, n_sum: int, progress: bool) -> dict:
    """Extract every clip of the shards in ``todo`` and write each shard when it is complete."""
    from fsd import progress as progress_bars

    n_clips = sum(len(sp.fnames) for sp in todo)
    workers = min(resolve_workers(cfg), max(n_clips, 1))
    stats = {"seconds": 0.0, "workers": workers}
    if not todo:
        return stats
    if workers > 1:
        pending_bytes = 0
        for sp in todo:
            for j in range(len(sp.fnames)):
                try:
                    pending_bytes += os.path.getsize(paths[sp.split][sp.start + j])
                except OSError:
                    pass
        if pending_bytes < _POOL_MIN_BYTES:
            log.info("%.1f MB of audio to featurize: one in-process worker", pending_bytes / 1e6)
            workers = stats["workers"] = 1
    # Chunks small enough to balance the cores and to move the progress bar, large enough
    # that per-task overhead stays negligible.
    chunk = max(1, min(8, math.ceil(n_clips / (workers * 4))))
    tasks: list[tuple[int, list[tuple[str, str]]]] = []
    for k, sp in enumerate(todo):
        items = [(f, paths[sp.split][sp.start + j]) for j, f in enumerate(sp.fnames)]
        tasks += [(k, items[i : i + chunk]) for i in range(0, len(items), chunk)]
    pending = {k: len(sp.fnames) for k, sp in enumerate(todo)}
    results: dict[int, list[ClipResult]] = {k: [] for k in range(len(todo))}
    bar = progress_bars.bar(total=n_clips, unit="clip", desc="featurize", enabled=progress)
    log_lines = progress_bars.lines(progress)  # no bar drawn (not a terminal): a line per shard
    done = {"clips": 0, "shards": 0}
    t0 = time.perf_counter()

    def collect(k: int, chunk_results: list[ClipResult]) -> None:
        results[k].extend(chunk_results)
        stats["seconds"] += sum(r.seconds for r in chunk_results)
        pending[k] -= len(chunk_results)
        bar.update(len(chunk_results))
        el = time.perf_counter() - t0
        bar.set_postfix_str(f"{stats['seconds'] / el:.0f} audio-s/s" if el > 0 else "")
        if pending[k] == 0:
            sp = todo[k]
            order = {f: i for i, f in enumerate(sp.fnames)}
            ordered = sorted(results.pop(k), key=lambda r: order[r.fname])
            write_shard(shard_dir / sp.name, ordered, cfg.logmel.n_mels, n_sum, cfg.store.float16)
            done["shards"] += 1
        done["clips"] += len(chunk_results)
        if log_lines and pending[k] == 0:
            log.info("featurize: shard %d/%d written, %d/%d clips, %.1f audio-s/s",
                     done["shards"], len(todo), done["clips"], n_clips,
                     stats["seconds"] / el if el > 0 else 0.0)

    try:
        if workers == 1:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # in-process: same one-thread BLAS as a worker
                for k, items in tasks:
                    collect(k, _extract_chunk(items, cfg))
        else:
            _run_pool(cfg, tasks, workers, collect)
    finally:
        bar.close()
    return stats


def _run_pool(cfg: Config, tasks: list, workers: int,
              collect: Callable[[int, list[ClipResult]], None]) -> None:
    ctx = _pool_context()
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update(_THREAD_ENV)  # inherited by the forkserver/spawned workers at start
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=_init_worker) as pool:
            # Keep a bounded window in flight: results arrive in about submission order, so
            # at most a few shards are held in memory at once.
            window = workers * 4
            it = iter(tasks)
            running = {}
            for k, items in it:
                running[pool.submit(_extract_chunk, items, cfg)] = k
                if len(running) >= window:
                    break
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        k = running.pop(fut)
                        try:
                            chunk_results = fut.result()
                        except BrokenProcessPool as exc:
                            raise RuntimeError(
                                "a featurize worker process died (out of memory? or the calling "
                                "script lacks an `if __name__ == '__main__':` guard, which "
                                "worker processes need); finished shards are kept, rerun to "
                                "resume") from exc
                        collect(k, chunk_results)
                        nxt = next(it, None)
                        if nxt is not None:
                            running[pool.submit(_extract_chunk, nxt[1], cfg)] = nxt[0]
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
