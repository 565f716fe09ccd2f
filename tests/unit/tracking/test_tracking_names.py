"""Tracking's names stay in tracking: every tag constant in fsd/tracking/tags.py, each output
path built by ExperimentDir, and importing fsd.tracking loads no mlflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fsd
from fsd.config import from_dict
from fsd.train.experimentdir import ExperimentDir

PACKAGE = Path(fsd.__file__).resolve().parent


def test_every_tag_constant_is_defined_in_tracking_tags():
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "tracking" / "tags.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if isinstance(t, ast.Name) and ("TAG_" in t.id or t.id.endswith("_TAG")):
                    outside.append(f"{path.relative_to(PACKAGE)}: {t.id}")
    assert not outside


def test_tag_values_are_unique():
    from fsd.tracking import tags

    values = [getattr(tags, n) for n in tags.__all__ if n.startswith("TAG_")]
    assert len(values) == len(set(values)) > 40


def test_no_output_path_is_built_inline_under_the_experiment_dir():
    inline = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py")
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if "experiment_dir /" in line or "experiment_dir) /" in line]
    assert not inline


def test_experiment_dir_names_every_steps_folder(tmp_path):
    cfg = from_dict({"output_dir": str(tmp_path / "out"), "name": "x"})
    d = ExperimentDir.of(cfg)
    assert d.path == tmp_path / "out" / "x" == cfg.experiment_dir
    assert d.fold("abc", "0123456789", 3) == d.path / "train" / "abc-01234567" / "fold_3"
    assert d.baseline("vote", "0123456789", "r1") == d.path / "baseline" / "vote-01234567" / "r1"
    assert d.ensemble("") == d.path / "ensemble" / "adhoc"
    assert d.ensemble("k") == d.path / "ensemble" / "k"
    assert d.training_config("r2") == d.path / "ensemble" / ".config-r2.yaml"
    assert d.pipeline_config("r3") == d.path / "pipeline" / "config-r3.yaml"
    assert d.optuna_db == d.path / "sweep" / "optuna.db"
    # a study name is made a plain folder name: it never leaves the sweep folder
    assert d.study("a b/../c") == d.path / "sweep" / "a_b_.._c"
    assert d.study("a b/../c").parent == d.sweep


def test_importing_tracking_loads_neither_mlflow_nor_tensorflow():
    code = ("import sys, fsd.tracking, fsd.cli; fsd.cli.build_parser(); "
            "print(sorted(m for m in ('mlflow', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
