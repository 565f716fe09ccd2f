"""Blend rules side by side on finished ensemble runs' out-of-fold predictions (no training).

For each ensemble run it reads what the run logged: the CNN fold ensemble's out-of-fold
probabilities (``oof/oof_cnn_probabilities.csv``; runs made before that artifact existed are
skipped with a note), the clips' folds (``oof/oof_cnn.csv``) and the out-of-fold probabilities
of the baselines the run could blend with (its training's finished baseline runs on the same
feature store). Then, on exactly those clips and folds, for each rule
(:func:`fsd.evaluation.blend.choose_rule`) and grid:

- ``nested``: the blend procedure scored honestly, each fold's (baseline, weight) chosen on the
  other folds (:func:`fsd.ensemble.stage.nested_blend`): what ``@champion`` is decided on;
- ``insample``: the choice made on every fold and scored on the same clips (optimistic);
- ``served``: what the served model would blend (baseline, weight);

beside the single models (the CNN alone, each baseline alone) on the same clips.

    MLFLOW_TRACKING_URI=sqlite:////tmp/x/mlflow.db .venv/bin/python benchmarks/blend_rule.py
    .venv/bin/python benchmarks/blend_rule.py --tracking-uri URI --experiment instruments
    .venv/bin/python benchmarks/blend_rule.py --tracking-uri URI --run ENSEMBLE_RUN_ID
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# (rule, steps): today's rule on today's grid first
RULES = (("best", 20), ("best", 4), ("shrink", 20), ("majority", 20), ("majority", 4))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tracking-uri", default="",
                   help="the store the runs are in (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default="",
                   help="take the newest finished ensemble run of this experiment (default: of "
                        "every experiment)")
    p.add_argument("--run", action="append", default=[], help="an ensemble run id (repeatable)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return p.parse_args(argv)


def ensemble_runs(client, experiment: str, ids: list[str]) -> list:
    if ids:
        return [client.get_run(r) for r in ids]
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    out = []
    for exp in exps:
        if exp is None:
            raise SystemExit(f"no experiment {experiment!r} in this store")
        runs = client.search_runs([exp.experiment_id],
                                  "tags.`fsd.stage` = 'ensemble' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        out += runs
    return out


def load_run(client, run, dst: Path):
    """The run's CNN out-of-fold predictions and its blend candidates, as the stage's types."""
    from fsd import tracking
    from fsd.config import load_config
    from fsd.ensemble.stage import BlendCandidate, OutOfFold, align_candidates
    from fsd.evaluation.oof import score_oof
    from fsd.tracking.artifacts import CNN_OOF_PROBS, download_artifacts, load_oof_probabilities
    from fsd.tracking.lookups import blend_candidates

    rid = run.info.run_id
    frame = load_oof_probabilities(rid, dst / rid, CNN_OOF_PROBS)
    folds_of = pd.read_csv(download_artifacts(rid, "oof/oof_cnn.csv", dst / rid),
                           dtype={"fname": str}, keep_default_na=False)
    labels = [str(c) for c in frame.columns[2:]]
    names = frame["fname"].astype(str).tolist()
    y = np.array([labels.index(v) for v in frame["label"].astype(str)])
    folds = folds_of.set_index("fname").loc[names, "fold"].to_numpy(np.int64)
    probs = frame[labels].to_numpy(np.float32)
    cnn = OutOfFold(names=names, labels=labels, y=y, folds=folds, probs=probs,
                    scores=score_oof(names, y, folds, probs, labels), seconds=0.0)
    cfg = load_config(download_artifacts(rid, "config.yaml", dst / rid / "config"))
    store_key = client.get_run(run.data.tags[tracking.TAG_FEATURES_RUN]).data.tags[
        tracking.TAG_STORE_KEY]
    cands = []
    for b in blend_candidates(cfg, store_key):
        bid = b.info.run_id
        cands.append(BlendCandidate(
            name=b.data.tags.get(tracking.TAG_BASELINE, "baseline"), run_id=bid,
            oof_map3=b.data.metrics["oof_map3"],
            probabilities=load_oof_probabilities(bid, dst / bid),
            fetch_model=lambda: Path("-")))  # scored offline: no model is bundled
    return cfg, cnn, align_candidates(cnn, cands)


def compare(cnn, usable) -> pd.DataFrame:
    """One row per single model and per (rule, grid): nested and in-sample MAP@3."""
    from fsd.ensemble.stage import choose_blend, nested_blend
    from fsd.evaluation.metrics import reciprocal_ranks

    def map3(p: np.ndarray) -> float:
        return float(reciprocal_ranks(cnn.y, p, 3).mean())

    rows = [{"model": "CNN alone", "nested": map3(cnn.probs), "insample": map3(cnn.probs),
             "served": "", "fold_choices": ""}]
    for a in usable:
        rows.append({"model": f"{a.cand.name} alone", "nested": map3(a.probs),
                     "insample": map3(a.probs), "served": "", "fold_choices": ""})
    for rule, steps in RULES:
        nested = nested_blend(cnn, usable, steps, rule)
        chosen = choose_blend(cnn, usable, steps, rule)
        picks = " ".join(f"{r.baseline}@{r.weight:g}" if r.weight < 1 else "cnn"
                         for r in nested.choices.itertuples())
        rows.append({"model": f"rule {rule}, {steps + 1} weights", "nested": map3(nested.probs),
                     "insample": chosen.oof_map3,
                     "served": f"{chosen.name}@{chosen.weight:g}" if chosen.weight < 1 else "cnn",
                     "fold_choices": picks})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = ensemble_runs(client, args.experiment, args.run)
    if not runs:
        raise SystemExit("no finished ensemble run found")
    with tempfile.TemporaryDirectory(prefix="blend-rule-") as tmp:
        for run in runs:
            try:
                cfg, cnn, usable = load_run(client, run, Path(tmp))
            except (MlflowException, OSError, KeyError) as exc:
                print(f"run {run.info.run_id}: skipped ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]})")
                continue
            table = compare(cnn, usable)
            print(f"\n{cfg.name}: ensemble run {run.info.run_id}, {len(cnn.y)} clips, "
                  f"{len(set(cnn.folds.tolist()))} folds, {len(usable)} baselines; MAP@3 out "
                  "of fold on the same clips and folds")
            if args.markdown:
                print(table.to_markdown(index=False, floatfmt=".3f"))
            else:
                print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
