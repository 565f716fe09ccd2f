"""Issue 25 items 5 and 6 over a real ONNX export: it lists a SHA-256 of every file and
verifies; every tampered export (truncated ONNX, a 100,000-deep or incomplete manifest,
reversed labels, /etc/passwd, .., a link out) is a one-line error from `fsd predict
--exported`; a window longer than the clip answers as the whole clip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsd.export.manifest import ExportInvalid, hash_files, labels_sha256, verify_export

pytestmark = pytest.mark.e2e


def tampered(export: Path, tmp_path: Path, how: str) -> Path:
    bad = tmp_path / f"bad-{how}"
    shutil.copytree(export, bad)
    m = json.loads((bad / "export.json").read_text())
    onnx = next(f["model"] for f in m["folds"] if not f.get("error"))
    if how == "truncated-onnx":
        p = bad / onnx
        p.write_bytes(p.read_bytes()[:1000])
    elif how == "truncated-onnx-rehashed":  # the hash updated too: onnxruntime refuses it
        p = bad / onnx
        p.write_bytes(p.read_bytes()[:1000])
        m["files"][onnx] = hash_files(bad)[onnx]
    elif how == "deep":
        (bad / "export.json").write_text("[" * 100_000 + "]" * 100_000)
        return bad
    elif how == "missing-key":
        del m["front_end"]
    elif how == "missing-info":
        del m["info"]["tta_lengths"]
    elif how == "reversed-labels":
        m["labels"] = m["labels"][::-1]
    elif how == "etc-passwd":
        m["files"]["/etc/passwd"] = "0" * 64
        m["front_end"]["config"] = "/etc/passwd"
    elif how == "dotdot":
        m["folds"][0]["model"] = "../../../../etc/passwd"
    elif how == "unlisted-path":
        m["front_end"]["config"] = "folds/../config.yaml"
    elif how == "link-out":
        os.symlink("/etc/passwd", bad / "folds" / "evil.onnx")
        m["files"]["folds/evil.onnx"] = "0" * 64
    elif how == "old-format":
        del m["files"]
    (bad / "export.json").write_text(json.dumps(m))
    return bad


TAMPERED = ["truncated-onnx", "truncated-onnx-rehashed", "deep", "missing-key", "missing-info",
            "reversed-labels", "etc-passwd", "dotdot", "unlisted-path", "link-out", "old-format"]


@pytest.fixture(scope="module")
def onnx_export(trained_ensemble, tmp_path_factory):
    from conftest_ensemble import tracking_at

    from fsd.cli import main

    out = tmp_path_factory.mktemp("export") / "onnx"
    with tracking_at(trained_ensemble.uri):
        assert main(["export", "--config", "experiments/demo.yaml", "--model",
                     trained_ensemble.model_uri, "--output", str(out), "--no-log"]) == 0
        # exporting again over its own export replaces it (proved by its manifest)
        assert main(["export", "--config", "experiments/demo.yaml", "--model",
                     trained_ensemble.model_uri, "--output", str(out), "--no-log"]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["onnx"]  # no temporary folder left
    return trained_ensemble, out


def test_an_export_lists_a_hash_of_every_file_and_verifies(onnx_export):
    _, out = onnx_export
    m = verify_export(out)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(m["files"]) == on_disk - {"export.json"}
    assert all(len(h) == 64 for h in m["files"].values())
    assert m["labels_sha256"] == labels_sha256(m["labels"])


@pytest.mark.parametrize("how", TAMPERED)
def test_a_tampered_export_is_a_one_line_error(onnx_export, tmp_path, how):
    from fsd.export.predictor import ExportedModel

    trained, out = onnx_export
    bad = tampered(out, tmp_path, how)
    with pytest.raises(ExportInvalid) as err:
        ExportedModel.load(bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and len(msg) < 400
    if how == "reversed-labels":
        assert "labels" in msg
    clip = next((trained.root / "data" / "FSDKaggle2018.audio_test").glob("t_*.wav"))
    done = subprocess.run([sys.executable, "-m", "fsd", "predict", "--exported", str(bad),
                           str(clip)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "root:" not in done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]


def test_a_window_longer_than_the_clip_answers_as_the_whole_clip(onnx_export):
    """Round 3: a window longer than the recording changed the answer (a view padded to the
    window). Over a real export: the same labels and scores as the clip scored whole."""
    import numpy as np

    from fsd.export.predictor import ExportedModel
    from fsd.inference.scoring import score_files

    trained, out = onnx_export
    model = ExportedModel.load(out)
    clips = sorted((trained.root / "data" / "FSDKaggle2018.audio_test").glob("t_*.wav"))[:3]
    whole = score_files(model, clips, 3)
    for clip, want in zip(clips, whole):
        table, _, _, _ = model.window_scorer()(str(clip), 300.0, 300.0, 3)
        assert len(table) == 1
        got = table.iloc[0]
        assert [got[f"label_{j}"] for j in (1, 2, 3)] == [want[f"label_{j}"] for j in (1, 2, 3)]
        np.testing.assert_allclose([got[f"score_{j}"] for j in (1, 2, 3)],
                                   [want[f"score_{j}"] for j in (1, 2, 3)], atol=2e-2)
