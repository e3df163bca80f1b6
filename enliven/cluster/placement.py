"""Admission and placement with Ray: a session slot is a placement group of one bundle on one node.

Each node declares how many sessions it can run as a custom resource (``ray start --resources
'{"enliven_session": 2}'``; GPU nodes also declare their GPUs). A new session asks Ray for one bundle
``{"enliven_session": 1}`` (plus ``GPU: gpus_per_session`` when set) and waits ``wait_s`` for Ray to
reserve it on some node. While it waits the request is pending demand that Ray's autoscaler sees; if
no node has a free slot by then, the request is cancelled and the session gets 503 + Retry-After.
Once reserved, the session's actor (actor.py) is created inside the bundle, so it runs on that node
and holds that slot; removing the placement group kills the actor and frees the slot.

    reserve(sid) -> Slot (node id) | NoFreeSlot
    start_actor(slot, ...) -> the actor's handle
    release(slot)           the actor is killed, the slot is free again
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from enliven.engine.errors import EnlivenError
from enliven.server.config import ClusterConfig, ServerConfig
from enliven.server.session_animator import DebugOptions, EngineSettings

from . import missing_ray
from .actor import SessionActor

# Every line of every session's actor in the front door's log: Ray reads this when it is imported.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
try:
    import ray
    from ray.exceptions import ActorDiedError, RayError
    from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
except ImportError as e:  # the cluster extra is not installed
    raise missing_ray(e) from e

logger = logging.getLogger(__name__)

NAMESPACE = "enliven"
LOCAL_OBJECT_STORE_BYTES = 100 * 2**20  # a private Ray (--cluster ray) passes no objects: keep its store small
RemoteSessionActor = ray.remote(SessionActor)
__all__ = ["ActorDiedError", "NoFreeSlot", "Placement", "RayError", "Slot"]


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises EnlivenError unless ``HOST:PORT`` accepts a TCP connection within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise EnlivenError(f"cannot reach the Ray cluster at {address} (expected HOST:PORT of its head, "
                           f"e.g. ray:10.0.0.5:6379): {e}") from e


class NoFreeSlot(Exception):
    """No node had a free session slot within the wait."""


@dataclass(frozen=True)
class Slot:
    """One reserved session slot."""

    group: PlacementGroup
    node_id: str  # the node Ray reserved it on (hex)


class Placement:
    """The connection to the Ray cluster and the session slots reserved on it."""

    def __init__(self, cluster: ClusterConfig, max_sessions: int) -> None:
        self.cluster = cluster
        self.max_sessions = max_sessions  # the slots of a private Ray (address None)

    @property
    def bundle(self) -> dict[str, float]:
        bundle = {self.cluster.slot_resource: 1.0}
        if self.cluster.gpus_per_session > 0:
            bundle["GPU"] = self.cluster.gpus_per_session
        return bundle

    # --- the cluster -----------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster at ``cluster.address``, or start a private one on this machine (blocking)."""
        address = self.cluster.address
        if address is not None and address != "auto":
            _check_reachable(address)  # ray.init retries an unreachable address for minutes
        try:
            if address is None:
                ray.init(address="local", namespace=NAMESPACE, num_cpus=os.cpu_count() or 1,
                         resources={self.cluster.slot_resource: float(self.max_sessions)},
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
            else:
                ray.init(address=address, namespace=NAMESPACE)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EnlivenError(f"cannot join the Ray cluster at {address or 'a private instance'}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        slots = ray.cluster_resources().get(self.cluster.slot_resource, 0.0)
        if slots <= 0:
            logger.warning("no node of the Ray cluster declares %r yet: sessions get 503 until one does "
                           "(ray start --resources '{\"%s\": 2}')", self.cluster.slot_resource,
                           self.cluster.slot_resource)
        logger.info("joined Ray at %s: %d nodes, %g session slots", self.cluster.address or "a private instance",
                    len(self.nodes()), slots)

    def disconnect(self) -> None:
        if ray.is_initialized():
            ray.shutdown()

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes: id, address and session slots (total)."""
        return [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"],
                 "slots": n["Resources"].get(self.cluster.slot_resource, 0.0)}
                for n in ray.nodes() if n.get("Alive")]

    def free_slots(self) -> float:
        return float(ray.available_resources().get(self.cluster.slot_resource, 0.0))

    # --- slots -----------------------------------------------------------------------------------
    async def reserve(self, sid: str) -> Slot:
        """A slot on some node, or NoFreeSlot after ``cluster.wait_s`` (the request is then cancelled)."""
        group = placement_group([self.bundle], strategy="STRICT_PACK", name=f"enliven-session-{sid[:8]}")
        if not await asyncio.to_thread(group.wait, self.cluster.wait_s):
            await asyncio.to_thread(remove_placement_group, group)
            raise NoFreeSlot(f"no node had a free {self.cluster.slot_resource} slot within {self.cluster.wait_s:g} s")
        table = await asyncio.to_thread(placement_group_table, group)
        return Slot(group, str(table["bundles_to_node_id"][0]))

    def start_actor(self, slot: Slot, config: ServerConfig, sid: str, settings: EngineSettings,
                    debug: DebugOptions) -> Any:
        """The session's actor, created in ``slot`` (its constructor runs on that node)."""
        options: dict[str, Any] = {
            "num_cpus": 0, "num_gpus": self.cluster.gpus_per_session,
            "resources": {self.cluster.slot_resource: 1.0},
            "scheduling_strategy": PlacementGroupSchedulingStrategy(slot.group, placement_group_bundle_index=0),
            "max_restarts": 0, "max_task_retries": 0,
        }
        return RemoteSessionActor.options(**options).remote(config, sid, settings, debug)

    async def release(self, slot: Slot, actor: Any | None) -> None:
        """Kill the actor (if any) and free its slot."""
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as e:  # already gone
                logger.debug("killing an actor: %s", type(e).__name__)
        await asyncio.to_thread(remove_placement_group, slot.group)
