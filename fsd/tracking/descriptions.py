"""Run descriptions: what the MLflow UI shows at the top of a run, in Markdown.

Every description ``fsd`` writes (runs, LoggedModels, the registered model and its versions)
passes :func:`markdown_safe`: the UI's Markdown turns a bare ``@word`` into a link to
github.com/word, so a mention such as ``@champion`` is code-formatted instead.
"""

from __future__ import annotations

import re
from typing import Any

from fsd.config import Config
from fsd.tracking.links import run_link
from fsd.tracking.tags import TAG_AT_CHANCE, TAG_BASELINE, TAG_FOLD, TAG_NOTE, TAG_PARENT

# main's metrics, and what each measures (its description says the same in words)
HEADLINE = {
    "oof_map3": "the registered model out of fold (its blend chosen on the other folds)",
    "oof_accuracy": "the same model's top-1 accuracy out of fold",
    "cnn_oof_map3": "the CNN fold ensemble alone (TTA), out of fold",
    "best_baseline_oof_map3": "the best summary-feature baseline, out of fold",
}


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
    import mlflow
    from mlflow.tracking import MlflowClient

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


def featurize_description(cfg: Config, result) -> str:
    """A featurize run's: the clips, classes, folds, rejects, audio time and crop limits."""
    st = result.stats
    hop = cfg.logmel.hop_length / cfg.logmel.sample_rate
    folds = result.store.index["fold"].nunique()
    lines = [f"**featurize** of `{cfg.name}`: {data_summary(cfg)}.", "",
             f"- **{st.get('n_clips', '?')} train clips** in {st.get('n_labels', '?')} classes, "
             f"{folds} folds; {st.get('n_rejected', 0)} rejected, {st.get('n_warnings', 0)} "
             f"warnings (`reports/rejects.csv`); {st.get('n_test', 0)} test clips",
             f"- {st.get('audio_seconds', 0) / 60:.1f} min of audio; crop limits "
             f"{st.get('crop_min')}-{st.get('crop_max')} frames "
             f"({st.get('crop_min', 0) * hop:.2f}-{st.get('crop_max', 0) * hop:.2f} s)"]
    if result.reused:
        lines.append(f"- features **reused** from `{result.store_dir}` (nothing recomputed)")
    elif st.get("audio_seconds_per_s"):
        lines.append(f"- {st['audio_seconds_per_s']:.1f} audio-s/s with {st.get('workers')} "
                     "workers")
    lines.append("- plots: `plots/`; the feature store: `features/`")
    return "\n".join(lines)


def ensemble_scores_line(summary: dict) -> str:
    """The headline in words, naming what each figure measures."""
    if summary.get("nested"):
        line = (f"out-of-fold MAP@3 **{summary['oof_map3']:.3f}**, accuracy "
                f"{summary['oof_accuracy']:.3f}: the CNN ensemble blended with a baseline, "
                "each fold's baseline and weight chosen on the other folds")
        line += (f"; the CNN ensemble alone {summary['cnn_oof_map3']:.3f}; the served blend "
                 f"({summary['blend_weight']:.2f} x CNN + {1 - summary['blend_weight']:.2f} x "
                 f"{summary.get('blend_baseline', 'baseline')}, chosen on every fold) scores "
                 f"{summary['blend_insample_oof_map3']:.3f} in sample (optimistic: the choice "
                 "saw those clips)")
        return line
    return (f"out-of-fold MAP@3 **{summary['oof_map3']:.3f}**, accuracy "
            f"{summary['oof_accuracy']:.3f}: the CNN fold ensemble alone, with TTA")


def ensemble_model_description(cfg: Config, summary: dict, runs: dict, dataset_name: str) -> str:
    """The ensemble LoggedModel's: what is served, how it is called, what it scores."""
    served = ("the CNN fold ensemble alone" if not summary.get("blended") else
              f"{summary['blend_weight']:.2f} x the CNN fold ensemble + "
              f"{1 - summary['blend_weight']:.2f} x baseline {summary.get('blend_baseline')}")
    return (f"**TTA ensemble** of `{cfg.name}`: {served}; {len(runs)} fold CNNs "
            f"({cfg.model.backbone}), test-time augmentation over {len(summary['tta_lengths'])} "
            f"lengths. Raw audio in (column `audio`, base64 bytes), top-k labels out. Scored on "
            f"dataset `{dataset_name}`: {ensemble_scores_line(summary)}.")


def ensemble_description(cfg: Config, summary: dict, runs: dict, lengths: list[int],
                         crops: int) -> str:
    """An ensemble run's: its folds, TTA, scores, per-fold figures and registration."""
    folds = ", ".join(run_link(r.info.run_id, f"fold {k}") for k, r in runs.items())
    lines = [f"**ensemble** of `{cfg.name}` on {data_summary(cfg)}: the {len(runs)} "
             f"fold models, test-time augmentation {len(lengths)} lengths x {crops} crops.",
             "", f"- {ensemble_scores_line(summary)}",
             "- per fold: `oof/per_fold.csv` (the CNN ensemble with TTA"
             + ("; the blend, each fold's choice made on the other folds: "
                "`blend/nested_choices.csv`" if summary.get("nested") else "")
             + "); the folds' own validation (no TTA): param `folds_mean.val_map3`; per "
             "class: `oof/oof_per_class.csv`", f"- folds: {folds}"]
    if summary.get("baseline_run"):
        lines.append(f"- blended baseline: {run_link(summary['baseline_run'], 'run')}")
    promo = summary.get("promotion")
    if promo:
        lines.append(f"- registered as `{promo['name']}` version {promo['version']}: "
                     f"{'took' if promo['moved'] else 'did not take'} the alias "
                     f"`{promo['alias']}` (decided on `oof_map3`: {promo['reason']})")
    for k in ("public_map3", "private_map3"):
        if k in summary:
            lines.append(f"- test {k.split('_')[0]} MAP@3 {summary[k]:.3f}")
    return "\n".join(lines)


def pipeline_description(cfg: Config, summary: dict, headline: dict[str, float]) -> str:
    """main's description: the headline and its steps in pipeline order, each a link."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def metric(rid: str, key: str) -> str:
        v = client.get_run(rid).data.metrics.get(key)
        return f"{key} {v:.3f}" if v is not None else ""

    lines = [f"**pipeline** `{cfg.name}` on {data_summary(cfg)}: featurize -> "
             f"{len(summary.get('fold_runs', []))} folds -> baselines -> ensemble.", ""]
    if "oof_map3" in headline:
        lines.append(f"**Out-of-fold MAP@3 {headline['oof_map3']:.3f}**, accuracy "
                     f"{headline.get('oof_accuracy', float('nan')):.3f}: the registered model, "
                     "its blend chosen on the other folds (the figure its alias moves on). "
                     "`results.md` compares every model on the same folds.")
        lines.append("")
        lines += [f"- `{k}` {headline[k]:.3f}: {what}" for k, what in HEADLINE.items()
                  if k in headline]
        lines.append("")
    lines.append("Steps, in order:")
    lines.append("")
    lines.append(f"1. {run_link(summary['features_run'], 'featurize')}")
    for rid in summary.get("fold_runs", []):
        fold = client.get_run(rid).data.tags.get(TAG_FOLD, "?")
        lines.append(f"1. {run_link(rid, f'fold {fold}')}: {metric(rid, 'val_map3')}")
    for rid in summary.get("baseline_runs", []):
        name = client.get_run(rid).data.tags.get(TAG_BASELINE, "baseline")
        chance = client.get_run(rid).data.tags.get(TAG_AT_CHANCE) == "true"
        lines.append(f"1. {run_link(rid, f'baseline {name}')}: "
                     f"{metric(rid, 'oof_map3')}{' (**at chance**)' if chance else ''}")
    if summary.get("ensemble_run"):
        lines.append(f"1. {run_link(summary['ensemble_run'], 'ensemble')}: "
                     f"{metric(summary['ensemble_run'], 'oof_map3')}")
    if summary.get("distill_run"):
        lines.append(f"1. {run_link(summary['distill_run'], 'student')}: "
                     f"{metric(summary['distill_run'], 'student_oof_map3')}")
    return "\n".join(lines)


def baseline_description(cfg: Config, name: str, what: str, oof_map3: float,
                         oof_accuracy: float, n_clips: int, n_folds: int, chance: str,
                         features_run: str, model_id: str, model_path: str) -> str:
    """A baseline run's: its score out of fold, whether it is at chance (``chance``: why, in
    words; empty when it is not), its features and its model."""
    lines = [
        f"**baseline {name}** ({what}) of `{cfg.name}` on the summary features of "
        f"{data_summary(cfg)}, on the CNN's folds.", "",
        f"- out of fold (no TTA): **MAP@3 {oof_map3:.3f}**, accuracy {oof_accuracy:.3f}, "
        f"{n_clips} clips in {n_folds} folds"]
    if chance:
        lines.append(f"- **at chance**: {chance}")
    lines.append(
        f"- features: {run_link(features_run, 'featurize run')}; the model "
        f"fitted on every clip: the run's logged model"
        f"{f' `{model_id}`' if model_id else ''} (scikit-learn), and "
        f"`{model_path}` (what the ensemble bundles)")
    return "\n".join(lines)


def baselines_description(runs: dict[str, str], scores: dict[str, float],
                          at_chance: set[str]) -> str:
    """The baselines' parent run's: each baseline run with its score, the best first."""
    lines = [f"- {run_link(rid, name)}: out-of-fold MAP@3 {scores[name]:.3f}"
             + (" (**at chance**)" if name in at_chance else "")
             if name in scores else f"- {run_link(rid, name)}"
             for name, rid in runs.items()]
    if scores:
        best = max(scores, key=scores.get)
        lines.insert(0, f"**baselines**: the best is **{best}**, out-of-fold MAP@3 "
                        f"{scores[best]:.3f}.\n")
    else:
        lines.insert(0, "**baselines**\n")
    return "\n".join(lines)


def trial_description(cfg: Config, study_name: str, number: int, params: dict[str, Any],
                      value: float | None, state: str) -> str:
    """A sweep trial's run: its result (or how it ended) and its params."""
    shown = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                      for k, v in params.items())
    result = (f"mean val MAP@3 of folds {list(cfg.sweep.folds)} **{value:.3f}**"
              if value is not None else state)
    return (f"**sweep trial {number}** of study `{study_name}` "
            f"(`{cfg.name}` on {data_summary(cfg)}): {result}, with {shown}.")


def sweep_description(cfg: Config, study_name: str, summary: dict[str, Any], best_run: str,
                      best_number: int, best_value: float, best_params: dict[str, Any],
                      best_config: str) -> str:
    """A sweep's parent run: the trials' counts and the best trial."""
    return (
        f"**sweep** study `{study_name}` of `{cfg.name}` on {data_summary(cfg)}: "
        f"{summary['n_trials']} trials ({summary['n_complete']} complete, "
        f"{summary['n_pruned']} pruned, {summary['n_failed']} failed).\n\n"
        f"- best: {run_link(best_run, f'trial {best_number}')}"
        f", mean val MAP@3 **{best_value:.3f}** with "
        + ", ".join(f"`{k}` = {v}" for k, v in best_params.items())
        + f"\n- its config: `{best_config}` (train it with `fsd main --config ...`)")
