"""`fsd export --quantize int8` of the session's registered ensemble: the manifest records the
quantization, the folder proves itself, `fsd predict --exported` loads it as a float export,
and its top labels agree with the float export's on most clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def _export(trained, out, *extra, fmt: str = "onnx") -> int:
    from conftest_ensemble import tracking_at

    from fsd.cli import main

    with tracking_at(trained.uri):
        return main(["export", "--config", "experiments/demo.yaml", "--model",
                     trained.model_uri, "--format", fmt, "--output", str(out), *extra])


def test_int8_export_records_itself_and_agrees_with_the_float_export(trained_ensemble, tmp_path):
    from conftest_ensemble import tracking_at

    from fsd.export.manifest import verify_export
    from fsd.export.predictor import ExportedModel
    from fsd.inference.clips import clips_features

    assert _export(trained_ensemble, tmp_path / "float", "--no-log") == 0
    assert _export(trained_ensemble, tmp_path / "int8", "--quantize", "int8") == 0
    manifest = verify_export(tmp_path / "int8")
    assert manifest == json.loads((tmp_path / "int8" / "export.json").read_text())
    q = manifest["quantization"]
    assert q["weights"] == "int8" and q["method"] == "dynamic" and q["ops"] == "all"
    assert json.loads((tmp_path / "float" / "export.json").read_text())["quantization"] is None
    for f in manifest["folds"]:
        assert f["model"].endswith(".int8.onnx") and f["quantized"] == "int8"
        assert f["float_max_abs_diff"] < 1e-5 and f["max_abs_diff"] < 0.5
        assert not (tmp_path / "int8" / f["model"].replace(".int8", "")).exists()
    # the int8 networks hold int8 weights: smaller files than the float ones
    size = {k: sum(p.stat().st_size for p in (tmp_path / k / "folds").glob("*.onnx"))
            for k in ("float", "int8")}
    assert size["int8"] < 0.6 * size["float"]
    with tracking_at(trained_ensemble.uri):
        import mlflow

        run_id = manifest["source"]["run_id"]
        logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id,
                                                                      "export/onnx-int8")}
    assert "export/onnx-int8/export.json" in logged
    data = trained_ensemble.root / "data"
    clips = sorted(data.glob("FSDKaggle2018.audio_*/*.wav"))
    clips = [c for c in clips if c.stat().st_size > 0]
    assert len(clips) >= 24
    exports = {k: ExportedModel.load(tmp_path / k) for k in ("float", "int8")}
    mels, summ = clips_features([c.read_bytes() for c in clips], exports["float"].cfg)
    probs = {k: m.predict(mels, summ) for k, m in exports.items()}
    np.testing.assert_allclose(probs["int8"].sum(axis=1), 1.0, rtol=1e-4)
    agree = (probs["int8"].argmax(1) == probs["float"].argmax(1)).mean()
    assert agree >= 0.75, agree
    assert not np.allclose(probs["int8"], probs["float"], atol=1e-7)  # it is another network


def test_int8_is_refused_for_other_formats_before_anything_is_written(trained_ensemble,
                                                                      tmp_path):
    assert _export(trained_ensemble, tmp_path / "sm", "--quantize", "int8",
                   fmt="saved_model") == 2
    assert not (tmp_path / "sm").exists()
