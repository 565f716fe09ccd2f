"""The Ray executor against the local one, side by side on this machine, and on paper for GPUs.

Three measurements, each optional, in one run:

1. **``fsd main``** (``--demo``, ``--rehearsal-scale S``): the same config run twice from empty
   stores (a sqlite tracking store and outputs of its own each, under ``OUT``), once with the
   local executor and once with ``--executor ray`` on a Ray cluster of this machine's cores
   that this script starts on 127.0.0.1 before the runs (``ray.cluster_utils.Cluster``, one
   node: the same cores as the local run; its start is timed apart) and stops after them, or
   ``--ray-address``. Never a bare ``ray.init()``: that joins whatever cluster ``ray start``
   last started on the machine. Prints each wall time, the
   ratio ray / local (aim: <= 1.15) and each run's out-of-fold MAP@3 (the same folds and seeds:
   they should agree). ``--repeats`` alternates the pair to see the noise of a shared machine.
   The rehearsal is ``experiments/rehearsal.yaml`` on ``rehearsal_set.py``'s synthetic
   FSDKaggle2018 at scale S (as ``full_size.py`` runs it).
2. **TTA shards** (``--tta``, after the demo's local run): the ensemble's out-of-fold and test
   scoring of the demo's fold models, in this process (unsharded) and on
   ``--actors`` Ray actors (``fsd.cluster.scoring``), timed apart: the actors' start (Ray, the
   bundle through the object store, TensorFlow, the features) and the scoring itself; and
   whether the two agree bit for bit.
3. **On paper** (``--paper GPU_CHECK.json``): from ``gpu_check.py --json``'s figures (its
   per-part projection of improved.yaml on the real dataset, on the device it ran on), the wall
   time on 1, 2, 5 and 10 such nodes: folds as tasks (``ceil(folds / nodes)`` rounds of one
   fold's time) and the TTA passes shared by one scoring actor per node
   (:func:`cluster_projection`).

    .venv/bin/python benchmarks/ray_executor.py --out /tmp/fsd-ray-bench --demo --tta
    .venv/bin/python benchmarks/ray_executor.py --out /tmp/fsd-ray-bench --rehearsal-scale 0.1
    .venv/bin/python benchmarks/gpu_check.py --smoke --json /tmp/gpu.json
    .venv/bin/python benchmarks/ray_executor.py --paper /tmp/gpu.json

One JSON line per run goes to ``benchmarks/results/ray_executor.jsonl``. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_log import append_result  # noqa: E402

NODES = (1, 2, 5, 10)


# -- 1. fsd main, local against ray ------------------------------------------------------------

def run_main(config: Path, overrides: list[str], out: Path, executor: str,
             ray_address: str = "") -> dict:
    """``fsd main`` from an empty store under ``out``; its wall time and ensemble scores."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_RUN_ID")}
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db",
                "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    cmd = [sys.executable, "-m", "fsd", "main", "--config", str(config),
           "--set", f"output_dir={out / 'outputs'}", *[f"--set={o}" for o in overrides]]
    if executor == "ray":
        cmd += ["--executor", "ray"] + (["--ray-address", ray_address] if ray_address else [])
    print(f"[{executor}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(out / "main.log", "w") as log:
        rc = subprocess.run(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    result = {"executor": executor, "wall_s": round(wall, 1), "rc": rc, "out": str(out)}
    if rc != 0:
        print(f"[{executor}] fsd main exited {rc}; see {out / 'main.log'}", flush=True)
        return result
    result.update(ensemble_scores(env["MLFLOW_TRACKING_URI"]))
    print(f"[{executor}] {wall:.1f} s, out-of-fold MAP@3 {result.get('oof_map3')}", flush=True)
    return result


def ensemble_scores(uri: str) -> dict:
    """The newest finished ensemble run's headline scores in the store at ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, "tags.`fsd.stage` = 'ensemble' and status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return {}
    m = runs[0].data.metrics
    return {k: round(m[k], 6) for k in ("oof_map3", "cnn_oof_map3", "public_map3",
                                         "private_map3") if k in m}


def compare_main(name: str, config: Path, overrides: list[str], out: Path, repeats: int,
                 ray_address: str, ray_overrides: list[str] = ()) -> dict:
    """Local then ray, ``repeats`` times; the ratio of the summed wall times.
    ``ray_overrides``: settings of the Ray side only (``cluster.*``: the local side ignores
    them anyway), recorded with the figures."""
    pairs = []
    for i in range(repeats):
        local = run_main(config, overrides, out / f"{name}-local-{i}", "local")
        ray = run_main(config, [*overrides, *ray_overrides], out / f"{name}-ray-{i}", "ray",
                       ray_address)
        pairs.append({"local": local, "ray": ray})
    ok = [p for p in pairs if p["local"]["rc"] == 0 and p["ray"]["rc"] == 0]
    ratio = (sum(p["ray"]["wall_s"] for p in ok) / sum(p["local"]["wall_s"] for p in ok)
             if ok else None)
    print(f"{name}: ray / local wall = {ratio:.3f}" if ratio else f"{name}: no complete pair",
          flush=True)
    return {"name": name, "config": str(config), "overrides": overrides,
            "ray_overrides": list(ray_overrides), "pairs": pairs,
            "ratio": round(ratio, 3) if ratio else None}


# -- 2. TTA shards: local against Ray actors ---------------------------------------------------

def tta_shards(store_dir: Path, actors: int, ray_address: str, overrides: list[str],
               repeats: int) -> dict:
    """Score the demo's folds (the local run in ``store_dir``) here and on Ray actors, with
    the ensemble settings ``overrides`` (e.g. more views); each timing the best of
    ``repeats`` (the first call of each, which traces the graphs, not counted)."""
    import dataclasses

    import mlflow
    import numpy as np

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
    from fsd import tracking
    from fsd.cluster.scoring import ray_scorer
    from fsd.config import load_config
    from fsd.ensemble.stage import assemble, score_out_of_fold, score_test
    from fsd.entrypoints.ensemble import _download_folds, select_fold_runs
    from fsd.tracking.lookups import training_config

    uri = f"sqlite:///{store_dir}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    cfg = load_config(REPO / "experiments" / "demo.yaml",
                      [f"output_dir={store_dir / 'outputs'}", *overrides])
    runs = select_fold_runs(cfg, None)
    first = next(iter(runs.values()))
    train_cfg = training_config(cfg, first)
    store, features_run = tracking.resolve_store(
        train_cfg, first.data.tags.get(tracking.TAG_FEATURES_RUN, ""))
    work = store_dir / "tta-bench"
    folds = _download_folds(runs, work / "downloads")
    info, lengths, ensemble, bundle = assemble(train_cfg, store, folds, work / "bundle")
    ws = train_cfg.summary.enabled
    n_oof, n_test = len(store.index), len(store.open_split("test").index) \
        if "test" in store.splits else 0
    print(f"tta: {len(folds)} folds x {len(lengths)} lengths x {info.tta_crops} crops, "
          f"{n_oof} train + {n_test} test clips", flush=True)

    def timed(fn, times: int = 1):
        best, value = float("inf"), None
        for _ in range(times):
            t0 = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - t0)
        return value, best

    score_out_of_fold(ensemble, store, ws)  # warm: each length's first call traces the graph
    local_oof, local_oof_s = timed(lambda: score_out_of_fold(ensemble, store, ws), repeats)
    local_test, local_test_s = timed(lambda: score_test(store, ensemble, info, ws), repeats)
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(
        cfg.cluster, executor="ray", address=ray_address, scoring_actors=actors,
        cpus_per_fold=1))
    import ray

    shard_map, start_s = timed(lambda: ray_scorer(cfg, train_cfg, features_run)(bundle, ensemble))
    try:
        nodes = shard_map.nodes()
        score_out_of_fold(ensemble, store, ws, shard_map)  # warm the actors' graphs too
        ray_oof, ray_oof_s = timed(lambda: score_out_of_fold(ensemble, store, ws, shard_map),
                                   repeats)
        ray_test, ray_test_s = timed(lambda: score_test(store, ensemble, info, ws, shard_map),
                                     repeats)
    finally:
        shard_map.close()
        ray.shutdown()
    same = bool(np.array_equal(local_oof.probs, ray_oof.probs) and (
        local_test is None or np.array_equal(local_test.probabilities.iloc[:, 1:].to_numpy(),
                                             ray_test.probabilities.iloc[:, 1:].to_numpy())))
    passes = n_oof * len(lengths) * info.tta_crops
    out = {"overrides": overrides, "repeats": repeats, "oof_passes": passes,
           "folds": len(folds), "lengths": lengths, "crops": info.tta_crops,
           "train_clips": n_oof, "test_clips": n_test, "actors": actors,
           "actor_nodes": len(set(nodes)), "local_oof_s": round(local_oof_s, 2),
           "local_test_s": round(local_test_s, 2), "ray_start_s": round(start_s, 2),
           "ray_oof_s": round(ray_oof_s, 2), "ray_test_s": round(ray_test_s, 2),
           "bit_identical": same, "cores": os.cpu_count()}
    print(f"tta: local {local_oof_s:.2f} s OOF + {local_test_s:.2f} s test; {actors} Ray actors "
          f"{ray_oof_s:.2f} s + {ray_test_s:.2f} s (actors' start {start_s:.1f} s); "
          f"bit-identical: {same}", flush=True)
    return out


class OwnCluster:
    """A one-node Ray cluster of this machine's cores on 127.0.0.1, started and stopped here
    (``address``; ``start_s``: how long it took to come up)."""

    def __enter__(self) -> OwnCluster:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
        os.environ["PYTHONPATH"] = str(REPO)  # the nodes' workers import this checkout
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        # the workers at the local executor's priority (Ray's default is nice 15, which on a
        # shared machine slows only the Ray side); fsd's own local start does the same
        os.environ.setdefault("RAY_worker_niceness", "0")
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": os.cpu_count(), "node_ip_address": "127.0.0.1",
            "include_dashboard": False})
        self.cluster.wait_for_nodes()
        self.address = self.cluster.address
        self.start_s = round(time.perf_counter() - t0, 1)
        print(f"ray: a {os.cpu_count()}-CPU node at {self.address} in {self.start_s} s",
              flush=True)
        return self

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


# -- 3. on paper: GPU nodes -------------------------------------------------------------------

def cluster_projection(report: dict, nodes: int, fixed_s: float = 0.0) -> dict:
    """improved.yaml's wall time on ``nodes`` nodes like the one ``gpu_check.py`` measured,
    from its report (``counts`` and ``projection.seconds``: [lower, upper] bounds per part).

    - a fold is one task on one node: its training, validation and compiles, i.e. the parts'
      sum over folds divided by the folds; ``ceil(folds / nodes)`` rounds of it;
    - the TTA passes (out of fold + test) shared by one scoring actor per node: divided by
      ``nodes``;
    - ``fixed_s``, the same on any number of nodes: featurize (once, on the driver's CPUs);
    - left out (not measured): the baselines (CPU tasks beside the folds, off the critical
      path while a fold takes hours), starting Ray and the actors, each node's download of
      the features."""
    s, folds = report["projection"]["seconds"], report["counts"]["folds"]
    per_fold = [(s["train"][i] + s["validation"][i] + s["compile"][i]) / folds for i in (0, 1)]
    rounds = math.ceil(folds / nodes)
    tta = [(s["oof_tta"][i] + s["test_tta"][i]) / nodes for i in (0, 1)]
    total = [fixed_s + rounds * per_fold[i] + tta[i] for i in (0, 1)]
    return {"nodes": nodes, "fold_rounds": rounds, "fixed_hours": round(fixed_s / 3600, 3),
            "fold_hours": [round(h / 3600, 2) for h in per_fold],
            "folds_hours": [round(rounds * h / 3600, 2) for h in per_fold],
            "tta_hours": [round(h / 3600, 2) for h in tta],
            "total_hours": [round(h / 3600, 2) for h in total]}


def featurize_seconds(results: Path) -> float:
    """Featurize's wall time at full size: the newest scale-1.0 run in ``full_size.py``'s
    results (0 when there is none)."""
    wall = 0.0
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            if r.get("scale") == 1.0:
                wall = next((st["wall_s"] for st in r.get("stages", [])
                             if st.get("name") == "featurize" and "wall_s" in st), wall)
    return wall


def paper_table(report: dict, nodes: tuple[int, ...] = NODES, fixed_s: float = 0.0,
                ) -> list[dict]:
    rows = [cluster_projection(report, n, fixed_s) for n in nodes]
    base = rows[0]["total_hours"]
    for r in rows:
        r["speedup"] = [round(base[i] / r["total_hours"][i], 2) for i in (0, 1)]
    return rows


def print_paper(report: dict, rows: list[dict]) -> None:
    c = report["counts"]
    print(f"on paper, from {report.get('device', '?')} ({report.get('backend', '?')}, "
          f"{report.get('precision', '?')}{', smoke' if report.get('smoke') else ''}): "
          f"{c['folds']} folds, {c['oof_tta_passes']:,} + {c['test_tta_passes']:,} TTA passes")
    print(f"featurize (once, the same on any number of nodes): {rows[0]['fixed_hours']} h")
    print("| nodes | fold rounds | one fold (h) | folds (h) | TTA (h) | total (h) | speedup |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        def span(v):
            return f"{v[0]:.2f} - {v[1]:.2f}"
        print(f"| {r['nodes']} | {r['fold_rounds']} x | {span(r['fold_hours'])} | "
              f"{span(r['folds_hours'])} | {span(r['tta_hours'])} | {span(r['total_hours'])} | "
              f"{r['speedup'][0]:.2f}x - {r['speedup'][1]:.2f}x |")


def run_side_by_side(args: argparse.Namespace, address: str, record: dict) -> None:
    """The measurements that run fsd (1 and 2), against the cluster at ``address``."""
    if args.demo:
        record["demo"] = compare_main("demo", REPO / "experiments" / "demo.yaml", [],
                                      args.out, args.repeats, address, args.ray_set)
    if args.rehearsal_scale:
        import rehearsal_set

        data = args.out / f"rehearsal-data-{args.rehearsal_scale}"
        rehearsal_set.generate(data, args.rehearsal_scale)
        record["rehearsal"] = compare_main(
            f"rehearsal-{args.rehearsal_scale}", REPO / "experiments" / "rehearsal.yaml",
            [f"data.root={data}"], args.out, args.repeats, address, args.ray_set)
    if args.tta:
        local = args.out / "demo-local-0"
        if not (local / "mlflow.db").exists():  # the demo's local run gives the folds
            run_main(REPO / "experiments" / "demo.yaml", [], local, "local")
        record["tta"] = tta_shards(local, args.actors, address, args.tta_set,
                                   args.tta_repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for the runs (emptied per run)")
    ap.add_argument("--demo", action="store_true", help="fsd main on experiments/demo.yaml")
    ap.add_argument("--rehearsal-scale", type=float, default=0.0, metavar="S",
                    help="also fsd main on the rehearsal set at scale S (e.g. 0.1; tens of "
                         "minutes a run here)")
    ap.add_argument("--repeats", type=int, default=1, help="local/ray pairs per config")
    ap.add_argument("--ray-address", default="", help="an existing cluster (default: a local "
                                                      "Ray started by each run)")
    ap.add_argument("--ray-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the Ray side only, e.g. cluster.cpus_per_baseline=0")
    ap.add_argument("--tta", action="store_true",
                    help="TTA scoring here against Ray actors, on the demo's local run")
    ap.add_argument("--actors", type=int, default=2, help="scoring actors for --tta")
    ap.add_argument("--tta-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an ensemble setting for --tta, e.g. ensemble.tta_crops=5")
    ap.add_argument("--tta-repeats", type=int, default=3, help="--tta: best of this many")
    ap.add_argument("--paper", type=Path, metavar="GPU_CHECK_JSON",
                    help="gpu_check.py --json's report: improved.yaml on 1, 2, 5, 10 nodes")
    ap.add_argument("--results", type=Path,
                    default=REPO / "benchmarks" / "results" / "ray_executor.jsonl")
    args = ap.parse_args(argv)
    record: dict = {"cores": os.cpu_count()}
    if args.paper:
        report = json.loads(args.paper.read_text())
        rows = paper_table(report, fixed_s=featurize_seconds(
            REPO / "benchmarks" / "results" / "full_size.jsonl"))
        print_paper(report, rows)
        record["paper"] = {"source": str(args.paper), "device": report.get("device"),
                           "smoke": report.get("smoke"), "rows": rows}
    if (args.demo or args.rehearsal_scale or args.tta) and not args.out:
        ap.error("--out is required for --demo, --rehearsal-scale and --tta")
    if args.demo or args.rehearsal_scale or args.tta:
        with contextlib.ExitStack() as stack:
            address = args.ray_address
            if not address:
                own = stack.enter_context(OwnCluster())
                address, record["ray_cluster_start_s"] = own.address, own.start_s
            run_side_by_side(args, address, record)
    if len(record) > 1:
        append_result(args.results, record)
        print(json.dumps(record, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
