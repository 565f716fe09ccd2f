"""`featurize` through `mlflow run` on the embedded sample, and what it logged."""

from pathlib import Path

import pytest
from launch import mlflow_run
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_featurize_through_mlflow_run(tmp_path, monkeypatch):
    out = mlflow_run("featurize", tmp_path, "config=experiments/demo.yaml",
                      f"store.cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/out")
    assert out.returncode == 0, out.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp = client.get_experiment_by_name("it")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    # the resolved config, overrides included
    assert run.data.params["store.cache_dir"] == f"{tmp_path}/cache"
    assert run.data.params["logmel.n_mels"] == "64"
    assert run.data.tags["fsd.stage"] == "featurize"
    m, p = run.data.metrics, run.data.params
    # counts and sizes are params; only the timings are metrics
    assert int(p["featurize.n_clips"]) > 0 and float(p["featurize.audio_seconds"]) > 0
    assert int(p["featurize.crop_min"]) < int(p["featurize.crop_max"])
    assert m["perf/audio_seconds_per_s"] > 0 and not [k for k in m if not k.startswith("perf/")]
    assert not any(k.startswith(("model.", "train.", "sweep.", "ensemble.")) for k in p)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("**featurize** of `demo`") and "train clips" in note
    # the dataset as an MLflow dataset input
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name.startswith("synthetic")
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "reports", "features"} <= names
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert any("length" in p for p in plots) and any("pca" in p for p in plots)
    features = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "features")}
    assert "meta.json" in features and "train" in features
    # each artifact once: plots and reports are not repeated inside the store
    assert not {"plots", "rejects.csv", "folds.csv"} & features


@pytest.mark.slow
def test_strict_fails_on_rejects_after_logging(tmp_path):
    csv = tmp_path / "meta.csv"
    audio = tmp_path / "audio"
    audio.mkdir()
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(audio / f"ok{i}.wav", rng.normal(0, 0.1, 22050).astype("float32"), 44100)
    (audio / "bad.wav").write_bytes(b"not audio at all")
    csv.write_text("fname,label\n" + "".join(f"ok{i}.wav,{'ab'[i % 2]}\n" for i in range(4)) + "bad.wav,a\n")
    out = mlflow_run("featurize", tmp_path, "config=experiments/demo.yaml", "strict=true",
                      "data.source=folder", f"data.audio_dir={audio}", f"data.csv={csv}",
                      "data.verified_column=", f"store.cache_dir={tmp_path}/cache", "pca.n_components=2")
    assert out.returncode != 0
    printed = out.stdout + out.stderr
    assert "bad.wav" in printed and "--strict: 1 rejected" in printed
