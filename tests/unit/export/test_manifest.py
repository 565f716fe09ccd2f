"""Issue 25 (hostile input, round 3), items 1, 5 and 7 for exports (the writer's side; a
real export tampered with: tests/e2e/test_export_integrity.py): `fsd export` replaces only
a folder its own manifest proves it wrote (a SHA-256 of every listed file, nothing else
there), refuses links, files and unwritable places in one line; `fsd predict --exported`
verifies the folder before loading anything, and every tampered export is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_payloads import unprivileged

from fsd.export.manifest import hash_files, labels_sha256, verify_export
from fsd.export.writer import ExportError, check_target

REPO = Path(__file__).resolve().parents[3]


def fake_export(folder: Path, labels=("a", "b")) -> Path:
    """A folder laid out and hashed as `fsd export` writes one (its checks, not its model)."""
    (folder / "folds").mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 1\n")
    (folder / "folds" / "fold_0.onnx").write_bytes(b"network")
    manifest = {"format": "fsd-export-1", "kind": "onnx", "labels": list(labels), "info": {},
                "folds": [], "front_end": {"config": "config.yaml"},
                "labels_sha256": labels_sha256(list(labels)), "files": hash_files(folder)}
    (folder / "export.json").write_text(json.dumps(manifest))
    return folder


def test_only_a_folder_that_proves_itself_an_export_may_be_replaced(tmp_path):
    out = fake_export(tmp_path / "exp")
    check_target(out)  # as written: may be replaced
    verify_export(out)
    # round 2's rule was "holds a file named export.json": a thesis and a src/ were deleted
    thesis = tmp_path / "thesis"
    (thesis / "src").mkdir(parents=True)
    (thesis / "src" / "main.py").write_text("print('mine')")
    (thesis / "thesis.tex").write_text("years of work")
    (thesis / "export.json").write_text("{}")
    with pytest.raises(ExportError, match="not an earlier export"):
        check_target(thesis)
    # an export with one file more, one file changed, or a link: not provably ours
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes.txt is not part of the export"):
        check_target(out)
    (out / "notes.txt").unlink()
    (out / "config.yaml").write_text("seed: 2\n")
    with pytest.raises(ExportError, match="SHA-256 mismatch"):
        check_target(out)
    (out / "config.yaml").write_text("seed: 1\n")
    os.symlink(tmp_path / "thesis", out / "folds" / "link")
    with pytest.raises(ExportError, match="not part of the export"):
        check_target(out)
    assert (thesis / "thesis.tex").read_text() == "years of work"


def test_export_refuses_links_and_files_in_one_line(tmp_path):
    real = fake_export(tmp_path / "real")
    os.symlink(real, tmp_path / "link")
    with pytest.raises(ExportError, match="is a symbolic link"):
        check_target(tmp_path / "link")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        check_target(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("where", ["inside", "itself"])
def test_export_into_a_read_only_folder_is_one_line(tmp_path, where):
    """The real `fsd export` command (its model never loads: the output is refused first)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "export" if where == "inside" else ro
    ro.chmod(0o555)
    code = ("import sys; from fsd.export.writer import ExportError, export_ensemble\n"
            "try:\n    export_ensemble(None, sys.argv[1], 'onnx')\n"
            "except ExportError as exc:\n    print('ERR', exc); sys.exit(3)\n")
    try:
        done = subprocess.run(unprivileged([sys.executable, "-c", code, str(out)]),
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    finally:
        ro.chmod(0o755)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    line = done.stdout.strip()
    assert "\n" not in line and "choose an output folder you can write to" in line
    assert str(ro) in line
