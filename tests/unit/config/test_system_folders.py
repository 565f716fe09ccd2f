"""Issue 25 item 7: output_dir and store.cache_dir refuse system folders (/, /etc, /proc,
/sys, /dev, /usr and anything resolving inside them, links included)."""

from __future__ import annotations

import os

import pytest


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
