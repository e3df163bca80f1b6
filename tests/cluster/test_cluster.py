"""The server on a real local Ray cluster (two nodes, two session slots each), with loopback WebRTC clients.

One scenario, in order: four sessions are placed two per node and all stream; a fifth gets 503; one
node is killed: exactly its two sessions end (their status says so, the front door frees them) while
the other two keep streaming; a deleted session's actor is gone; a new session lands on the
surviving node; at the end no actor and no photo is left anywhere.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import numpy as np
import pytest
from server_harness import NO_LIMITS, TEST_TIMEOUTS, Server, jpeg_bytes, run, start_server, stop_server, until

from enliven.server.client import LoopbackClient, ServerRefused

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FPS = 10.0  # per client: four sessions, the clients and two Ray nodes share a 2-core machine


def _node_of(client: LoopbackClient) -> str | None:
    """The node the session's stats messages name (the actor's Ray node id)."""
    nodes = [m["node"] for m in client.result.messages if m.get("type") == "stats" and "node" in m]
    return nodes[-1] if nodes else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _still_alive(pids: list[int], within_s: float = 20.0) -> list[int]:
    """The processes of ``pids`` still running after up to ``within_s`` seconds (an ended actor's process
    exits shortly after Ray drops it, not at once: a worker that loaded torch takes a few seconds)."""
    deadline = time.monotonic() + within_s
    alive = [p for p in pids if _pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _pid_alive(p)]
    return alive


async def _status(server: Server, client: LoopbackClient) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/api/sessions/{client.session_id}",
                            headers={"Authorization": f"Bearer {client.token}"}) as r:
            return r.status, await r.json()


def _frames_since(client: LoopbackClient, t: float) -> int:
    return sum(r.t_s >= t for r in client.result.received)


@pytest.fixture(scope="module")
def server(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = start_server(tmp_path_factory.mktemp("front") / "server.log", "--cluster", f"ray:{ray_cluster.address}",
                     "--engine", "analytic", "--max-sessions", "20", "--cluster-wait", "2",
                     *NO_LIMITS, *TEST_TIMEOUTS)  # the loopback clients share one address
    yield s
    stop_server(s)


def test_sessions_are_placed_survive_a_lost_node_and_leave_nothing(
        ray_cluster: Any, server: Server, clip: list[np.ndarray], astronaut: np.ndarray) -> None:
    head = ray_cluster.head_node.node_id
    (worker_node,) = ray_cluster.worker_nodes
    worker = worker_node.node_id
    upload = jpeg_bytes(astronaut)  # > 64 KiB: travels to its actor in several chunks
    clients = [LoopbackClient(server.url, clip, fps=FPS, photo=upload if i % 2 else None, keep_every=10)
               for i in range(4)]
    timings: dict[str, float] = {}

    async def go() -> dict[str, Any]:
        try:
            t0 = time.monotonic()
            await asyncio.gather(*(c.connect() for c in clients))  # create (placement, actor start), offer
            timings["4 created and connected"] = time.monotonic() - t0
            await asyncio.gather(*(asyncio.wait_for(c.first_frame.wait(), 60) for c in clients))
            await until(lambda: all(_node_of(c) for c in clients), 30, "every session's stats name its node")
            timings["placed and streaming"] = time.monotonic() - t0
            placed = {c.session_id: _node_of(c) for c in clients}

            # A fifth session: no node has a free slot.
            fifth = LoopbackClient(server.url, clip)
            t = time.monotonic()
            with pytest.raises(ServerRefused) as refused:
                await fifth.create()
            timings["503 after"] = time.monotonic() - t
            await fifth.close()
            actors = await asyncio.to_thread(lambda: server.state()["cluster"]["actors"])

            # Kill the worker node: exactly its two sessions end.
            mark = time.monotonic()
            await asyncio.to_thread(ray_cluster.remove_node, worker_node, False)
            lost = [c for c in clients if placed[c.session_id] == worker]
            kept = [c for c in clients if placed[c.session_id] == head]
            await asyncio.to_thread(server.wait_for, lambda s: s["sessions"] == 2, 60, "the lost sessions are freed")
            timings["lost sessions freed after"] = time.monotonic() - mark
            statuses = [await _status(server, c) for c in clients]
            await until(lambda: all(_frames_since(c, time.monotonic() - 1.0) > 0 for c in kept), 20,
                        "the other sessions keep streaming")
            after_kill = {c.session_id: _frames_since(c, mark) for c in clients}

            # Delete one of the survivors: its actor (and photo) is gone; a new session takes its slot.
            deleted = kept[0]
            assert await deleted.delete() == 204
            await asyncio.wait_for(deleted.ended.wait(), 20)
            newcomer = LoopbackClient(server.url, clip, fps=FPS, photo=upload)
            clients.append(newcomer)
            await newcomer.connect()
            await asyncio.wait_for(newcomer.first_frame.wait(), 60)
            await until(lambda: _node_of(newcomer) is not None, 30, "the new session's stats name its node")
            return {"placed": placed, "refused": refused.value, "actors": actors, "lost": lost, "kept": kept,
                    "statuses": statuses, "after_kill": after_kill, "deleted": deleted, "newcomer": newcomer}
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    r = run(go(), timeout_s=400)
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    placed, lost, kept = r["placed"], r["lost"], r["kept"]
    assert sorted(placed.values()) == sorted([head, head, worker, worker]), "two sessions per node"
    assert r["refused"].status == 503 and r["refused"].headers.get("Retry-After")
    assert len(lost) == 2 and len(kept) == 2
    by_id = dict(zip([c.session_id for c in clients[:4]], r["statuses"]))
    for c in lost:
        status, body = by_id[c.session_id]
        assert status == 410 and body["state"] == "ended" and "machine" in body["reason"], body
    for c in kept:
        status, body = by_id[c.session_id]
        assert status == 200 and body["state"] == "connected" and body["node"] == head, body
        assert r["after_kill"][c.session_id] > 0, "a session on the surviving node kept streaming"
    assert _node_of(r["newcomer"]) == head, "the new session landed on the surviving node"
    assert [m["reason"] for m in r["deleted"].result.messages if m.get("type") == "bye"] == ["deleted by the user"]

    server.wait_idle(30)  # Ray's view of free resources follows the removal of placement groups shortly after
    state = server.wait_for(lambda s: s["cluster"]["free_slots"] == 2, 30, "the surviving node's slots are free")
    assert state["cluster"]["photos_left_at_end"] == 0 and state["photos_alive"] == 0
    pids = [a["pid"] for a in r["actors"]]
    assert len(pids) == 4
    assert not _still_alive(pids), "every session's actor process is gone"
    end_reasons = state["end_reasons"]
    assert end_reasons.get("its machine stopped (the cluster node or its actor was lost)") == 2, end_reasons


def test_heartbeat_and_offer_timeouts_end_cluster_sessions_as_on_one_machine(
        server: Server, clip: list[np.ndarray]) -> None:
    """A page that stops its heartbeat, and one that never offers, are ended (by the actor, by the front door)
    with the single-machine reasons; their slots, registry entries and actors are freed."""
    server.wait_idle(30)
    silent = LoopbackClient(server.url, clip, fps=FPS, heartbeat=False)
    mute = LoopbackClient(server.url, clip)

    async def go() -> list[tuple[int, dict[str, Any]]]:
        try:
            await silent.connect()
            await asyncio.wait_for(silent.hello.wait(), 60)
            await mute.create()
            pids = [a["pid"] for a in (await asyncio.to_thread(server.state))["cluster"]["actors"]]
            await asyncio.wait_for(silent.ended.wait(), 30)  # the actor's bye, then its data channel closes
            await asyncio.to_thread(server.wait_idle, 30)
            return [await _status(server, c) for c in (silent, mute)] + [(len(pids), {"pids": pids})]
        finally:
            await asyncio.gather(silent.close(), mute.close())

    (s_status, s_body), (m_status, m_body), (n, actors) = run(go(), timeout_s=200)
    assert s_status == 410 and s_body["reason"] == "heartbeat timeout", s_body
    assert m_status == 410 and m_body["reason"] == "no offer in time", m_body
    assert [m["reason"] for m in silent.result.messages if m.get("type") == "bye"] == ["heartbeat timeout"]
    assert n == 2 and not _still_alive(actors["pids"]), "both actors are gone"
    state = server.state()
    assert state["photos_alive"] == 0 and state["cluster"]["photos_left_at_end"] == 0
