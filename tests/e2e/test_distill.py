"""`fsd distill` on the session's tiny trained ensemble (tests/conftest_ensemble.py): the honest
score beside the teacher's, the student registered and served from raw audio, and a request
path that neither computes nor imports what only the ensemble needs."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def distilled(trained_ensemble):
    from conftest_ensemble import tracking_at

    from fsd.entrypoints.distill import distill_logged

    cfg = copy.deepcopy(trained_ensemble.cfg)
    cfg.distill.schedule.cyclic_epochs = 1
    cfg.distill.width = 0.35
    with tracking_at(trained_ensemble.uri):
        return distill_logged(cfg, trained_ensemble.summary["run_id"], register=True)


@pytest.mark.slow
def test_distill_logs_the_honest_score_beside_the_teacher_and_registers(distilled,
                                                                         ensemble_tracking):
    import mlflow
    from conftest_ensemble import MODEL_NAME
    from mlflow.tracking import MlflowClient

    run = mlflow.get_run(distilled["run_id"])
    m, teacher = run.data.metrics, mlflow.get_run(ensemble_tracking.summary["run_id"]).data.metrics
    assert {"student_oof_map3", "student/fold_0_map3", "student/fold_1_map3"} <= set(m)
    assert m["teacher_cnn_oof_map3"] == pytest.approx(teacher["cnn_oof_map3"])
    assert m["teacher_oof_map3"] == pytest.approx(teacher["oof_map3"])
    assert 0.0 <= m["student_oof_map3"] <= 1.0
    # the student's own TTA (distill.tta_*: 1 x 1 by default), not the teacher's 2 x 2
    p = run.data.params
    assert p["student.tta_crops"] == "1" and len(json.loads(p["student.tta_lengths"])) == 1
    # the same students scored with the teacher's TTA too, beside (more passes a clip)
    assert 0.0 <= m["student_oof_map3_teacher_tta"] <= 1.0
    assert distilled["student_oof_map3_teacher_tta"] == pytest.approx(
        m["student_oof_map3_teacher_tta"], abs=1e-4)
    assert run.data.tags["fsd.teacher_run"] == ensemble_tracking.summary["run_id"]
    held = MlflowClient().get_model_version_by_alias(f"{MODEL_NAME}-student", "champion")
    assert held.run_id == distilled["run_id"]
    lm = mlflow.get_logged_model(distilled["model_uri"].split("/")[-1])
    assert lm.name == f"{MODEL_NAME}-student" and lm.tags["mlflow.note.content"].startswith(
        "**Student**")


@pytest.mark.slow
def test_the_student_serves_raw_audio_without_the_summary_features(distilled, ensemble_tracking):
    """In a fresh process: the registered student answers test clips from their bytes as its
    bundle predicts them from log-mels alone, and nothing of the summary features, the PCA
    or the baselines was imported on the way."""
    from conftest_ensemble import MODEL_NAME

    from fsd.entrypoints.featurize import resolve_store

    test = resolve_store(ensemble_tracking.cfg)[0].open_split("test").index
    names = test.loc[test["frames"] > 0, "fname"].astype(str).tolist()[:3]  # decodable clips
    clips = [Path(ensemble_tracking.cfg.data.root) / "FSDKaggle2018.audio_test" / n for n in names]
    code = f"""
import json, sys
import mlflow, numpy as np, pandas as pd
from fsd.features.extract import extract_clip
from fsd.serving.pyfunc import ensemble_of
model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}-student@champion")
blobs = [open(p, "rb").read() for p in {[str(c) for c in clips]!r}]
got = model.predict(pd.DataFrame({{"audio": blobs}}), params={{"return_probabilities": True}})
student = ensemble_of(model)
want = student.predict([extract_clip(b, student.cfg).logmel for b in blobs], None)
cols = [f"prob_{{c}}" for c in student.labels]
print(json.dumps({{"diff": float(np.abs(got[cols].to_numpy() - want).max()),
                  "summary_off": not student.cfg.summary.enabled,
                  "loaded": [m for m in ("fsd.features.summary", "fsd.features.projection",
                                         "fsd.baseline", "fsd.baseline.model")
                             if m in sys.modules]}}))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": ensemble_tracking.uri,
           "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["summary_off"] and seen["loaded"] == []
    assert seen["diff"] < 1e-4
    assert np.isfinite(seen["diff"])


@pytest.mark.slow
def test_unlabeled_test_clips_join_the_students_with_the_ensembles_targets(trained_ensemble,
                                                                           tmp_path):
    """distill.unlabeled=test: the test split's decodable clips train the students; the
    served student's targets there are the ensemble's own test probabilities (read from its
    run, the same as scoring them again), and nothing is scored on them."""
    import mlflow
    import pandas as pd
    from conftest_ensemble import tracking_at

    from fsd.distill.pool import StudentPool
    from fsd.distill.stage import ensemble_teacher
    from fsd.entrypoints.distill import distill_logged
    from fsd.entrypoints.featurize import resolve_store
    from fsd.serving.pyfunc import ensemble_of

    cfg = copy.deepcopy(trained_ensemble.cfg)
    cfg.distill.schedule.cyclic_epochs = 1
    cfg.distill.width = 0.35
    cfg.distill.unlabeled = "test"
    run_id = trained_ensemble.summary["run_id"]
    with tracking_at(trained_ensemble.uri):
        summary = distill_logged(cfg, run_id, register=False)
        run = mlflow.get_run(summary["run_id"])
        store = resolve_store(trained_ensemble.cfg)[0]
        pool = StudentPool(store, store.open_split("test"))
        teacher = ensemble_of(mlflow.pyfunc.load_model(trained_ensemble.model_uri))
        logged = pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="test/test_probabilities.csv", dst_path=str(tmp_path)))
        oof = pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=summary["run_id"], artifact_path="oof/oof_student.csv",
            dst_path=str(tmp_path)))
    test = store.open_split("test").index
    decodable = int((test["frames"] > 0).sum())
    assert 0 < decodable < len(test)  # the fixture's empty clip is left out
    assert run.data.params["student.unlabeled_clips"] == str(decodable)
    assert summary["unlabeled_clips"] == decodable
    assert "unlabeled test clips" in run.data.tags["mlflow.note.content"]
    # scored on the labelled folds only, as without them
    assert set(run.data.metrics) >= {"student/fold_0_map3", "student/fold_1_map3"}
    assert not set(oof["fname"]) & set(test["fname"])
    read = ensemble_teacher(teacher, pool, logged)
    scored = ensemble_teacher(teacher, pool, None)
    assert read.shape == (decodable, len(pool.labels))
    np.testing.assert_allclose(read, scored, atol=1e-4)
