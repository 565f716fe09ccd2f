"""Run descriptions: what the MLflow UI shows at the top of a run, in Markdown.

Every description ``fsd`` writes (runs, LoggedModels, the registered model and its versions)
passes :func:`markdown_safe`: the UI's Markdown turns a bare ``@word`` into a link to
github.com/word, so a mention such as ``@champion`` is code-formatted instead.
"""

from __future__ import annotations

import re
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from fsd.config import Config
from fsd.tracking.links import run_link
from fsd.tracking.tags import TAG_NOTE, TAG_PARENT


def data_summary(cfg: Config) -> str:
    """The data a config reads, in words."""
    d = cfg.data
    if d.source == "synthetic":
        return (f"the embedded sample (synthetic, {d.synthetic_clips_per_class} clips per class, "
                f"seed {d.synthetic_seed})")
    if d.source == "fsdkaggle2018":
        return f"FSDKaggle2018 (`{d.root}`)"
    return f"`{d.csv}` (audio in `{d.audio_dir}`)"


# a bare mention: @ after a start, space or opening bracket, then a name
_MENTION = re.compile(r"(?<![\w`@/.])@([A-Za-z0-9][\w.-]*[\w]|[A-Za-z0-9])")


def markdown_safe(text: str) -> str:
    """``text`` with every bare ``@word`` outside code spans code-formatted (`` `@word` ``),
    so MLflow's Markdown does not render it as a link to github.com/word."""
    parts = re.split(r"(`[^`]*`)", text)  # odd items are code spans: left as they are
    return "".join(p if i % 2 else _MENTION.sub(r"`@\1`", p) for i, p in enumerate(parts))


def describe(text: str, *, run_id: str | None = None) -> None:
    """Set a run's description (the active run's by default), closing with its parent.

    ``text`` is Markdown: the step, the data and the headline result; the line naming the
    parent run is added here."""
    client = MlflowClient()
    rid = run_id or mlflow.active_run().info.run_id
    parent = client.get_run(rid).data.tags.get(TAG_PARENT, "")
    if parent:
        try:
            pname = client.get_run(parent).data.tags.get("mlflow.runName", parent[:8])
        except Exception:
            pname = parent[:8]
        text = text.rstrip() + f"\n\nParent run: {run_link(parent, pname)}."
    client.set_tag(rid, TAG_NOTE, markdown_safe(text)[:5000])


def fold_description(cfg: Config, fold: int, result: dict[str, Any], features_run: str = "",
                     reused: str = "") -> str:
    """The description of a fold's run: step, data, headline result, reuse."""
    def f(key: str) -> str:
        v = result.get(key)
        return f"{v:.3f}" if isinstance(v, (int, float)) and v == v else "n/a"

    kept = result.get("selected_stage", "stage2")
    lines = [
        f"**train_fold {fold}** of `{cfg.name}` on {data_summary(cfg)}: trained on "
        f"{result.get('n_train', '?')} clips, validated on the {result.get('n_val', '?')} of "
        f"fold {fold}.",
        "",
        f"- kept model ({kept}): **val MAP@3 {f('val_map3')}**, accuracy {f('val_accuracy')} "
        "(fixed lengths, centre crops, no TTA)",
        f"- best epoch of stage 1: val MAP@3 {f('stage1_val_map3')}; of stage 2: "
        f"{f('stage2_val_map3')}",
        f"- {result.get('epochs', '?')} epochs ({result.get('epochs_stage1', '?')} + "
        f"{result.get('epochs_stage2', '?')}), per-epoch curves under `stage1/` and `stage2/` "
        "(step = epoch across both stages)",
    ]
    if features_run:
        lines.append(f"- features: {run_link(features_run, 'featurize run')}")
    if reused:
        lines += ["", reused]
    return "\n".join(lines)
