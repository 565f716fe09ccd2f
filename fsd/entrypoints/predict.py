"""Run a registered ensemble on local audio files and print the top labels per file.

The model is any MLflow model URI: ``models:/<name>@<alias>`` (default: the config's
ensemble.model_name @ ensemble.alias), ``models:/<name>/<version>`` or
``runs:/<run>/<ensemble.model_name>-tta-ensemble``.
The files are read here and sent as bytes, as a client of the served model would send them;
a file the model refuses is reported with the reason and the others are still predicted.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fsd.config import Config
from fsd.entrypoints.flags import optional_int

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

HELP = "top labels for local audio files from a registered ensemble (models:/name@alias)"


def NEEDS_CONFIG(args: argparse.Namespace) -> bool:  # noqa: N802 (the CLI's name for it)
    """An export carries its own config: `--exported` runs anywhere, without experiments/."""
    return not args.exported


def NEEDS_TENSORFLOW(args: argparse.Namespace) -> bool:  # noqa: N802 (the CLI's name for it)
    """An export runs on onnxruntime: `--exported` must work where TensorFlow is absent."""
    return not args.exported
# Files per predict call: well under ensemble.max_request_clips, and a bad file costs a retry
# of only its own chunk.
CHUNK = 16
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, ...)")
    p.add_argument("--model", default="",
                   help="model URI (default: models:/<ensemble.model_name>@<ensemble.alias>)")
    p.add_argument("--top-k", type=optional_int, default=None,
                   help="labels per file (default: ensemble.top_k)")
    p.add_argument("--output", default="", help="also write the table to this CSV")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="tag long recordings window by window: one row per window of this "
                        "many seconds, and a whole-file summary (labels found, total time)")
    p.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="seconds between window starts (default: the window: no overlap)")
    p.add_argument("--plot", default="", metavar="PNG",
                   help="with --window: draw each file's timeline (labels over time, score as "
                        "intensity) to this PNG (FILE_<n> suffixes for several files)")
    p.add_argument("--exported", default="", metavar="DIR",
                   help="run an `fsd export --format onnx` folder with onnxruntime instead of "
                        "an MLflow model (no TensorFlow needed)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    if args.window is not None or args.hop is not None or args.plot:
        return run_windows(cfg, args)
    if args.exported:
        return run_exported(args)
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    # MLflow 3's default store (sqlite:///mlflow.db in the working directory) or
    # MLFLOW_TRACKING_URI: the same store the ensemble step registered into
    uri = args.model or f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    top_k = args.top_k or cfg.ensemble.top_k
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        log.error("cannot load model %s: %s", uri, exc.message)
        return 2
    rows = predict_files(model, args.files, top_k)
    failed = sum("error" in r for r in rows)
    table = format_table(rows, top_k)
    print(table)
    if args.output:
        pd.DataFrame(rows).to_csv(args.output, index=False)
    return 1 if failed else 0


def predict_files(model, files: Sequence[str | Path], top_k: int) -> list[dict]:
    """One row per file through a loaded pyfunc, raw audio in as a request carries it: fname,
    label_1, score_1, ... or ``error`` (why the file was refused or unreadable). Files are
    read and scored CHUNK at a time, so memory stays bounded by a chunk, not the file list."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    rows: list[dict] = []
    for start in range(0, len(files), CHUNK):
        chunk: list[tuple[int, bytes]] = []
        for f in files[start:start + CHUNK]:
            rows.append({"fname": Path(f).name})
            try:
                chunk.append((len(rows) - 1, Path(f).read_bytes()))
            except OSError as exc:
                rows[-1]["error"] = exc.strerror or str(exc)
        frame = _predict(model, [b for _, b in chunk], top_k) if chunk else None
        if frame is not None:
            for (i, _), rec in zip(chunk, frame.to_dict("records")):
                rows[i].update(rec)
            continue
        for i, blob in chunk:  # one bad file fails its batch: retry one by one to say which
            try:
                out = model.predict(pd.DataFrame({"audio": [blob]}), params={"top_k": top_k})
                rows[i].update(out.to_dict("records")[0])
            except MlflowException as exc:
                rows[i]["error"] = _reason(exc.message)
    return rows


def _predict(model, blobs: list[bytes], top_k: int) -> pd.DataFrame | None:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(pd.DataFrame({"audio": blobs}), params={"top_k": top_k})
    except MlflowException:
        return None


def _reason(message: str) -> str:
    # the pyfunc names the row ("row 0: ..."); one file per call, so the row adds nothing
    return message.split(": ", 1)[1] if message.startswith("row ") else message


def format_table(rows: list[dict], top_k: int) -> str:
    """A fixed-width table: fname, then label/score pairs, or ``ERROR: reason`` for a file the
    model refused."""
    header = ["fname"] + [h for j in range(1, top_k + 1) for h in (f"label_{j}", f"score_{j}")]
    table: list[tuple[bool, list[str]]] = []
    for r in rows:
        if r.get("error"):
            table.append((True, [str(r["fname"]), f"ERROR: {r['error']}"]))
            continue
        cells = [str(r["fname"])]
        for j in range(1, top_k + 1):
            cells += [str(r.get(f"label_{j}", "")), f"{float(r.get(f'score_{j}', float('nan'))):.3f}"]
        table.append((False, cells))
    widths = [len(h) for h in header]
    for is_error, cells in table:
        for i, c in enumerate(cells[:1] if is_error else cells):
            widths[i] = max(widths[i], len(c))
    lines = [header] + [cells for _, cells in table]
    errors = [False] + [e for e, _ in table]
    return "\n".join(
        (cells[0].ljust(widths[0]) + "  " + cells[1]) if err else
        "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        for err, cells in zip(errors, lines))


def run_windows(cfg: Config, args: argparse.Namespace) -> int:
    """``--window``: each file tagged window by window, decoded once, under the served
    request's bounds (:class:`fsd.inference.windows.WindowScorer`), with a progress bar."""
    import math

    import pandas as pd

    from fsd.data.audio import AudioError
    from fsd.inference.windows import WindowLimit, check_window

    if args.window is None:
        log.error("--hop and --plot need --window SECONDS")
        return 2
    hop = args.window if args.hop is None else args.hop
    try:
        check_window(args.window, hop, math.inf)  # before the model loads: nan, inf, 0, < 0
    except WindowLimit as exc:
        log.error("%s", exc)
        return 2
    scorer = _window_scorer(cfg, args)
    if scorer is None:
        return 2
    try:  # the model's own bound on the window
        check_window(args.window, hop, float(scorer.ensemble.cfg.ensemble.max_recording_seconds))
    except WindowLimit as exc:
        log.error("%s", exc)
        return 2
    tables, failed = [], 0
    for n, f in enumerate(args.files):
        try:
            table, summary, probs, wf = scorer(f, args.window, hop, args.top_k, progress=True)
        except (AudioError, OSError, WindowLimit) as exc:
            print(f"{f}: ERROR: {exc}")
            failed += 1
            continue
        from fsd.inference.windows import format_summary

        print(f"== {f}: {len(table)} windows of {args.window:g} s every {hop:g} s")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(format_summary(summary, wf.seconds))
        if args.plot:
            from fsd.inference.timeline import plot_timeline

            plot = Path(args.plot)
            if len(args.files) > 1:
                plot = plot.with_name(f"{plot.stem}_{n}{plot.suffix or '.png'}")
            plot_timeline(wf.starts, wf.ends, probs, scorer.labels, wf.seconds, plot,
                          title=Path(f).name)
            print(f"timeline: {plot}")
        tables.append(table.assign(file=Path(f).name))
    if args.output and tables:
        out = pd.concat(tables, ignore_index=True)
        out[["file"] + [c for c in out.columns if c != "file"]].to_csv(args.output, index=False)
    return 1 if failed else 0


def _window_scorer(cfg: Config, args: argparse.Namespace):
    if args.exported:
        model = _load_exported(args.exported)
        return None if model is None else model.window_scorer()
    import mlflow
    from mlflow.exceptions import MlflowException

    from fsd.inference.windows import WindowScorer
    from fsd.serving.pyfunc import ensemble_of

    uri = args.model or f"models:/{cfg.ensemble.model_name}@{cfg.ensemble.alias}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        log.error("cannot load model %s: %s", uri, exc.message)
        return None
    return WindowScorer(ensemble_of(model))


def run_exported(args: argparse.Namespace) -> int:
    """``--exported DIR``: the export run with onnxruntime and numpy/librosa only."""
    import pandas as pd

    model = _load_exported(args.exported)
    if model is None:
        return 2
    top_k = args.top_k or model.top_k
    rows = model.predict_files(args.files, top_k)
    print(format_table(rows, top_k))
    if args.output:
        pd.DataFrame(rows).to_csv(args.output, index=False)
    return 1 if any("error" in r for r in rows) else 0


def _load_exported(folder: str):
    """The verified export, or None once its one-line reason is logged."""
    from fsd.export.manifest import ExportInvalid
    from fsd.export.predictor import ExportedModel

    try:
        return ExportedModel.load(folder)
    except ExportInvalid as exc:
        log.error("%s", exc)
        return None
