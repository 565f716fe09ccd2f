"""Issue 25 (hostile input, round 3): user errors that were tracebacks are one line naming
the path and what to do (item 7); local windowed prediction follows the server's bounds
(item 6). Exports have their own module (tests/test_export_integrity.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_payloads import unprivileged

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("key", ["output_dir", "store.cache_dir"])
@pytest.mark.parametrize("folder", ["/", "/etc", "/proc/self", "/sys/kernel", "/dev", "/dev/shm/x",
                                    "/usr/local/share", "/etc/../etc/ssl", "~/../../etc"])
def test_output_and_cache_folders_refuse_system_folders(key, folder):
    from fsd.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=f"{key} must be a folder path .* not / and not "
                                          "inside /etc, /proc, /sys, /dev, /usr"):
        from_dict({}, [f"{key}={folder}"])


def test_a_link_into_a_system_folder_is_refused_and_own_folders_pass(tmp_path):
    from fsd.config import ConfigError, from_dict

    os.symlink("/etc", tmp_path / "innocent")
    with pytest.raises(ConfigError, match="output_dir must be a folder path"):
        from_dict({}, [f"output_dir={tmp_path / 'innocent' / 'out'}"])
    cfg = from_dict({}, [f"output_dir={tmp_path / 'out'}", "store.cache_dir=cache",
                         "name=etc"])
    assert cfg.store.cache_dir == "cache"
