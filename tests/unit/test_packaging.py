"""The project's own promises about packaging and entry points."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.split(r"[<>=!~; \[]", req.strip(), maxsplit=1)[0].lower()


def test_conda_yaml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    conda_reqs = sorted(r for r in pip_list if not r.startswith("-e"))
    assert conda_reqs == sorted(project["dependencies"])


def test_constraints_pin_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {_name(line) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line}
    missing = {_name(r) for r in project["dependencies"]} - pinned
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_constraints_pin_the_test_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {_name(line) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line}
    missing = {_name(r) for r in project["optional-dependencies"]["test"]} - pinned
    assert not missing, f"test extra not pinned in constraints.txt: {missing}"


def test_mlproject_entry_points_call_the_cli():
    spec = yaml.safe_load((REPO / "MLproject").read_text())
    assert {"main", "featurize", "train_fold", "baseline", "ensemble", "sweep"} <= set(
        spec["entry_points"])
    for name, ep in spec["entry_points"].items():
        assert ep["command"].startswith("python -m fsd "), name


@pytest.mark.parametrize("command", ["featurize", "train-fold", "baseline", "ensemble", "sweep", "main",
                                     "predict", "serve"])
def test_every_command_has_help(command):
    out = subprocess.run([sys.executable, "-m", "fsd", command, "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout


def test_config_typo_fails_before_any_work():
    out = subprocess.run([sys.executable, "-m", "fsd", "featurize", "--config", "experiments/demo.yaml",
                          "train.bacth_size=3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown config key 'train.bacth_size'" in out.stderr and "batch_size" in out.stderr
