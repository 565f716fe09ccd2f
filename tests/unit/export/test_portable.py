"""The export's portable parts: the baseline and projector as arrays agree with scikit-learn; an
export never writes into a folder that is not one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsd.baseline.model import BaselineModel
from fsd.config import Config
from fsd.export.portable import NotPortable, Portable, _Arrays, baseline_spec, projector_spec


@pytest.mark.parametrize("n_classes", [2, 4])
def test_portable_baselines_and_projector_match_scikit_learn(n_classes):
    from fsd.features.projection import SummaryProjector

    cfg = Config()
    cfg.baseline.extratrees_n_estimators, cfg.baseline.hgb_max_iter = 20, 15
    rng = np.random.default_rng(n_classes)
    x = 3 * rng.standard_normal((80, 30)).astype(np.float32)
    y = np.arange(80) % n_classes
    x[:, :n_classes] += 2 * np.eye(n_classes)[y]
    test = 3 * rng.standard_normal((25, 30)).astype(np.float32)
    test[0, 0], test[1, 1] = np.nan, 1e30
    for name, scaler in [("logreg", "standard"), ("logreg", "quantile"), ("svc", ""),
                         ("extratrees", ""), ("hgb", ""), ("vote", "")]:
        if scaler:
            cfg.baseline.logreg_scaler = scaler
        model = BaselineModel.fit_new(name, cfg.baseline, x, y, n_classes + 1)
        arrays = _Arrays()
        spec = json.loads(json.dumps(baseline_spec(model, arrays)))  # as written and read
        got = Portable(spec, arrays.arrays).predict_proba(test)
        np.testing.assert_allclose(got, model.predict_proba(test), atol=1e-6, err_msg=name)
    proj = SummaryProjector(8, whiten=True).fit(x)
    arrays = _Arrays()
    clean = np.nan_to_num(test, posinf=0)
    got = Portable(projector_spec(proj, arrays), arrays.arrays).transform(clean)
    np.testing.assert_allclose(got, proj.transform(clean), atol=1e-6)


def test_libsvm_probabilities_are_not_portable():
    from sklearn.svm import SVC

    est = SVC(probability=True).fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    with pytest.raises(NotPortable, match="probability=True"):
        baseline_spec(type("M", (), {"name": "svc", "n_classes": 2, "classes": [0, 1],
                                     "n_features": 3, "estimator": est})(), _Arrays())


def test_export_refuses_to_write_into_a_folder_that_is_not_an_export(tmp_path):
    from fsd.export.writer import ExportError, export_ensemble

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_ensemble(object(), tmp_path, "onnx")
    with pytest.raises(ExportError, match="unknown export format"):
        export_ensemble(object(), tmp_path / "x", "tflite")
    assert (tmp_path / "mine.txt").read_text() == "keep me"
