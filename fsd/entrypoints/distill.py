"""Distil the registered blend into one log-mel student network, score it honestly, register it.

The teacher is an ensemble run (``--ensemble-run``, else the newest finished one of this
config's experiment): its fold CNNs with TTA and its baseline, blended as it serves them.

- **Honest score** (``student_oof_map3``): for each fold ``k`` a student learns from fold
  ``k``'s own teacher only (the fold-``k`` CNN with TTA and the fold-``k`` baseline refitted on
  the other folds, at the weight the nested blend chose for fold ``k``; neither saw fold ``k``)
  on the other folds' clips, and is scored on fold ``k``. Logged beside the teacher's
  ``teacher_cnn_oof_map3`` (its ``cnn_oof_map3``) and ``teacher_oof_map3`` (its nested
  ``oof_map3``), on the same folds; per fold ``student/fold_<k>_map3``. Taken with the
  student's own TTA (``distill.tta_*``, what is served); ``student_oof_map3_teacher_tta`` scores
  the same students with the teacher's (``ensemble.tta_*``), for what more passes would buy.
- **The served student** learns from the whole ensemble on every clip: each clip's target is
  the served blend's out-of-fold prediction (the fold models that did not see it).

With ``distill.unlabeled: test`` the dataset's test split joins both as unlabeled clips (its
labels unread; nothing is scored on them): the served student's targets there are the whole
ensemble's (the ensemble run's ``test/test_probabilities.csv``), fold ``k``'s honest
student's are fold ``k``'s teacher's alone.

Targets are ``distill.hard_weight`` x the label + the rest x the teacher softened at
``distill.temperature``. The student is a bundle of one log-mel network whose config has the
summary features off, logged as this run's LoggedModel, registered as
``<ensemble.model_name>-student`` and moved to ``@<ensemble.alias>`` when its honest score
beats the holder's. It answers the ensemble's raw-audio requests, params and windowed tagging
through ``fsd serve``, ``mlflow models serve``, ``fsd predict`` and ``fsd export``, without
computing the summary features.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fsd import tracking
from fsd.config import Config
from fsd.entrypoints.flags import parse_flag

HELP = ("distil the ensemble into one log-mel student (honest out-of-fold score; registered as "
        "<model_name>-student)")
log = logging.getLogger(__name__)

STUDENT_SUFFIX = "-student"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble-run", default="",
                   help="the teacher's ensemble run id (default: the newest finished one)")
    p.add_argument("--register", nargs="?", const="true", default="true", type=parse_flag,
                   help="register the student as <ensemble.model_name>-student and move "
                        "ensemble.alias when it beats the holder (default: %(default)s)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    summary = distill_logged(cfg, args.ensemble_run or "", register=args.register)
    log.info("distill run %s: student out-of-fold MAP@3 %.4f (teacher %.4f, its CNN %.4f)%s",
             summary["run_id"], summary["student_oof_map3"],
             summary.get("teacher_oof_map3", float("nan")),
             summary.get("teacher_cnn_oof_map3", float("nan")),
             f"; {summary['promotion']['reason']}" if summary.get("promotion") else "")
    return 0


def student_model_name(model_name: str) -> str:
    return f"{model_name}{STUDENT_SUFFIX}"


def distill_logged(cfg: Config, ensemble_run: str = "", *, register: bool = True,
                   nested: bool = False) -> dict:
    """The distill stage in its own (optionally nested) run; returns a summary dict (run_id,
    student_oof_map3, teacher figures, model_uri, promotion)."""
    import dataclasses

    import mlflow

    from fsd.distill.stage import ensemble_teacher, fold_teachers, run_distill, served_teacher
    from fsd.serving.pyfunc import ensemble_of
    from fsd.tracking import datasets
    from fsd.tracking.artifacts import CNN_OOF_PROBS, load_oof_probabilities
    from fsd.tracking.lookups import ensemble_run as find_ensemble_run
    from fsd.train.experimentdir import ExperimentDir

    teacher_run = find_ensemble_run(cfg, ensemble_run)
    rid = teacher_run.info.run_id
    tags, metrics = teacher_run.data.tags, teacher_run.data.metrics
    teacher = ensemble_of(mlflow.pyfunc.load_model(tags[tracking.TAG_MODEL_URI]))
    # the teacher's features and training, this config's outputs, tracking and distill
    tcfg = dataclasses.replace(teacher.cfg, name=cfg.name, output_dir=cfg.output_dir,
                               store=cfg.store, tracking=cfg.tracking, distill=cfg.distill,
                               ensemble=cfg.ensemble)
    store, features_run = tracking.resolve_store(tcfg, tags.get(tracking.TAG_FEATURES_RUN, ""))
    work = ExperimentDir.of(cfg).distill(rid)
    downloads = work / "downloads"
    cnn_oof = load_oof_probabilities(rid, downloads / rid, CNN_OOF_PROBS)
    base_run = tags.get(tracking.TAG_BLEND_RUN, "") if teacher.blended else ""
    base_oof = load_oof_probabilities(base_run, downloads / base_run) if base_run else None
    choices = _nested_choices(rid, downloads / rid)
    pool, test_probs = _with_unlabeled(cfg, store, rid, downloads / rid)
    run_tags = {tracking.TAG_TEACHER_RUN: rid, tracking.TAG_FEATURES_RUN: features_run,
                tracking.TAG_TRAIN_KEY: tags.get(tracking.TAG_TRAIN_KEY, "")}
    with tracking.stage_run(tcfg, "distill", tags=run_tags, nested=nested) as active:
        clips = datasets.store_dataset(tcfg, store.index, tracking.feature_key(tcfg))
        datasets.log_dataset(clips, datasets.TRAINING)
        targets = fold_teachers(teacher, pool, choices)
        served = served_teacher(pool, cnn_oof, base_oof, teacher.info.blend_weight,
                                ensemble_teacher(teacher, pool, test_probs))
        out = work / active.info.run_id
        result = run_distill(tcfg, pool, teacher, targets, served, out)
        summary = {"run_id": active.info.run_id, "teacher_run": rid,
                   "student_oof_map3": result.oof.scores.overall,
                   "student_oof_accuracy": result.oof.scores.accuracy,
                   "student_params": result.params, "unlabeled_clips": result.unlabeled}
        if result.oof.at_teacher_tta is not None:
            summary["student_oof_map3_teacher_tta"] = result.oof.at_teacher_tta.overall
        for ours, theirs in (("teacher_oof_map3", "oof_map3"),
                             ("teacher_cnn_oof_map3", "cnn_oof_map3")):
            if theirs in metrics:
                summary[ours] = metrics[theirs]
        model_info = _log_student(cfg, tcfg, result, summary, clips)
        summary["model_uri"] = model_info.model_uri
        if register:
            summary["promotion"] = _register(cfg, summary, rid)
        tracking.describe(_description(tcfg, summary))
    return summary


def _with_unlabeled(cfg: Config, store, run_id: str, dst: Path):
    """(the store the students train on, the teacher's test probabilities or None): with
    ``distill.unlabeled: test``, the store with its test split's clips as unlabeled rows."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from fsd.config import ConfigError
    from fsd.distill.pool import StudentPool
    from fsd.tracking.artifacts import download_artifacts

    if cfg.distill.unlabeled == "none":
        return store, None
    if "test" not in getattr(store, "splits", []):
        raise ConfigError("distill.unlabeled=test: this dataset's feature store has no test "
                          "split; set distill.unlabeled=none")
    pool = StudentPool(store, store.open_split("test"))
    try:
        probs = pd.read_csv(download_artifacts(run_id, "test/test_probabilities.csv", dst),
                            keep_default_na=False)
    except (OSError, MlflowException):
        probs = None  # scored again from the features (fsd.distill.stage.ensemble_teacher)
    log.info("distill: %d unlabeled test clips join the students' training clips",
             len(pool.unlabeled_rows))
    return pool, probs


def _nested_choices(run_id: str, dst: Path):
    """The teacher's nested blend choices per fold (empty: it blends nothing)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from fsd.tracking.artifacts import download_artifacts

    try:
        return pd.read_csv(download_artifacts(run_id, "blend/nested_choices.csv", dst),
                           keep_default_na=False)
    except (OSError, MlflowException):
        return pd.DataFrame(columns=["fold", "baseline", "weight"])


def _log_student(cfg: Config, tcfg: Config, result, summary: dict, clips):
    import mlflow

    from fsd.serving.pyfunc import log_ensemble_model
    from fsd.tracking import models
    from fsd.tracking.artifacts import OOF_ARTIFACT, log_frame

    d = cfg.distill
    name = student_model_name(cfg.ensemble.model_name)
    mlflow.log_params({"student.params": result.params,
                       "student.tta_lengths": str(result.info.tta_lengths),
                       "student.tta_crops": int(result.info.tta_crops),
                       "student.unlabeled_clips": result.unlabeled,
                       "student.folds_scored": len(result.oof.scores.per_fold)})
    model = mlflow.initialize_logged_model(
        name=name, source_run_id=mlflow.active_run().info.run_id, model_type="pyfunc",
        params={"hard_weight": str(d.hard_weight), "temperature": str(d.temperature),
                "width": str(d.width), "teacher_run": summary["teacher_run"],
                "params": str(result.params), "backbone": tcfg.model.backbone},
        tags={tracking.TAG_NOTE: _model_note(tcfg, summary)})
    info = log_ensemble_model(result.bundle, result.info, name=name,
                              sample_rate=tcfg.audio.sample_rate, model_id=model.model_id)
    headline = {"student_oof_map3": result.oof.scores.overall,
                "student_oof_accuracy": result.oof.scores.accuracy}
    models.log_model_metrics(headline, model.model_id, clips)
    teacher = {k: summary[k] for k in ("teacher_oof_map3", "teacher_cnn_oof_map3")
               if k in summary}
    wide = result.oof.at_teacher_tta
    tracking.log_run_metrics({**teacher, **result.oof.scores.fold_metrics("student"),
                              **({"student_oof_map3_teacher_tta": wide.overall} if wide else {}),
                              "perf/distill_seconds": result.seconds})
    log_frame(result.oof.scores.frame, result.bundle.parent / "oof_student.csv", OOF_ARTIFACT)
    mlflow.set_tag(tracking.TAG_MODEL_URI, info.model_uri)
    return info


def _register(cfg: Config, summary: dict, teacher_run: str) -> dict:
    import mlflow

    from fsd.serving.registry import register_and_promote

    promo = register_and_promote(summary["model_uri"], student_model_name(cfg.ensemble.model_name),
                                 cfg.ensemble.alias, summary["student_oof_map3"],
                                 run_id=summary["run_id"])
    mlflow.log_dict(promo.as_dict(), "registry/promotion.json")
    mlflow.set_tags({tracking.TAG_REGISTERED_VERSION: promo.version,
                     tracking.TAG_ALIAS_MOVED: str(promo.moved).lower(),
                     tracking.TAG_ALIAS_REASON: promo.reason})
    return promo.as_dict()


def _scores(summary: dict) -> str:
    line = f"student out-of-fold MAP@3 **{summary['student_oof_map3']:.3f}**"
    if "student_oof_map3_teacher_tta" in summary:
        line += (f" ({summary['student_oof_map3_teacher_tta']:.3f} with the teacher's TTA, "
                 "more forward passes a clip)")
    if "teacher_oof_map3" in summary:
        line += (f"; its teacher on the same folds {summary['teacher_oof_map3']:.3f} (the blend, "
                 f"nested), the teacher's CNN alone {summary.get('teacher_cnn_oof_map3', 0):.3f}")
    return line


def _model_note(cfg: Config, summary: dict) -> str:
    return (f"**Student** of `{cfg.name}`: one log-mel network ({summary['student_params']:,} "
            "parameters, no summary features) distilled from the TTA ensemble blend. Raw audio "
            f"in (column `audio`), top-k labels out. {_scores(summary)}; each fold's student "
            "learned only from that fold's own teacher.")


def _description(cfg: Config, summary: dict) -> str:
    return "\n".join([
        f"**distill** `{cfg.name}` on {tracking.data_summary(cfg)}: a log-mel student from "
        f"{tracking.run_link(summary['teacher_run'], 'the ensemble')}.", "",
        f"- {_scores(summary)}",
        "- per fold: `student/fold_<k>_map3`; per clip: `oof/oof_student.csv`",
        f"- the served student ({summary['student_params']:,} parameters) learned every clip "
        "from the whole ensemble's out-of-fold predictions",
        *([f"- and {summary['unlabeled_clips']:,} unlabeled test clips (labels unread, nothing "
           "scored on them): the served student's targets the whole ensemble's, fold k's "
           "student's fold k's teacher's"] if summary.get("unlabeled_clips") else [])])
