"""FSDKaggle2018 at full size, simulated: featurize, then the training batch loader.

1. **Data.** The full-size rehearsal set of ``rehearsal_set.py`` (the one ``full_size.py``
   runs the pipeline on): FSDKaggle2018's layout, 9,473 train + 9,400 test clips (``--scale``
   for a fraction), the 41 official labels and counts, 16-bit 44.1 kHz mono WAV, 0.3-30 s.
   Generated once into ``--data``.
2. **featurize** (``fsd.features.featurize.featurize``, ``store.workers`` processes, the
   recipe's full features, ``experiments/seed.yaml`` with ``summary.tonnetz`` from
   ``--tonnetz``, default ``stft_chroma``): wall time, audio-s/s (in all and per worker, i.e. x real time per
   core), the peak memory of the process tree (sampled every 0.2 s: parent + workers) and the
   store's size on disk.
3. **Side by side with the baseline** (``--baseline REV``, default the commit before this
   work): ``extract_clip`` of the baseline's code and of this tree on the same
   ``--compare-clips`` clips, one core each, alternating in chunks, so load hits both alike;
   prints both rates and the ratio (this tree with ``--tonnetz``; the baseline its default).
4. **Loader**: ``fsd.train.batches.TrainBatches`` reading the store just built (memory-mapped),
   the recipe's batch size (64), crops in [263, 763) frames with every augmentation of
   ``experiments/seed.yaml``, on one core (BLAS one thread, no prefetch thread): samples/s for
   this tree and the baseline's TrainBatches, and the ratio.

    .venv/bin/python benchmarks/featurize_full.py --scale 0.05      # a quick look (~1/20)
    .venv/bin/python benchmarks/featurize_full.py                   # the full size
    .venv/bin/python benchmarks/featurize_full.py --tonnetz harmonic_cqt  # the recipe's tonnetz

Benchmarks are not tests: nothing here asserts; it prints and appends a JSON line to
``--results`` (default ``benchmarks/results/featurize_full.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_log import append_result  # noqa: E402  (beside this script)

DEFAULT_BASELINE = "9e5bb94"  # the tree before the featurize / loader changes of issue 10


def generate(root: Path, scale: float, seed: int, workers: int) -> dict:
    """The full-size rehearsal set (``rehearsal_set.py``, shared with ``full_size.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rehearsal_set

    return rehearsal_set.generate(root, scale, seed, workers)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_featurize(root: Path, cache: Path, workers: int, tonnetz: str) -> dict:
    from fsd.config import load_config
    from fsd.features.featurize import featurize

    cfg = load_config(REPO / "experiments" / "seed.yaml",
                      ["data.source=fsdkaggle2018", f"data.root={root}", f"store.cache_dir={cache}",
                       f"store.workers={workers}", f"summary.tonnetz={tonnetz}"])
    t0 = time.perf_counter()
    from full_size import TreeSampler  # beside this script

    with TreeSampler(os.getpid(), every=0.2) as mem:
        result = featurize(cfg, progress=False)
    wall = time.perf_counter() - t0
    st = result.stats
    store = result.store_dir
    return {"wall_s": wall, "extract_s": st["extract_s"], "audio_seconds": st["audio_seconds"],
            "audio_s_per_s": st["audio_seconds"] / wall,
            "extract_audio_s_per_s": st["audio_seconds_per_s"],
            "per_core_x_real_time": st["audio_seconds"] / wall / st["workers"],
            "workers": st["workers"], "peak_rss_mb": mem.total_peak / 2**20,
            "store_mb": _du(store) / 2**20,
            "store_mb_without_shards": (_du(store) - _du(store / "shards")) / 2**20,
            "store_dir": str(store), "n_clips": st["n_clips"], "n_test": st["n_test"]}


# --- side by side with the baseline ---------------------------------------------------

_EXTRACT = textwrap.dedent("""
    import json, sys, time
    from threadpoolctl import threadpool_limits
    from fsd.config import from_dict
    from fsd.features.extract import extract_clip
    paths, overrides = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    cfg = from_dict({"name": "bench"}, overrides)
    with threadpool_limits(1):
        extract_clip(paths[0], cfg)  # warm: imports, numba, caches
        t = time.process_time(); w = time.perf_counter(); s = 0.0
        for p in paths:
            s += extract_clip(p, cfg).seconds
        print(json.dumps({"seconds": s, "cpu": time.process_time() - t,
                          "wall": time.perf_counter() - w}))
""")


def baseline_tree(rev: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="fsd-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "fsd"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def _alternate(trees: dict[str, Path], rounds: list, env: dict, keys: tuple[str, ...],
               cwd=None) -> dict[str, dict[str, float]]:
    """Run ``python *rounds[i](tree_name)`` under each tree, the trees' order flipped every
    round so load hits both alike; sum each ``key`` of the JSON line every run prints last."""
    totals = {name: dict.fromkeys(keys, 0.0) for name in trees}
    for i, argv in enumerate(rounds):
        for name in (list(trees) if i % 2 == 0 else list(reversed(trees))):
            out = subprocess.run([sys.executable, *argv(name)],
                                 env={**env, "PYTHONPATH": str(trees[name])},
                                 cwd=cwd or trees[name], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            for k in keys:
                totals[name][k] += r[k]
    return totals


def compare_extract(paths: list[str], trees: dict[str, Path], chunks: int,
                    overrides: dict[str, list[str]]) -> dict:
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    rounds = [lambda name, part=paths[i::chunks]: ["-c", _EXTRACT, json.dumps(part),
                                                   json.dumps(overrides.get(name, []))]
              for i in range(chunks)]
    totals = _alternate(trees, rounds, env, ("seconds", "cpu", "wall"))
    return {name: {**t, "x_real_time_cpu": t["seconds"] / t["cpu"],
                   "x_real_time_wall": t["seconds"] / t["wall"]} for name, t in totals.items()}


_LOADER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from threadpoolctl import threadpool_limits
    from fsd.config import load_config
    from fsd.features.store import FeatureStore
    from fsd.train.batches import TrainBatches
    store_dir, config, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = load_config(config, [])
    store = FeatureStore.open(store_dir)
    rows = np.flatnonzero(store.folds != 0)
    ds = TrainBatches(store, rows, cfg.train, (263, 763), 1.0, seed=0)
    with threadpool_limits(1):
        ds.batch(0, 0)
        t = time.process_time(); w = time.perf_counter(); n = 0
        for step in range(1, steps + 1):
            n += len(ds.batch(step % len(ds), step // len(ds)).y)
        print(json.dumps({"samples": n, "cpu": time.process_time() - t,
                          "wall": time.perf_counter() - w}))
""")


def compare_loader(store_dir: str, trees: dict[str, Path], steps: int, rounds: int) -> dict:
    env = {**os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                             "TF_NUM_INTEROP_THREADS")},
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    argv = ["-c", _LOADER, store_dir, str(REPO / "experiments" / "seed.yaml"), str(steps)]
    totals = _alternate(trees, [lambda name: argv] * rounds, env, ("samples", "cpu", "wall"),
                        cwd=REPO)
    return {name: {**t, "samples_per_s_cpu": t["samples"] / t["cpu"],
                   "samples_per_s_wall": t["samples"] / t["wall"]} for name, t in totals.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (default 1)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "fsd-full-synthetic",
                   help="where the synthetic set is generated (kept; default %(default)s)")
    p.add_argument("--cache", type=Path, default=None,
                   help="store.cache_dir (default: a fresh temp folder, deleted after)")
    p.add_argument("--workers", type=int, default=0, help="featurize workers (0: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tonnetz", choices=("stft_chroma", "harmonic_cqt"), default="stft_chroma",
                   help="summary.tonnetz for featurize and this tree's extract (default %(default)s)")
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    p.add_argument("--compare-clips", type=int, default=120,
                   help="clips for the side-by-side extract comparison (0: skip)")
    p.add_argument("--loader-steps", type=int, default=150, help="batches per loader round")
    p.add_argument("--loader-rounds", type=int, default=2)
    p.add_argument("--skip-featurize", action="store_true",
                   help="reuse the store in --cache (loader and comparison only)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "featurize_full.jsonl")
    args = p.parse_args()
    workers = args.workers or os.cpu_count() or 1
    lock = Path("/work/exp/EXPERIMENT.lock")
    data = args.data if args.scale == 1.0 else args.data.with_name(f"{args.data.name}-{args.scale:g}")
    print(f"generating (or reusing) the synthetic set in {data} ...", flush=True)
    info = generate(data, args.scale, args.seed, workers)
    total = info["train_seconds"] + info["test_seconds"]
    print(f"  {info['n_train']} train + {info['n_test']} test clips, {total / 3600:.2f} h of audio "
          f"(train {info['train_seconds'] / 3600:.2f} h, test {info['test_seconds'] / 3600:.2f} h)")

    cache = args.cache or Path(tempfile.mkdtemp(prefix="fsd-full-cache-"))
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "scale": args.scale, "data": info,
              "workers": workers, "baseline": args.baseline, "tonnetz": args.tonnetz, "cores": os.cpu_count(),
              "load_before": os.getloadavg(), "experiment_lock": lock.exists()}
    if not args.skip_featurize:
        print(f"featurize with {workers} workers, summary.tonnetz={args.tonnetz} ...", flush=True)
        f = run_featurize(data, cache, workers, args.tonnetz)
        record["featurize"] = f
        print(f"  wall {f['wall_s']:.0f} s for {f['audio_seconds'] / 3600:.2f} h of trimmed audio: "
              f"{f['audio_s_per_s']:.0f} audio-s/s, {f['per_core_x_real_time']:.1f}x real time per core"
              f"\n  peak memory {f['peak_rss_mb']:.0f} MB (process tree); store "
              f"{f['store_mb']:.0f} MB ({f['store_mb_without_shards']:.0f} MB without the resume shards)")
        store_dir = f["store_dir"]
    else:
        store_dir = str(next((cache / "features").iterdir()))
    record["load_after_featurize"] = os.getloadavg()

    trees = {"baseline": baseline_tree(args.baseline), "this tree": REPO}
    try:
        if args.compare_clips:
            clips = sorted((data / "FSDKaggle2018.audio_train").glob("*.wav"))
            pick = np.random.default_rng(1).choice(len(clips), min(args.compare_clips, len(clips)),
                                                   replace=False)
            paths = [str(clips[i]) for i in sorted(pick)]
            print(f"extract_clip, one core, {len(paths)} clips: baseline {args.baseline} vs this "
                  "tree ...", flush=True)
            c = compare_extract(paths, trees, chunks=4,
                                overrides={"this tree": [f"summary.tonnetz={args.tonnetz}"]})
            record["extract"] = c
            b, t = c["baseline"], c["this tree"]
            print(f"  baseline  {b['x_real_time_cpu']:.1f}x real time per core (CPU time), "
                  f"{b['x_real_time_wall']:.1f}x (wall)\n  this tree {t['x_real_time_cpu']:.1f}x "
                  f"(CPU), {t['x_real_time_wall']:.1f}x (wall)\n  ratio "
                  f"{t['x_real_time_cpu'] / b['x_real_time_cpu']:.2f}x")
        print("loader, one core, seed.yaml batch (64), crops [263, 763), seed.yaml augmentation ...",
              flush=True)
        lo = compare_loader(store_dir, trees, args.loader_steps, args.loader_rounds)
        record["loader"] = lo
        b, t = lo["baseline"], lo["this tree"]
        print(f"  baseline  {b['samples_per_s_cpu']:.0f} samples/s (CPU time), "
              f"{b['samples_per_s_wall']:.0f} (wall)\n  this tree {t['samples_per_s_cpu']:.0f} "
              f"samples/s (CPU time), {t['samples_per_s_wall']:.0f} (wall)\n  ratio "
              f"{t['samples_per_s_cpu'] / b['samples_per_s_cpu']:.2f}x")
    finally:
        shutil.rmtree(trees["baseline"], ignore_errors=True)
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
    record["load_after"] = os.getloadavg()
    append_result(args.results, record)
    print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
