"""Who runs a run: a reused pid does not count as the process that started it."""

from __future__ import annotations

import os

from fsd.processes import process_alive


def test_a_reused_pid_does_not_count_as_alive():
    from fsd import tracking

    me = tracking.process_tags()
    assert process_alive(os.getpid(), me[tracking.TAG_PROC_START])
    if me[tracking.TAG_PROC_START]:
        assert not process_alive(os.getpid(), "1")
