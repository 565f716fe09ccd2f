"""The comparison a pipeline is judged by: every model of one ``fsd main`` run on the same folds.

Rows, read back from the runs the pipeline logged: each summary-feature baseline (out of fold),
the CNN's stage 1 (log-mel only) and stage 2 (log-mel + PCA) as each fold's own validation
scored them (fixed lengths, centre crops, mean over folds), the CNN fold ensemble out of fold
with test-time augmentation, and the blend of that ensemble with a baseline twice: chosen on
the other folds (nested: the registered model's figure) and chosen on every fold (in sample:
optimistic, the choice saw the clips it is scored on). Accuracy and MAP@3 side by side, so a
CNN figure never stands without its baseline; a baseline at chance says so.
"""

from __future__ import annotations

import argparse
import ast
import logging
from typing import TYPE_CHECKING

from fsd import tracking
from fsd.config import Config, ConfigError

if TYPE_CHECKING:
    import pandas as pd

HELP = "compare the baselines, stage 1, stage 2, the ensemble and the blend of a pipeline run"
log = logging.getLogger(__name__)

COLUMNS = ["model", "accuracy", "map3", "scored", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default="",
                   help="a main run id (default: the newest finished main run of the experiment)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")


def run(cfg: Config, args: argparse.Namespace) -> int:
    run_id = args.run or _latest_main(cfg)
    table = results_table(run_id)
    print(to_markdown(table) if args.markdown else table.to_string(index=False))
    return 0


def _latest_main(cfg: Config) -> str:
    runs = tracking.find_runs(cfg, "main")
    if not runs:
        raise ConfigError(f"no finished main run in experiment {cfg.experiment_name!r}: run "
                          "`fsd main` first (or pass --run)")
    return runs[0].info.run_id


def _ids(value: str) -> list[str]:
    if not value:
        return []
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value.split(",")
    return [str(v).strip() for v in (parsed if isinstance(parsed, (list, tuple)) else [parsed])
            if str(v).strip()]


def _mean(runs: list, key: str) -> float:
    import numpy as np

    values = [r.data.metrics[key] for r in runs if key in r.data.metrics]
    return float(np.mean(values)) if values else float("nan")


def results_table(main_run_id: str) -> pd.DataFrame:
    """One row per model of the pipeline run ``main_run_id`` (see the module docstring)."""
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = client.get_run(main_run_id).data.tags
    rows: list[dict] = []
    for rid in _ids(tags.get(tracking.TAG_BASELINE_RUNS, "")):
        r = client.get_run(rid)
        chance = " - at chance" if r.data.tags.get(tracking.TAG_AT_CHANCE) == "true" else ""
        rows.append({"model": f"baseline {r.data.tags.get(tracking.TAG_BASELINE, '?')} "
                              f"(summary features{chance})",
                     "accuracy": r.data.metrics.get("oof_accuracy", np.nan),
                     "map3": r.data.metrics.get("oof_map3", np.nan),
                     "scored": "out of fold", "run": rid})
    folds = [client.get_run(rid) for rid in _ids(tags.get(tracking.TAG_FOLD_RUNS, ""))]
    if folds:
        n = len(folds)
        rows.append({"model": "CNN stage 1 (log-mel)",
                     "accuracy": _mean(folds, "best/stage1_val_accuracy"),
                     "map3": _mean(folds, "best/stage1_val_map3"),
                     "scored": f"fold validation, mean of {n}", "run": ""})
        stage2 = "best/stage2_val_accuracy" in folds[0].data.metrics
        rows.append({"model": "CNN stage 2 (log-mel + PCA)",
                     "accuracy": _mean(folds, "best/stage2_val_accuracy" if stage2
                                       else "val_accuracy"),
                     "map3": _mean(folds, "best/stage2_val_map3" if stage2 else "val_map3"),
                     "scored": f"fold validation, mean of {n}", "run": ""})
        kept = [r.data.params.get("fold.selected_stage") or r.data.tags.get(tracking.TAG_SELECTED_STAGE)
                for r in folds]
        if stage2 and any(k == "stage1" for k in kept):
            rows.append({"model": "CNN fold models (the better stage per fold)",
                         "accuracy": _mean(folds, "val_accuracy"),
                         "map3": _mean(folds, "val_map3"),
                         "scored": f"fold validation, mean of {n}", "run": ""})
    ens_id = tags.get(tracking.TAG_ENSEMBLE_RUN, "")
    if ens_id:
        ens = client.get_run(ens_id)
        m = ens.data.metrics
        rows.append({"model": "CNN fold ensemble (TTA)",
                     "accuracy": m.get("cnn_oof_accuracy", m.get("oof_accuracy", np.nan)),
                     "map3": m.get("cnn_oof_map3", m.get("oof_map3", np.nan)),
                     "scored": "out of fold", "run": ens_id})
        partner = ens.data.tags.get(tracking.TAG_BLEND_MODEL, "baseline")
        if "blend_insample_oof_map3" in m:
            rows.append({"model": "blend, each fold's weight and baseline chosen on the other "
                                  "folds (the registered model)",
                         "accuracy": m.get("oof_accuracy", np.nan),
                         "map3": m.get("oof_map3", np.nan),
                         "scored": "out of fold, nested", "run": ens_id})
            w = m.get("blend_weight", np.nan)
            rows.append({"model": f"blend: {w:.2f} x CNN ensemble + {1 - w:.2f} x {partner}, "
                                  "chosen on every fold (optimistic)",
                         "accuracy": m.get("blend_insample_oof_accuracy", np.nan),
                         "map3": m.get("blend_insample_oof_map3", np.nan),
                         "scored": "out of fold, in-sample choice", "run": ens_id})
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| model | accuracy | MAP@3 | scored |", "|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.model} | {r.accuracy:.3f} | {r.map3:.3f} | {r.scored} |")
    return "\n".join(lines)
