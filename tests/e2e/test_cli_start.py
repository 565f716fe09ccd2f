"""Starting a TensorFlow command: TF imported in a fresh process with its C++ start-up lines
kept off the terminal."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.e2e


def test_tensorflow_start_up_logs_stay_off_stderr():
    """A TensorFlow command imports TF with its C++ start-up lines kept off the terminal."""
    import sys

    code = ("from fsd.cli import import_tensorflow_quietly\nimport_tensorflow_quietly()\n"
            "import tensorflow\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok" and out.stderr == ""
