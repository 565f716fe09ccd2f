"""Screenshots of the MLflow UI on a finished demo, to check by eye what a user sees.

Not part of CI. Needs Debian's Chromium (``apt-get install chromium``) and a finished
``make demo`` (or ``fsd main``) in the tracking store. Starts the UI as ``make ui`` does
(``fsd ui``: MLflow's app, the model-training view the browser's default; ``--server mlflow``
starts plain ``mlflow ui`` instead, to compare) on a free port, opens each page in headless
Chromium (a fresh profile: nothing stored) and saves a PNG per page:

    experiment_entry.png  the experiment as Home -> its name opens it (no workflowType in
                          the link): must land on the runs table, not the GenAI overview
    run_entry.png         the main run as the runs table links it (no workflowType): the
                          model-training sidebar, not the GenAI one
    models_tab.png        the experiment's Models tab: the fold CNNs, baselines and ensemble
    runs_table.png        the experiment's runs in the model-training view
    main_run.png          the main run: description (steps in order), headline metrics
    fold_overview.png     a fold's run: description, metrics, params
    fold_metrics.png      a fold's per-epoch charts (Model metrics tab)
    fold_system.png       its CPU/memory charts (System metrics tab)
    ensemble_run.png      the ensemble's run
    registered_model.png  the registered model and its versions
    model_version.png     the newest version: its description

    .venv/bin/python docs/ui/screenshots.py --tracking-uri sqlite:///mlflow.db --out /tmp/ui
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mlflow ui did not answer {url} within {timeout:.0f} s")


def shoot(chromium: str, url: str, path: Path, width: int, height: int, wait_ms: int) -> None:
    cmd = ["nice", "-n", "19", chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
           "--hide-scrollbars", "--disable-dev-shm-usage", f"--window-size={width},{height}",
           f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode or not path.exists():
        raise SystemExit(f"chromium failed on {url}: {out.stderr[-2000:]}")
    print(f"{path}  <- {url}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                            "sqlite:///mlflow.db"))
    p.add_argument("--experiment", default="demo")
    p.add_argument("--out", default="docs/ui")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--start-timeout", type=float, default=600.0,
                   help="seconds to wait for mlflow ui to answer (slow on a busy machine)")
    p.add_argument("--wait-ms", type=int, default=15000,
                   help="virtual time Chromium gives each page to load and render")
    p.add_argument("--server", choices=("fsd", "mlflow"), default="fsd",
                   help="fsd: `fsd ui` (what `make ui` starts); mlflow: plain `mlflow ui`")
    args = p.parse_args()

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}: run make demo")
    eid = exp.experiment_id
    runs = client.search_runs([eid], order_by=["attributes.start_time DESC"])
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.data.tags.get("fsd.stage", ""), []).append(r)
    if "main" not in by_stage:
        raise SystemExit(f"no main run in {args.experiment!r}: run make demo")
    main_run = by_stage["main"][0]
    folds = sorted(by_stage.get("train_fold", []), key=lambda r: r.data.tags.get("fsd.fold", ""))
    ensemble = by_stage.get("ensemble", [None])[0]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = ["fsd", "ui"] if args.server == "fsd" else ["mlflow", "ui"]
    server = subprocess.Popen(
        ["nice", "-n", "19", sys.executable, "-m", *ui, "--backend-store-uri",
         args.tracking_uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"{base}/health", args.start_timeout)
        ml = "?workflowType=machine_learning"  # MLflow 3 opens run pages in the GenAI view else
        # entered as a user does: from Home (the experiment's link) and from the runs table
        # (a run's link); neither carries workflowType
        pages = [("experiment_entry", f"#/experiments/{eid}"),
                 ("run_entry", f"#/experiments/{eid}/runs/{main_run.info.run_id}"),
                 ("models_tab", f"#/experiments/{eid}/models"),
                 ("runs_table", f"#/experiments/{eid}/runs{ml}"),
                 ("main_run", f"#/experiments/{eid}/runs/{main_run.info.run_id}{ml}")]
        if folds:
            fold = folds[0].info.run_id
            pages += [("fold_overview", f"#/experiments/{eid}/runs/{fold}{ml}"),
                      ("fold_metrics", f"#/experiments/{eid}/runs/{fold}/model-metrics{ml}"),
                      ("fold_system", f"#/experiments/{eid}/runs/{fold}/system-metrics{ml}")]
        if ensemble is not None:
            pages.append(("ensemble_run", f"#/experiments/{eid}/runs/{ensemble.info.run_id}{ml}"))
            name = ensemble.data.tags.get("fsd.registered_version") and \
                client.search_model_versions(f"run_id = '{ensemble.info.run_id}'")
            if name:
                mv = name[0]
                pages += [("registered_model", f"#/models/{mv.name}"),
                          ("model_version", f"#/models/{mv.name}/versions/{mv.version}")]
        for stem, frag in pages:
            shoot(args.chromium, f"{base}/{frag}", out / f"{stem}.png", args.width, args.height,
                  args.wait_ms)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
