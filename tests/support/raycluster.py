"""A real multi-node Ray cluster on this machine, every node on 127.0.0.1 (a test harness, no
part of the package).

``ray.cluster_utils.Cluster`` starts a head and worker nodes as separate raylets with their
own object stores. By default Ray advertises the machine's network address even for
``node_ip_address=127.0.0.1``; with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment
the whole cluster stays on loopback. Ray reads it when it is imported (the driver) or started
(every node's processes inherit it), so it is set when this module is imported, before any
test imports Ray. The dashboard is off: tests run beside each other on shared machines.

Without Ray a test skips, saying so; under ``FSD_REQUIRE_DISTRIBUTED=1`` (CI) it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from devstack import free_port, skip_or_fail

LOOPBACK = "127.0.0.1"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def require_ray() -> None:
    """Skip (fail under FSD_REQUIRE_DISTRIBUTED=1) when Ray is not installed."""
    try:
        import ray  # noqa: F401
        import ray.cluster_utils  # noqa: F401
    except ImportError:
        skip_or_fail("Ray is not installed (pip install -e '.[ray]')")


@contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: float = 1) -> Iterator[object]:
    """A ``nodes``-node Ray cluster on loopback (``.address`` to join it, ``.worker`` its last
    node, ``.node_args`` what to add a node with); the driver's Ray connection and every node
    are shut down on exit."""
    require_ray()
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Ray imported before this module set the variable (a test imported it directly)
    ray_constants.ENABLE_RAY_CLUSTER = False
    common = {"num_cpus": cpus_per_node, "node_ip_address": LOOPBACK,
              "object_store_memory": 80 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={
        # its own ports, beside any other Ray on this machine
        **common, "gcs_server_port": free_port(), "include_dashboard": False,
        "ray_client_server_port": free_port(), "dashboard_agent_listen_port": free_port()})
    cluster.node_args = common
    try:
        for _ in range(nodes - 1):
            cluster.worker = cluster.add_node(**common)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@contextmanager
def driver_session() -> Iterator[None]:
    """The Ray connection this process opens inside the block is closed after it (a cluster
    shared by several modules stays up for the next one)."""
    try:
        yield
    finally:
        import ray

        ray.shutdown()


def node_addresses() -> set[str]:
    """The addresses the connected cluster's live nodes advertise."""
    import ray

    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
