"""How overrides reach the config from the command line and from `mlflow run -P`; how cheap
and quiet starting the CLI is."""

import subprocess

import pytest

from fsd.cli import COMMANDS, split_overrides
from fsd.config import ConfigError


def test_positional_and_mlflow_style_overrides():
    assert split_overrides(["train.fold=1", "--model.width", "0.5", "--train.seed=3"]) == [
        "train.fold=1", "model.width=0.5", "train.seed=3"]


def test_declared_overrides_parameter_is_split():
    assert split_overrides(["train.fold=1 model.width=0.5", ""]) == ["train.fold=1", "model.width=0.5"]


def test_dangling_option_is_an_error():
    with pytest.raises(ConfigError, match="has no value"):
        split_overrides(["--model.width"])
    with pytest.raises(ConfigError, match="write key=value"):
        split_overrides(["width"])


# --- starting is cheap ----------------------------------------------------------------------

HELP_CPU_BOUND_S = 2.0  # measured ~0.1 s; generous, for a busy machine


def _run_cpu(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``python -m fsd ARGS`` in a subprocess: (its CPU seconds, the result)."""
    import os
    import resource
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must be quiet without it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "fsd", *args], capture_output=True, text=True,
                         env=env, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_cheap_and_quiet(command):
    """`fsd --help` and every `fsd COMMAND --help`: well under a second of CPU (neither
    TensorFlow nor mlflow is imported) and nothing on stderr."""
    cpu, out = _run_cpu([command, "--help"] if command else ["--help"])
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "usage: fsd" in out.stdout
    assert cpu < HELP_CPU_BOUND_S, f"fsd {command or ''} --help took {cpu:.2f} s of CPU"


def test_help_imports_neither_tensorflow_nor_mlflow():
    import sys

    code = ("import sys\nfrom fsd.cli import build_parser\nbuild_parser()\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'mlflow', 'optuna', 'pandas', 'sklearn')"
            " if m in sys.modules]\nprint(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


