"""Rehearse the whole pipeline at FSDKaggle2018's size: does it finish, in what time and memory?

1. **Data**: the synthetic FSDKaggle2018 of ``rehearsal_set.py`` at ``--scale`` (9,473 train +
   9,400 test clips at 1.0, the official counts, usage split and layout), generated once
   into ``OUT/data`` and kept.
2. **Pipeline**: ``fsd main --config experiments/rehearsal.yaml`` on it, as a user runs it
   (``data.source: fsdkaggle2018``; its own sqlite MLflow store and outputs under ``OUT``):
   featurize, 10 folds, the baselines, the 6 x 5 TTA ensemble, the blend, the submission, the
   registration. Every process of its tree is sampled every 0.5 s (CPU time, resident memory);
   each stage's figures are read in its MLflow runs' time windows: featurize (the main process
   and its pool), train (the fold workers), baseline and ensemble (the main process).
3. **Serve**: ``fsd serve`` of the ensemble run's logged model, then ``--serve-clips``
   scored test clips, one request each, over HTTP on 127.0.0.1.
4. **Student** (``--student``): ``fsd main`` also runs the distill step (``distill.enabled``);
   its student is scored out of fold (the distill run's honest ``student_oof_map3``), on every
   test clip through its pyfunc (raw audio in, as served: ``OUT/student_submission.csv``, its
   Public/Private MAP@3 beside the blend's submission) and served like the ensemble.
5. **Report**: ``OUT/report.json``: ``stages`` (name, wall_s, cpu_s, peak_rss_mb), ``n_train``,
   ``n_test``, ``submission_rows`` (and whether the submission is valid), ``public_map3``,
   ``private_map3``, ``served_p50_ms``, the baselines' out-of-fold scores and times. One JSON
   line is appended to ``benchmarks/results/full_size.jsonl``.

    .venv/bin/python benchmarks/full_size.py --scale 0.03 --out /tmp/fsd-rehearsal-0.03  # minutes
    .venv/bin/python benchmarks/full_size.py --scale 1 --out /work/rehearsal/full          # ~1 h
    .venv/bin/python benchmarks/full_size.py --scale 1 --out /work/rehearsal/full --student

A rerun on the same ``OUT`` reuses what ``fsd main`` finds done (its steps skip finished work);
``--fresh`` starts from an empty store. Nothing here asserts: it measures and prints.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rehearsal_set  # noqa: E402  (beside this script)
from results_log import append_result  # noqa: E402

from fsd.tracking.tags import TAG_MODEL_URI  # noqa: E402

DEFAULT_CONFIG = REPO / "experiments" / "rehearsal.yaml"


@dataclass
class Proc:
    """One process of the sampled tree: what it is and its (time, cpu seconds, rss) samples."""

    pid: int
    role: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    def cpu_between(self, t0: float, t1: float) -> float:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return 0.0
        before = [s for s in self.samples if s[0] < t0]
        start = before[-1][1] if before else 0.0  # a process born inside starts at 0
        return inside[-1][1] - start

    def peak_between(self, t0: float, t1: float) -> int:
        return max((s[2] for s in self.samples if t0 <= s[0] <= t1), default=0)


def _role(cmdline: list[str], root_pid: int, pid: int) -> str:
    text = " ".join(cmdline)
    if pid == root_pid:
        return "main"
    if "train-fold" in text or "train_fold" in text:
        return "fold_worker"
    if "forkserver" in text or "spawn_main" in text or "resource_tracker" in text:
        return "pool"
    return "other"


class TreeSampler:
    """Samples a process and all its descendants every ``every`` seconds on a thread."""

    def __init__(self, pid: int, every: float = 0.5):
        import psutil

        self.root = psutil.Process(pid)
        self.every = every
        self.procs: dict[int, Proc] = {}
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        now, total = time.time(), 0
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for p in tree:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    rss = p.memory_info().rss
                    if p.pid not in self.procs:
                        self.procs[p.pid] = Proc(p.pid, _role(p.cmdline(), self.root.pid, p.pid))
            except psutil.Error:
                continue
            self.procs[p.pid].samples.append((now, t.user + t.system, rss))
            total += rss
        self.total_peak = max(self.total_peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def stage(self, name: str, t0: float, t1: float, roles: tuple[str, ...]) -> dict:
        procs = [p for p in self.procs.values() if p.role in roles]
        return {"name": name, "wall_s": round(t1 - t0, 1),
                "cpu_s": round(sum(p.cpu_between(t0, t1) for p in procs), 1),
                "peak_rss_mb": round(max((p.peak_between(t0, t1) for p in procs), default=0)
                                     / 2**20, 1),
                "processes": sum(1 for p in procs if p.peak_between(t0, t1))}


def _window(runs) -> tuple[float, float]:
    return (min(r.info.start_time for r in runs) / 1000,
            max(r.info.end_time or r.info.start_time for r in runs) / 1000)


def stage_windows(experiment: str) -> dict[str, list]:
    """The finished runs of the rehearsal, by stage (fsd.stage tag)."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by: dict[str, list] = {}
    for r in runs:
        if r.info.status == "FINISHED":
            by.setdefault(r.data.tags.get("fsd.stage", "?"), []).append(r)
    return by


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def serve_and_score(model_uri: str, config: Path, env: dict, clips: list[tuple[Path, str]],
                    timeout: float = 600.0, name: str = "serve") -> dict:
    """``fsd serve`` the model, score each clip in its own request, stop the server (its log
    ``OUT/<name>.log``, its stage ``name``)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "fsd", "serve", "--config", str(config), "--model", model_uri,
           "--port", str(port)]
    log = open(f"{env['FSD_REHEARSAL_OUT']}/{name}.log", "w")
    t_start = time.time()
    # in OUT: a sqlite store keeps its artifacts in ./mlruns of the working directory
    server = subprocess.Popen(cmd, cwd=env["FSD_REHEARSAL_OUT"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    out: dict = {"served_clips": len(clips)}
    try:
        with TreeSampler(server.pid) as sampler:
            deadline = time.time() + timeout
            while time.time() < deadline:
                if server.poll() is not None:
                    raise RuntimeError(f"fsd serve exited with {server.returncode}; see {name}.log")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/ping")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            out["serve_ready_s"] = round(time.time() - t_start, 1)
            latencies, rr, errors = [], [], 0
            for path, label in clips:
                body = json.dumps({"dataframe_split": {"columns": ["audio"], "data": [
                    [base64.b64encode(path.read_bytes()).decode()]]}}).encode()
                t0 = time.perf_counter()
                status, payload = _post(port, body, timeout=120)
                latencies.append(1000 * (time.perf_counter() - t0))
                if status != 200:
                    errors += 1
                    continue
                row = json.loads(payload)["predictions"][0]
                top = [row.get(f"label_{k}") for k in (1, 2, 3)]
                rr.append(1 / (top.index(label) + 1) if label in top else 0.0)
            t_end = time.time()
        import numpy as np

        out.update({"served_p50_ms": round(float(np.percentile(latencies, 50)), 1),
                    "served_p95_ms": round(float(np.percentile(latencies, 95)), 1),
                    "served_errors": errors,
                    "served_map3": round(float(np.mean(rr)), 4) if rr else None,
                    "stage": sampler.stage(name, t_start, t_end, ("main", "other", "pool"))})
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return out


def check_submission(out_dir: Path, data: Path) -> dict:
    """The newest submission.csv under the outputs: rows, validity, public/private MAP@3."""
    subs = sorted(out_dir.rglob("submission.csv"), key=lambda p: p.stat().st_mtime)
    if not subs:
        return {"submission_rows": 0, "submission_valid": False}
    return score_submission_file(subs[-1], data)


def score_submission_file(path: Path, data: Path) -> dict:
    """One submission CSV against the test clips: rows, validity, public/private MAP@3."""
    import pandas as pd

    from fsd.ensemble.submission import score_submission

    sub = pd.read_csv(path, keep_default_na=False)
    test = pd.read_csv(data / rehearsal_set.META / "test_post_competition.csv",
                       keep_default_na=False)
    names = set((data / rehearsal_set.TEST_DIR).iterdir())
    labels = sub["label"].astype(str).str.split(" ")
    valid = (list(sub.columns) == ["fname", "label"] and len(sub) == len(names)
             and set(sub["fname"]) == {p.name for p in names}
             and bool(labels.map(lambda v: len(v) == 3 and len(set(v)) == 3
                                 and set(v) <= set(rehearsal_set.LABELS)).all()))
    test = test[test["usage"].isin(["Public", "Private"])]
    scores = score_submission(sub, test)
    return {"submission": str(path), "submission_rows": len(sub), "submission_valid": valid,
            "public_map3": round(scores.get("public_map3", float("nan")), 4),
            "private_map3": round(scores.get("private_map3", float("nan")), 4)}


def student_submission(model_uri: str, data: Path, dst: Path) -> Path:
    """The student's top 3 labels for every test clip through its pyfunc, as `fsd predict`
    scores files (raw audio in, as a request carries it); a refused clip gets no labels."""
    import mlflow
    import pandas as pd

    from fsd.entrypoints.predict import predict_files

    files = sorted((data / rehearsal_set.TEST_DIR).iterdir())
    rows = predict_files(mlflow.pyfunc.load_model(model_uri), files, 3)
    pd.DataFrame([{"fname": r["fname"], "label": "" if "error" in r else
                   " ".join(str(r[f"label_{k}"]) for k in (1, 2, 3))} for r in rows],
                 columns=["fname", "label"]).to_csv(dst, index=False)
    return dst


def student_report(runs: list, data: Path, out: Path, config: Path, env: dict,
                   clips: list[tuple[Path, str]]) -> dict:
    """The distill run's student (``runs``: this rehearsal's distill runs): its honest score,
    its submission's Public/Private MAP@3 and its served figures (``student_*``), and the
    serving stage (``student_stage``)."""
    if not runs:
        raise SystemExit("--student: fsd main finished no distill run; see main.log")
    run = runs[-1]
    report = {"student_metrics": {k: round(v, 4) for k, v in run.data.metrics.items()
                                  if "/" not in k and "map3" in k}}
    uri = run.data.tags[TAG_MODEL_URI]
    sub = student_submission(uri, data, out / "student_submission.csv")
    report.update({f"student_{k}": v for k, v in score_submission_file(sub, data).items()})
    served = serve_and_score(uri, config, env, clips, name="serve-student")
    report["student_stage"] = served.pop("stage")
    report.update({f"student_{k}": v for k, v in served.items()})
    return report


def rehearse(args: argparse.Namespace) -> dict:
    out = Path(args.out).resolve()
    data = out / "data"
    print(f"data: generating scale {args.scale} into {data} (kept between runs)", flush=True)
    info = rehearsal_set.generate(data, args.scale, args.seed, workers=args.workers)
    if args.generate_only:
        return {"data": info}
    if args.fresh:
        for p in (out / "outputs", out / "mlflow.db"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db",
           "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONUNBUFFERED": "1", "FSD_REHEARSAL_OUT": str(out)}
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    from fsd.config import load_config

    overrides = [f"data.root={data}", f"output_dir={out / 'outputs'}",
                 *(["distill.enabled=true"] if args.student else []), *args.set]
    cfg = load_config(Path(args.config).resolve(), overrides)
    cmd = [sys.executable, "-m", "fsd", "main", "--config", str(Path(args.config).resolve())]
    for o in overrides:
        cmd += ["--set", o]
    samples = out / "samples.json"
    if args.analyze:  # the samples of an earlier run: read its runs and serve again
        saved = json.loads(samples.read_text())
        t0, t1 = saved["t0"], saved["t1"]
        sampler = TreeSampler.__new__(TreeSampler)
        sampler.procs = {int(k): Proc(int(k), v["role"], [tuple(x) for x in v["samples"]])
                         for k, v in saved["procs"].items()}
        sampler.total_peak = saved["total_peak"]
    else:
        print("pipeline:", " ".join(cmd), flush=True)
        t0 = time.time()
        with open(out / "main.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
            with TreeSampler(proc.pid) as sampler:
                rc = proc.wait()
        t1 = time.time()
        samples.write_text(json.dumps({"t0": t0, "t1": t1, "total_peak": sampler.total_peak,
                                       "procs": {p.pid: {"role": p.role, "samples": p.samples}
                                                 for p in sampler.procs.values()}}))
        if rc != 0:
            raise SystemExit(f"fsd main failed with exit code {rc}; see {out / 'main.log'}")
    by = stage_windows(cfg.experiment_name)
    stages = []
    for name, stage, roles in (("featurize", "featurize", ("main", "pool")),
                               ("train", "train_fold", ("fold_worker",)),
                               ("baseline", "baseline", ("main",)),
                               ("ensemble", "ensemble", ("main",)),
                               *([("distill", "distill", ("main",))] if args.student else [])):
        runs = [r for r in by.get(stage, []) if r.info.start_time / 1000 >= t0 - 1]
        if not runs:
            stages.append({"name": name, "reused": True})
            continue
        w0, w1 = _window(runs)
        if name == "train" and not any(p.role == "fold_worker" for p in sampler.procs.values()):
            roles = ("main",)  # train.fold_workers 1: the folds train in the main process
        stages.append({**sampler.stage(name, w0, w1, roles), "runs": len(runs)})
    report = {"scale": args.scale, "config": str(args.config), "overrides": args.set,
              "n_train": info["n_train"], "n_test": info["n_test"], "data": info,
              "main_wall_s": round(t1 - t0, 1),
              "main_cpu_s": round(sum(p.samples[-1][1] for p in sampler.procs.values()
                                      if p.samples), 1),
              "main_peak_tree_rss_mb": round(sampler.total_peak / 2**20, 1),
              "peak_process_rss_mb": round(max(max(s[2] for s in p.samples)
                                               for p in sampler.procs.values() if p.samples)
                                           / 2**20, 1),
              "cores": os.cpu_count(), "load_avg_end": os.getloadavg()}
    report.update(check_submission(out / "outputs", data))
    report["baselines"] = {
        r.data.tags.get("fsd.baseline"): {k: round(v, 4) for k, v in r.data.metrics.items()
                                          if k in ("oof_map3", "oof_accuracy")}
        | {"wall_s": round((r.info.end_time - r.info.start_time) / 1000, 1)}
        for r in by.get("baseline", []) if r.info.start_time / 1000 >= t0 - 1}
    ens = [r for r in by.get("ensemble", []) if r.info.start_time / 1000 >= t0 - 1]
    if ens:
        m = ens[-1].data.metrics
        report["ensemble_metrics"] = {k: round(v, 4) for k, v in m.items()
                                      if "/" not in k and ("map3" in k or "accuracy" in k
                                                           or k == "blend_weight")}
    truth = rehearsal_set.true_test_labels(data)
    clips = [(data / rehearsal_set.TEST_DIR / f, label)
             for f, label in sorted(truth.items())[: args.serve_clips]]
    # the ensemble run's own model: @champion stays off a blend below its best baseline
    model_uri = ens[-1].data.tags[TAG_MODEL_URI] if ens else \
        f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    served = serve_and_score(model_uri, Path(args.config).resolve(), env, clips)
    stages.append(served.pop("stage"))
    report.update(served)
    report["stages"] = stages
    # the whole rehearsal: fsd main, then the server's start and its requests
    report["rehearsal_wall_s"] = round(report["main_wall_s"] + stages[-1]["wall_s"], 1)
    if args.student:
        # this run's distill step, else (fsd main found it done) the newest finished one
        mine = [r for r in by.get("distill", []) if r.info.start_time / 1000 >= t0 - 1] or \
            sorted(by.get("distill", []), key=lambda r: r.info.start_time)
        report.update(student_report(mine, data, out, Path(args.config).resolve(), env, clips))
        stages.append(report.pop("student_stage"))
    return report


def growth(results: Path, out_png: Path | None) -> list[dict]:
    """Each stage's wall and CPU time against the clips, the newest run of each scale in
    ``results``; a log-log plot when ``out_png`` is given. Returns the table's rows."""
    runs: dict[float, dict] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if "stages" in r:
            runs[r["scale"]] = r  # the newest of each scale wins
    rows = []
    for scale in sorted(runs):
        r = runs[scale]
        for st in r["stages"]:
            if "wall_s" in st:
                rows.append({"scale": scale, "n_train": r["n_train"], "n_test": r["n_test"],
                             **{k: st[k] for k in ("name", "wall_s", "cpu_s", "peak_rss_mb")}})
    if out_png and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, title in ((axes[0], "wall_s", "wall time"), (axes[1], "cpu_s", "CPU time")):
            for name in dict.fromkeys(r["name"] for r in rows):
                pts = [(r["n_train"] + r["n_test"], r[key]) for r in rows if r["name"] == name]
                ax.plot(*zip(*pts), marker="o", label=name)
            xs = sorted({r["n_train"] + r["n_test"] for r in rows})
            ref = max(r[key] for r in rows if r["n_train"] + r["n_test"] == xs[0])
            ax.plot(xs, [ref * x / xs[0] for x in xs], "k:", label="linear in clips")
            ax.set(xscale="log", yscale="log", xlabel="clips (train + test)", ylabel="seconds",
                   title=f"full-size rehearsal: each stage's {title}")
            ax.grid(True, which="both", alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_png, dpi=110)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="share of the full size, in (0, 1]")
    ap.add_argument("--out", default="", help="folder for the data, store, runs and report")
    ap.add_argument("--seed", type=int, default=0, help="the synthetic set's seed")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra config override for fsd main (repeatable)")
    ap.add_argument("--workers", type=int, default=0, help="generator processes (0: all cores)")
    ap.add_argument("--serve-clips", type=int, default=100, help="test clips scored over HTTP")
    ap.add_argument("--student", action="store_true",
                    help="also run the distill step and score its student: out of fold, on "
                         "the test clips' Public/Private, served")
    ap.add_argument("--generate-only", action="store_true", help="only generate the data")
    ap.add_argument("--analyze", action="store_true",
                    help="do not run fsd main: report on OUT's last run (samples.json), serve")
    ap.add_argument("--fresh", action="store_true",
                    help="drop OUT's earlier runs and outputs first (the data is kept)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" /
                    "full_size.jsonl", help="a JSON line per run is appended here")
    ap.add_argument("--plot", type=Path, metavar="PNG",
                    help="no run: print each stage's time against its clips from --results "
                         "(newest run of each scale) and draw it into PNG")
    args = ap.parse_args(argv)
    if args.plot:
        for r in growth(args.results, args.plot):
            print(json.dumps(r))
        return 0
    if not 0 < args.scale <= 1:
        ap.error("--scale must be in (0, 1]")
    if not args.out:
        ap.error("--out is required (the folder for the data, runs and report)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = rehearse(args)
    report["date"] = time.strftime("%Y-%m-%d %H:%M")
    text = json.dumps(report, indent=1, default=str)
    (Path(args.out) / "report.json").write_text(text + "\n")
    print(text)
    if not args.generate_only:
        append_result(args.results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
