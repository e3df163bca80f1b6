"""Fixtures of the cluster tests: a real local Ray cluster of two nodes, and the server's test harness."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # server_harness, shared with tests/server

SLOTS_PER_NODE = 2
NODE_ARGS = {  # small nodes: the machine is shared
    "num_cpus": 1, "resources": {"enliven_session": SLOTS_PER_NODE}, "object_store_memory": 80 * 2**20,
}
# Notice a lost node in ~3 s instead of ~30 s (Ray's defaults suit clusters on real networks).
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                          "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """Two Ray nodes on this machine, each declaring 2 session slots: the head and one worker node."""
    pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        **NODE_ARGS, "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION})
    try:
        cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """The synthetic webcam: the built-in face moving, 640x480."""
    from enliven.fixtures import driving_frames

    return driving_frames(640, 480, fps=10.0)
