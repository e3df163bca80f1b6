"""Loopback tests of sessions driven by face points (no camera video): Python aiortc clients that send the
clip's MediaPipe points on the "points" data channel to the real server (own process).

As in test_server_stream.py, deadlines are generous ceilings for "it happens at all", not speed gates.
"""
from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from server_harness import TEST_TIMEOUTS, Server, run, start_server, stop_server, until

from enliven.server.client import LoopbackClient, ServerRefused
from enliven.server.engines import log_id
from enliven.server.points import HEADER, NUM_POINTS, encode_points

pytestmark = pytest.mark.slow


def _messages(client: LoopbackClient, kind: str) -> list[dict]:
    return [m for m in client.result.messages if m.get("type") == kind]


def _session_state(server: Server, client: LoopbackClient) -> dict:
    short = log_id(client.session_id or "")
    return next(p for p in server.state()["per_session"] if p["id"] == short)


def test_face_points_drive_the_stream_without_any_video(server: Server, clip: list[np.ndarray],
                                                        clip_points: list[np.ndarray | None]) -> None:
    server.wait_idle()
    client = LoopbackClient(server.url, clip, fps=25, keep_every=5, points=clip_points)

    async def go() -> dict:
        try:
            await client.connect()
            offer = client.pc.localDescription.sdp
            assert "m=video" in offer and "a=recvonly" in offer and "a=sendrecv" not in offer.split("m=video")[1]
            await asyncio.wait_for(client.first_frame.wait(), 30)
            await until(lambda: len(_messages(client, "stats")) >= 3, 20, "three stats messages")
            return _session_state(server, client)
        finally:
            await client.close()

    state = run(go())
    got = client.result.received
    assert len(got) >= 20 and {(r.width, r.height) for r in got} == {(256, 256)}
    ids = [r.frame_id for r in got if r.frame_id is not None]
    assert len(ids) >= 0.9 * len(got), "the server draws each points message's frame id into its output"
    assert ids == sorted(ids)
    kept = [k[16:-24].astype(np.int16) for k in client.result.kept]
    assert max(float(np.abs(a - kept[0]).mean()) for a in kept[1:]) > 2.0, "the output should move"
    stats = _messages(client, "stats")[-1]
    assert stats["upstream"] == "landmarks" and stats["video_packets_in"] == 0, stats
    assert stats["points"]["accepted"] > 0 and stats["points"]["invalid"] == {} and stats["face_found"] is True
    assert stats["fps_in"] > 5 and stats["fps_out"] > 5
    assert state["upstream"] == "landmarks" and state["remote_queue"] is None, "no video track was received"
    assert any(m["type"] == "face" and m["found"] for m in client.result.messages)
    server.wait_idle()


def test_bad_points_are_dropped_and_the_stream_goes_on(server: Server, clip: list[np.ndarray],
                                                       clip_points: list[np.ndarray | None]) -> None:
    """Wrong sizes, versions, NaN/inf times, points far out of the frame, a collapsed face, text, a flood a
    hundred times faster than the camera: each is dropped and counted; the session keeps streaming."""
    server.wait_idle()
    client = LoopbackClient(server.url, clip, fps=20, points=clip_points)
    good = encode_points(0, 1.0, 640, 480, next(p for p in clip_points if p is not None))
    q = np.frombuffer(good, "<i2", NUM_POINTS * 3, HEADER.size).copy()
    far = q.copy()
    far[0] = 30000  # point 0 almost two frame widths to the right
    bad = [
        good[:100], good + b"\0", b"", good[:HEADER.size - 1],
        b"\x02" + good[1:],  # version 2
        good[:8] + struct.pack("<d", math.nan) + good[16:],
        good[:8] + struct.pack("<d", math.inf) + good[16:],
        good[:16] + struct.pack("<HH", 0, 480) + good[20:],  # a frame 0 px wide
        good[:HEADER.size] + far.tobytes(),
        good[:HEADER.size] + np.zeros_like(q).tobytes(),  # every point at the origin
        bytes(2888), b"\xff" * 2888,
    ]

    async def go() -> tuple[int, int, dict]:
        try:
            await client.connect()
            await asyncio.wait_for(client.first_frame.wait(), 30)
            before = len(client.result.received)
            ch = client.points_channel
            for data in [*bad, "a text message"]:  # within the rate limit: each is judged on its own
                ch.send(data)
                await asyncio.sleep(0.05)
            for burst in range(20):  # a flood: 100 messages at once, 20 times over 2 s
                for k in range(100):
                    ch.send(client.track.message(client.track.count + 10_000 + 100 * burst + k))  # valid, too many
                await asyncio.sleep(0.1)
            await until(lambda: len(client.result.received) - before >= 20, 30, "the stream goes on")
            await until(lambda: _messages(client, "stats") and _messages(client, "stats")[-1]["points"]["rate_limited"],
                        10, "the flood is counted")
            return before, len(client.result.received), _session_state(server, client)
        finally:
            await client.close()

    before, after, state = run(go(), timeout_s=120)
    assert after - before >= 20
    invalid = state["points"]["invalid"]
    assert sum(invalid.values()) == len(bad) + 1, invalid
    assert {"bad_size", "bad_version", "bad_time", "bad_header", "out_of_frame", "degenerate"} <= set(invalid), invalid
    # 2000 sent in 2 s against a limit of 60/s: most are dropped here (the unreliable channel drops many of
    # them before they arrive: aiortc abandons what its send buffer cannot take)
    assert state["points"]["rate_limited"] >= 300, state["points"]
    errors = _messages(client, "error")
    assert errors and all(e["code"] == "bad_points" for e in errors)
    assert len(errors) <= 10, "refusals are reported at most once a second"
    server.wait_idle()


def test_a_stream_that_stops_eases_to_the_photo_and_comes_back(server: Server, clip: list[np.ndarray],
                                                               clip_points: list[np.ndarray | None]) -> None:
    server.wait_idle()
    client = LoopbackClient(server.url, clip, fps=25, points=clip_points)

    def faces() -> list[bool]:
        return [m["found"] for m in _messages(client, "face")]

    async def go() -> tuple[int, int]:
        try:
            await client.connect()
            await until(lambda: faces()[-1:] == [True], 30, "the face is found")
            client.track.paused = True  # the page's landmarker stalls
            await until(lambda: faces()[-1:] == [False], 10, "a stopped stream counts as a lost face")
            paused_at = len(client.result.received)
            await asyncio.sleep(2.5)
            eased = len(client.result.received) - paused_at  # frames of the ease back to the photo, then none
            client.track.paused = False
            await until(lambda: faces()[-1:] == [True], 10, "the face comes back with the stream")
            await asyncio.sleep(0.5)
            return eased, len(client.result.received)
        finally:
            await client.close()

    eased, total = run(go())
    assert 3 <= eased <= 40, f"{eased} frames while stalled: the ease is animated, then the last frame is held"
    assert total > 0
    server.wait_idle()


@pytest.fixture(scope="module")
def landmarks_only_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = start_server(tmp_path_factory.mktemp("landmarks-only") / "server.log", "--landmarks-only",
                     "--max-sessions", "2", "--workers", "1", "--create-rate", "600", "--create-burst", "100",
                     *TEST_TIMEOUTS)
    yield s
    stop_server(s)


def test_landmarks_only_server_refuses_video_and_takes_points(landmarks_only_server: Server, clip: list[np.ndarray],
                                                              clip_points: list[np.ndarray | None],
                                                              tmp_path: Path) -> None:
    server = landmarks_only_server
    video = LoopbackClient(server.url, clip, fps=25)
    points = LoopbackClient(server.url, clip, fps=25, points=clip_points)

    async def go() -> ServerRefused:
        try:
            created = await video.create()
            assert created["landmarks_only"] is True
            with pytest.raises(ServerRefused) as refused:
                await video.connect()
            await points.connect()
            await asyncio.wait_for(points.first_frame.wait(), 30)
            return refused.value
        finally:
            await video.close()
            await points.close()

    refused = run(go())
    assert refused.status == 422 and refused.body["code"] == "landmarks_only", refused
    assert "face points" in refused.body["message"]
    assert len(points.result.received) >= 1
    server.wait_idle()
