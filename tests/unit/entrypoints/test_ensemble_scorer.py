"""Where the ensemble step scores: actors only under Ray with actors asked for."""

from __future__ import annotations

import sys

from fsd.config import load_config
from fsd.entrypoints.ensemble import _scorer


def test_the_driver_scores_without_ray_or_with_no_scoring_actors():
    local = load_config(None, ["cluster.executor=local"])
    no_actors = load_config(None, ["cluster.executor=ray", "cluster.scoring_actors=0"])
    ray_loaded = "ray" in sys.modules
    assert _scorer(local, local, "f" * 32) is None
    assert _scorer(no_actors, no_actors, "f" * 32) is None
    # deciding so needs no Ray (nor a cluster)
    assert ("ray" in sys.modules) == ray_loaded
