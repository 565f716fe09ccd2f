"""`fsd export` of the session's registered ensemble: an ONNX export of a blended ensemble gives the
registered model's answers without TensorFlow; SavedModel and LiteRT exports agree with Keras."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsd.baseline.model import BaselineModel

pytestmark = pytest.mark.e2e


REPO = Path(__file__).resolve().parents[2]


BLOCK_TF = '''import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorboard"):
            raise ImportError(f"{name} is not importable in this test")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
'''


@pytest.fixture(scope="module")
def blended_model(trained_ensemble, tmp_path_factory):
    """The session's registered ensemble with a vote baseline attached (weight 0.4), logged
    and registered as a new version: a blended model as `fsd main` registers one."""
    import mlflow
    from conftest_ensemble import MODEL_NAME, tracking_at

    from fsd.ensemble.bundle import attach_baseline
    from fsd.entrypoints.featurize import resolve_store
    from fsd.serving.pyfunc import ensemble_of, log_ensemble_model

    tmp = tmp_path_factory.mktemp("blended")
    cfg = copy.deepcopy(trained_ensemble.cfg)
    cfg.baseline.extratrees_n_estimators = 30
    with tracking_at(trained_ensemble.uri):
        model = mlflow.pyfunc.load_model(trained_ensemble.model_uri)
        src = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"{trained_ensemble.model_uri}", dst_path=str(tmp / "dl")))
        bundle = next(src.rglob("ensemble.json")).parent
        store, _ = resolve_store(cfg)
        rows = np.flatnonzero(store.index["frames"].to_numpy() > 0)
        base = BaselineModel.fit_new("vote", cfg.baseline, np.asarray(store.summary)[rows],
                                     store.index["label_id"].to_numpy()[rows],
                                     len(ensemble_of(model).labels))
        attach_baseline(bundle, base.save(tmp / "vote.joblib"), 0.4, name="vote")
        from fsd.ensemble.bundle import Ensemble

        info = Ensemble.load(bundle).info
        with mlflow.start_run(run_name="blended-for-export") as run:
            logged = log_ensemble_model(bundle, info, name="blended")
        version = mlflow.register_model(logged.model_uri, MODEL_NAME)
    return trained_ensemble, f"models:/{MODEL_NAME}/{version.version}", run.info.run_id


def test_onnx_export_gives_the_registered_models_answers_without_tensorflow(blended_model,
                                                                             tmp_path):
    import mlflow
    from conftest_ensemble import tracking_at

    from fsd.cli import main
    from fsd.export.predictor import ExportedModel
    from fsd.serving.pyfunc import ensemble_of

    trained, uri, run_id = blended_model
    out = tmp_path / "export"
    clips = sorted((trained.root / "data" / "FSDKaggle2018.audio_test").glob("t_*.wav"))[:4]
    with tracking_at(trained.uri):
        assert main(["export", "--config", "experiments/demo.yaml", "--model", uri,
                     "--format", "onnx", "--output", str(out)]) == 0
        registered = mlflow.pyfunc.load_model(uri)
        want = registered.predict(pd.DataFrame({"audio": [c.read_bytes() for c in clips]}),
                                  params={"top_k": 3, "return_probabilities": True})
        logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "export/onnx")}
        ensemble = ensemble_of(registered)
        # the registered model's signature takes the window params (MLflow drops others)
        longest = max(clips, key=lambda c: c.stat().st_size)
        windows = {"window_seconds": 0.5, "hop_seconds": 0.25, "top_k": 3}
        want_windows = registered.predict(pd.DataFrame({"audio": [longest.read_bytes()]}),
                                          params=windows)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["kind"] == "onnx" and manifest["source"]["run_id"] == run_id
    assert manifest["baseline"]["weight"] == pytest.approx(0.4)
    assert all(f["max_abs_diff"] < 1e-5 for f in manifest["folds"])
    assert {"export/onnx/export.json", "export/onnx/baseline.npz",
            "export/onnx/config.yaml"} <= logged
    # in this process: every class's probability, against the registered bundle's
    exported = ExportedModel.load(out)
    from fsd.inference.clips import clips_features

    mels, summ = clips_features([c.read_bytes() for c in clips], exported.cfg)
    np.testing.assert_allclose(exported.predict(mels, summ), ensemble.predict(mels, summ),
                               atol=1e-5)
    from fsd.serving.requests import score_request

    got_windows = score_request(exported, pd.DataFrame({"audio": [longest.read_bytes()]}),
                                windows)
    assert len(want_windows) == len(got_windows) > 1
    assert list(want_windows.columns[:4]) == ["clip", "start", "end", "label_1"]
    assert got_windows["label_1"].tolist() == want_windows["label_1"].tolist()
    np.testing.assert_allclose(got_windows["score_1"], want_windows["score_1"], atol=1e-4)
    # a process where `import tensorflow` (and keras) fails: `fsd predict --exported`
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_TF)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), str(REPO)])}
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "not importable" in probe.stderr
    csv = tmp_path / "exported.csv"
    cmd = [sys.executable, "-c",
           "import sys; from fsd.cli import main; rc = main(sys.argv[1:]); "
           "assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'mlflow') "
           "for m in sys.modules), 'imported'; sys.exit(rc)",
           "predict", "--exported", str(out), "--top-k", "3", "--output", str(csv),
           *map(str, clips)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)  # no experiments/ here: the export carries its config
    assert done.returncode == 0, done.stderr[-3000:]
    got = pd.read_csv(csv)
    for j in (1, 2, 3):
        assert got[f"label_{j}"].tolist() == want[f"label_{j}"].tolist()
        np.testing.assert_allclose(got[f"score_{j}"], want[f"score_{j}"], atol=1e-4)


@pytest.mark.parametrize("fmt", ["saved_model", "litert"])
def test_saved_model_and_litert_exports_agree_with_keras(blended_model, tmp_path, fmt):
    from conftest_ensemble import tracking_at

    from fsd.cli import main

    trained, uri, run_id = blended_model
    with tracking_at(trained.uri):
        assert main(["export", "--config", "experiments/demo.yaml", "--model", uri,
                     "--format", fmt, "--output", str(tmp_path / fmt), "--no-log"]) == 0
    manifest = json.loads((tmp_path / fmt / "export.json").read_text())
    assert manifest["kind"] == fmt and len(manifest["folds"]) == 2
    for f in manifest["folds"]:
        assert "error" not in f and f["max_abs_diff"] < 1e-5, f
        assert (tmp_path / fmt / f["model"]).exists()
    assert (tmp_path / fmt / "baseline.json").is_file()
