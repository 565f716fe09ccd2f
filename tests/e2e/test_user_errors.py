"""Issue 25 item 7: user errors that were tracebacks are one line naming the path and what to
do (a read-only feature cache: the sample's mkdtemp, the store's lock file), and issue 25 item
4's refusal to serve an open address without a token. Each is `fsd` in a process of its own
(without root's file capabilities where files are read-only), as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hostile_payloads import unprivileged

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The one error line of a command that failed cleanly (MLflow's INFO lines aside)."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if " ERROR " in ln or "error" in ln[:12]]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("ro", ["cache", "store"])
def test_a_read_only_feature_cache_is_one_line(tmp_path, ro):
    """The synthetic sample's mkdtemp (cache read-only) and the store's lock file (features
    folder read-only) were PermissionError tracebacks."""
    cache = tmp_path / "cache"
    if ro == "store":  # the sample exists; only the features folder is read-only
        from fsd.data.synthetic import ensure_sample

        ensure_sample(cache, 2, 0, 8000)
        (cache / "features").mkdir()
        locked = cache / "features"
    else:
        cache.mkdir()
        locked = cache
    locked.chmod(0o555)
    try:
        done = subprocess.run(unprivileged(
            [sys.executable, "-m", "fsd", "featurize", "--config", str(REPO / "experiments/demo.yaml"),
             f"store.cache_dir={cache}", f"output_dir={tmp_path / 'out'}",
             "data.synthetic_clips_per_class=2", "audio.sample_rate=8000"]),
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line_error(done)
    assert f"cannot write {locked}" in line and "store.cache_dir=" in line, line


def test_serve_refuses_an_open_address_without_a_token():
    """As a user sees it: `fsd serve` in its own process, one error line and no traceback."""
    done = subprocess.run([sys.executable, "-m", "fsd", "serve", "--model", "models:/none@x",
                           "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert "Traceback" not in done.stderr
    assert len([ln for ln in done.stderr.splitlines() if " ERROR " in ln]) == 1
