"""Serving: the alias rule, the registered pyfunc on raw WAV bytes, a real ``mlflow models serve``
answering good and bad requests, and ``fsd predict``."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


REPO = Path(__file__).resolve().parents[2]


def test_alias_moves_only_when_the_new_score_beats_the_holder(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from fsd.serving.registry import register_and_promote

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    # a URI set process-wide by an earlier test would win over the env; clear it for this test
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    mlflow.set_experiment("alias")

    class Const(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    def log_one(score: float) -> str:
        with mlflow.start_run():
            mlflow.log_metric("oof_map3", score)
            info = mlflow.pyfunc.log_model(name="m", python_model=Const(), pip_requirements=[])
        return info.model_uri

    first = register_and_promote(log_one(0.80), "alias-test", "champion", 0.80)
    assert first.moved and first.previous_version is None
    worse = register_and_promote(log_one(0.70), "alias-test", "champion", 0.70)
    assert not worse.moved and worse.previous_version == first.version
    assert worse.previous_score == pytest.approx(0.80) and "<=" in worse.reason
    tie = register_and_promote(log_one(0.80), "alias-test", "champion", 0.80)
    assert not tie.moved
    better = register_and_promote(log_one(0.85), "alias-test", "champion", 0.85)
    assert better.moved and better.previous_version == first.version
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("alias-test", "champion").version) == better.version
    assert "kept @champion" in client.get_model_version("alias-test", worse.version).tags[
        "fsd.promotion"]


def _test_wavs(trained) -> list[bytes]:
    test_dir = Path(trained.cfg.data.root) / "FSDKaggle2018.audio_test"
    return [p.read_bytes() for p in sorted(test_dir.glob("t_*.wav"))[:2]]


def test_registered_pyfunc_predicts_on_raw_wav_bytes(ensemble_tracking):
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(ensemble_tracking.model_uri)
    labels = set(_labels(ensemble_tracking))
    blobs = _test_wavs(ensemble_tracking)
    out = model.predict(pd.DataFrame({"audio": blobs}))
    assert list(out.columns) == ["label_1", "score_1", "label_2", "score_2", "label_3", "score_3"]
    assert len(out) == len(blobs)
    for _, row in out.iterrows():
        assert {row.label_1, row.label_2, row.label_3} <= labels
        assert row.score_1 >= row.score_2 >= row.score_3 > 0
    full = model.predict(pd.DataFrame({"audio": blobs[:1]}),
                         params={"top_k": 2, "return_probabilities": True, "tta_crops": 1})
    probs = full[[c for c in full.columns if c.startswith("prob_")]]
    assert probs.shape[1] == len(labels) and probs.sum(axis=1).iloc[0] == pytest.approx(1, abs=1e-4)
    assert "label_3" not in full.columns
    with pytest.raises(MlflowException, match="not usable audio") as err:
        model.predict(pd.DataFrame({"audio": [b"RIFF....WAVEfmt not really"]}))
    assert err.value.get_http_status_code() == 400
    # the model carries its own code, so it loads where fsd is not installed: a fresh
    # interpreter with the checkout and the editable install hidden loads and predicts
    local = Path(mlflow.artifacts.download_artifacts(ensemble_tracking.model_uri))
    assert (local / "code" / "fsd" / "serving" / "pyfunc.py").is_file()
    wav = Path(ensemble_tracking.root) / "probe.wav"
    wav.write_bytes(blobs[0])
    script = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]
sys.path = [p for p in sys.path if p not in ('', {str(REPO)!r})]
try:
    import fsd
    raise SystemExit('fsd is still importable from ' + fsd.__file__)
except ImportError:
    pass
import mlflow, pandas as pd
m = mlflow.pyfunc.load_model({str(local)!r})
out = m.predict(pd.DataFrame({{'audio': [open({str(wav)!r}, 'rb').read()]}}))
import fsd
assert fsd.__file__.startswith({str(local)!r}), fsd.__file__
print('LABEL', out['label_1'][0])
"""
    run = subprocess.run([sys.executable, "-I", "-c", script], cwd=ensemble_tracking.root,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("LABEL ")[1].strip() in labels


def _labels(trained) -> list[str]:
    import json

    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(trained.model_uri))
    bundle = next(local.glob("artifacts/*/ensemble.json"))
    return json.loads(bundle.read_text())["labels"]


def test_served_model_answers_good_requests_and_refuses_bad_ones(ensemble_tracking):
    from local_server import LocalServer, audio_request

    blobs = _test_wavs(ensemble_tracking)
    labels = set(_labels(ensemble_tracking))
    b64 = base64.b64encode(blobs[0]).decode()
    split = lambda rows, cols=("audio",): {"dataframe_split": {"columns": list(cols),  # noqa: E731
                                                              "data": rows}}
    bad = {
        "not base64": split([["@@@ this is not base64 @@@"]]),
        "not audio": split([[base64.b64encode(b"hello, this is not audio at all").decode()]]),
        "empty clip": split([[""]]),
        "no rows": split([]),
        "too large": split([[base64.b64encode(b"\0" * 2_100_000).decode()]]),
        "too many clips": split([[b64]] * 5),
        "wrong column": split([[b64]], cols=("sound",)),
        "a path": split([["/etc/passwd"]]),
        "bad param": {**split([[b64]]), "params": {"top_k": 0}},
        "not json": "{this is not json",
    }
    with LocalServer(ensemble_tracking.model_uri, start_timeout=240) as srv:
        status, body = srv.invoke(audio_request(blobs, {"top_k": 3}))
        assert status == 200, body
        preds = body["predictions"]
        assert len(preds) == 2 and all({p["label_1"], p["label_2"], p["label_3"]} <= labels
                                       for p in preds)
        # the other JSON layouts MLflow accepts reach the model too
        for layout in ({"inputs": {"audio": [b64, b64]}},
                       {"dataframe_records": [{"audio": b64}, {"audio": b64}]}):
            status, body = srv.invoke(layout)
            assert status == 200 and len(body["predictions"]) == 2, (layout.keys(), body)
        seen = {}
        for name, payload in bad.items():
            status, answer = srv.invoke(payload)
            seen[name] = status
            assert 400 <= status < 500, (name, status, answer)
            assert isinstance(answer, dict) and answer.get("message"), (name, answer)
        print("status codes for bad requests:", seen)
        status, _ = srv.invoke(audio_request(blobs[:1]))  # still serving after all of them
        assert status == 200


def test_fsd_predict_prints_a_table_and_names_bad_files(ensemble_tracking, tmp_path, capsys):

    from fsd.cli import main

    test_dir = Path(ensemble_tracking.cfg.data.root) / "FSDKaggle2018.audio_test"
    good = sorted(test_dir.glob("t_*.wav"))[:2]
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not audio")
    rc = main(["predict", *map(str, good), str(junk), "--model", ensemble_tracking.model_uri,
               "--top-k", "2", "--config", "experiments/demo.yaml"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["fname", "label_1", "score_1", "label_2", "score_2"]
    assert [line.split()[0] for line in lines[1:]] == [good[0].name, good[1].name, "junk.wav"]
    assert "ERROR: not usable audio" in lines[3]
    assert rc == 1  # a file failed
