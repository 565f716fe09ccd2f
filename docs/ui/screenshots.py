"""Screenshots of the MLflow UI on a finished demo, to check by eye what a user sees.

Not part of CI. Needs Debian's Chromium (``apt-get install chromium``) and a finished
``make demo`` (or ``fsd main``) in the tracking store. Starts the UI as ``make ui`` does
(``fsd ui``; ``--server mlflow`` starts plain ``mlflow ui`` instead, to compare) on a free
port, drives one headless Chromium over the DevTools protocol (a fresh profile: nothing stored
before the first page, then kept from page to page as a user's browser keeps it), and saves a
PNG per page. The first two pages are entered as a new user enters, without
``workflowType`` in the link:

    experiment_entry.png  Home -> the experiment (the first screen): the runs table, the
                          pipeline's steps and its headline columns, no Assistant panel
    run_entry.png         the main run as the runs table links it: the model-training sidebar
    first_screen.png      the runs link ``fsd main`` prints
    runs_sorted.png       the runs table after a click on the ``val_map3`` column's header
    models_tab.png        the Models tab: fold CNNs, baselines and ensemble
    models_sorted.png     the Models tab after a click on the ``val_map3`` column's header
                          (scrolled to it; MLflow 3.17 does not sort this tab by a metric)
    models_sort_menu.png  after a click on its "Sort" button: 3.17 offers creation time only
    models_charts.png     the Models tab's chart view: one chart per figure, every model
    main_run.png          the main run: description (steps in order), headline metrics
    fold_overview.png     a fold's run: description, metrics, params
    fold_metrics.png      a fold's metrics tab (its per-epoch curves first)
    fold_system.png       its CPU/memory charts (System metrics tab)
    ensemble_run.png      the ensemble's run
    ensemble_metrics.png  the ensemble's metrics tab
    registered_model.png  the registered model and its versions
    model_version.png     the newest version: its description

It also prints, per run, how many metrics (one chart each on its metrics tab) it holds, and
what the UI stored in the browser (``--dump-storage``).

    .venv/bin/python docs/ui/screenshots.py --tracking-uri sqlite:///mlflow.db --out /tmp/ui
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


# A header cell of the runs table or the Models tab (ag-grid) whose label is exactly `text`;
# the centre of its label, where a user clicks to sort.
_FIND_HEADER = """(() => {
  const want = %s;
  for (const el of document.querySelectorAll('.ag-header-cell')) {
    const label = el.querySelector('.ag-header-cell-text, [role="columnheader"] span') || el;
    if ((label.innerText || '').trim() === want) {
      el.scrollIntoView({block: 'nearest', inline: 'center'});
      const r = label.getBoundingClientRect();
      return JSON.stringify({x: r.x + r.width / 2, y: r.y + r.height / 2});
    }
  }
  return '';
})()"""


# A button whose text starts with `text` (e.g. the Models tab's "Sort: Created" menu).
_FIND_BUTTON = """(() => {
  for (const el of document.querySelectorAll('button')) {
    if ((el.innerText || '').trim().startsWith(%s)) {
      const r = el.getBoundingClientRect();
      return JSON.stringify({x: r.x + r.width / 2, y: r.y + r.height / 2});
    }
  }
  return '';
})()"""


class Browser:
    """One headless Chromium page driven over the DevTools protocol (aiohttp's websocket)."""

    def __init__(self, chromium: str, width: int, height: int):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="fsd-ui-shots-")
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--hide-scrollbars", "--disable-dev-shm-usage", "--no-first-run",
             f"--remote-debugging-port={self.port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.width, self.height = width, height
        self._id = 0

    async def connect(self) -> None:
        import aiohttp

        wait_for(f"http://127.0.0.1:{self.port}/json/version", 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=self.height, deviceScaleFactor=1, mobile=False)

    async def call(self, method: str, **params):
        self._id += 1
        mid = self._id
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=300)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def evaluate(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                              awaitPromise=True)
        return res.get("result", {}).get("value")

    async def goto(self, url: str, settle_s: float) -> None:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(settle_s)  # the UI fetches and renders after the load event

    async def click_header(self, text: str, settle_s: float) -> bool:
        """Click the table header labelled ``text``, or (``text`` ending in ``...``) the button
        whose text starts with it; False when there is none (the grid renders only the columns
        in view: make the page wide enough, see ``wide``)."""
        if text.endswith("..."):
            found = await self.evaluate(_FIND_BUTTON % json.dumps(text[:-3]))
        else:
            found = await self.evaluate(_FIND_HEADER % json.dumps(text))
        if not found:
            return False
        pos = json.loads(found)
        await asyncio.sleep(1)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=pos["x"], y=pos["y"],
                            button="left", clickCount=1)
        await asyncio.sleep(settle_s)
        return True

    async def shoot(self, path: Path) -> None:
        res = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(res["data"]))

    async def close(self) -> None:
        try:
            await self.ws.close()
            await self.session.close()
        finally:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
            shutil.rmtree(self.profile, ignore_errors=True)


def count_metrics(client: MlflowClient, runs: list) -> None:
    """Per run: the metrics its metrics tab charts, and the system metrics' samples."""
    print("metrics per run (one chart each on the run's metrics tab):")
    for r in runs:
        keys = [k for k in r.data.metrics if not k.startswith("system/")]
        system = [k for k in r.data.metrics if k.startswith("system/")]
        curves = sum(len(client.get_metric_history(r.info.run_id, k)) > 1 for k in keys)
        samples = len(client.get_metric_history(r.info.run_id, system[0])) if system else 0
        print(f"  {r.data.tags.get('mlflow.runName', r.info.run_id):18s} {len(keys):3d} metrics "
              f"({curves} curves, {len(keys) - curves} single values); system metrics: "
              f"{len(system)} x {samples} samples")


async def shoot_all(args, base: str, eid: str, runs: dict, out: Path, model_version) -> None:
    ml = "?workflowType=machine_learning"  # what the printed links carry
    exp = f"{base}/#/experiments/{eid}"
    browser = Browser(args.chromium, args.width, args.height)
    # The Models tab lists every attribute before the metrics: its own browser, wide enough to
    # show the metric columns (ag-grid renders only the columns in view, and misdraws its
    # header when the page is resized under it)
    wide = Browser(args.chromium, args.wide_width, args.height)
    try:
        await browser.connect()
        await wide.connect()

        async def page(stem: str, url: str, click: str = "", on: Browser = browser) -> None:
            await on.goto(url, args.settle)
            if on is wide:  # drawn again from a full load: the grid's header then lines up
                await on.call("Page.reload")
                await asyncio.sleep(args.settle)
            if click and not await on.click_header(click, args.settle):
                print(f"  (no column header {click!r} on {stem})")
            await on.shoot(out / f"{stem}.png")
            print(f"{out / f'{stem}.png'}  <- {url}{f' + click {click!r}' if click else ''}")

        main_run = runs["main"]
        # entered as a user does, with no workflowType and nothing stored yet
        await page("experiment_entry", exp)
        await page("run_entry", f"{exp}/runs/{main_run.info.run_id}")
        await page("first_screen", f"{exp}/runs{ml}")
        await page("runs_sorted", f"{exp}/runs{ml}", click="val_map3")
        await page("models_tab", f"{exp}/models{ml}", on=wide)
        await page("models_sorted", f"{exp}/models{ml}", click="val_map3", on=wide)
        await page("models_sort_menu", f"{exp}/models{ml}", click="Sort:...", on=wide)
        await page("models_charts", f"{exp}/models{ml}&viewMode=CHART")
        await page("main_run", f"{exp}/runs/{main_run.info.run_id}{ml}")
        if "fold" in runs:
            fold = runs["fold"].info.run_id
            await page("fold_overview", f"{exp}/runs/{fold}{ml}")
            await page("fold_metrics", f"{exp}/runs/{fold}/model-metrics{ml}")
            await page("fold_system", f"{exp}/runs/{fold}/system-metrics{ml}")
        if "ensemble" in runs:
            ens = runs["ensemble"].info.run_id
            await page("ensemble_run", f"{exp}/runs/{ens}{ml}")
            await page("ensemble_metrics", f"{exp}/runs/{ens}/model-metrics{ml}")
        if model_version is not None:
            mv = model_version
            await page("registered_model", f"{base}/#/models/{mv.name}")
            await page("model_version", f"{base}/#/models/{mv.name}/versions/{mv.version}")
        if args.dump_storage:
            stored = await browser.evaluate("JSON.stringify(Object.assign({}, localStorage))")
            (out / "local_storage.json").write_text(json.dumps(json.loads(stored), indent=1))
            print(f"{out / 'local_storage.json'}  <- what the UI stored in the browser")
    finally:
        await browser.close()
        await wide.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                            "sqlite:///mlflow.db"))
    p.add_argument("--experiment", default="demo")
    p.add_argument("--out", default="docs/ui")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--wide-width", type=int, default=2200,
                   help="page width for the Models tab (its metric columns come last)")
    p.add_argument("--start-timeout", type=float, default=600.0,
                   help="seconds to wait for the UI server to answer (slow on a busy machine)")
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds each page (and each click) gets to load and render")
    p.add_argument("--server", choices=("fsd", "mlflow"), default="fsd",
                   help="fsd: `fsd ui` (what `make ui` starts); mlflow: plain `mlflow ui`")
    p.add_argument("--dump-storage", action="store_true",
                   help="also save the browser's localStorage after the last page")
    args = p.parse_args()

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}: run make demo")
    eid = exp.experiment_id
    all_runs = client.search_runs([eid], order_by=["attributes.start_time DESC"])
    by_stage: dict[str, list] = {}
    for r in all_runs:
        by_stage.setdefault(r.data.tags.get("fsd.stage", ""), []).append(r)
    if "main" not in by_stage:
        raise SystemExit(f"no main run in {args.experiment!r}: run make demo")
    main_run = by_stage["main"][0]
    steps = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == main_run.info.run_id]
    count_metrics(client, [main_run, *reversed(steps)])
    runs = {"main": main_run}
    folds = sorted(by_stage.get("train_fold", []), key=lambda r: r.data.tags.get("fsd.fold", ""))
    if folds:
        runs["fold"] = folds[0]
    model_version = None
    if by_stage.get("ensemble"):
        runs["ensemble"] = ens = by_stage["ensemble"][0]
        if ens.data.tags.get("fsd.registered_version"):
            versions = client.search_model_versions(f"run_id = '{ens.info.run_id}'")
            model_version = versions[0] if versions else None

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
        asyncio.run(shoot_all(args, base, eid, runs, out, model_version))
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
