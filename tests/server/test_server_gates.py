"""Reliability gates without a home elsewhere (RELIABILITY.md): B2 generator stall, B3 bursty input, T6 packet
loss and outage, T8 server killed and restarted, P5 DTLS fingerprint mismatch.

Loopback clients in this process, the server in its own. As everywhere in the suite, deadlines here are
generous ceilings for "it happens at all"; the gates' timing figures are measured and printed here and
recorded by ``python -m benchmarks.gates``.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from server_harness import NO_LIMITS, TEST_TIMEOUTS, Server, jpeg_bytes, run, start_server, stop_server, until

from enliven.server.client import LoopbackClient, noise_frames
from enliven.server.engines import log_id

pytestmark = pytest.mark.slow


def _ids_after(client: LoopbackClient, t0: float) -> list[tuple[float, int, float]]:
    """(time, frame id, id age ms) of the frames received after ``t0`` whose id was readable."""
    return [(r.t_s, r.frame_id, r.latency_ms) for r in client.result.received
            if r.t_s > t0 and r.frame_id is not None and r.latency_ms is not None]


def test_b2_generator_stall_resumes_with_a_fresh_frame(server: Server, clip: list[np.ndarray]) -> None:
    """The session's worker is stopped for 2 s (SIGSTOP): afterwards at most the frame it was working on comes
    out stale, then fresh frames; no backlog is replayed."""
    server.wait_idle()
    if "workers" not in server.state():
        pytest.skip("the server runs inference in threads")
    c = LoopbackClient(server.url, clip, fps=15, follow_hints=False)

    async def go() -> tuple[float, float]:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            await asyncio.sleep(1.0)
            state = await asyncio.to_thread(server.state)
            pid = next(w["pid"] for w in state["workers"] if w["sessions"] > 0)
            os.kill(pid, signal.SIGSTOP)
            stalled = time.monotonic()
            try:
                await asyncio.sleep(2.0)
            finally:
                os.kill(pid, signal.SIGCONT)
            resumed = time.monotonic()
            await until(lambda: len(_ids_after(c, resumed)) >= 10, 30, "frames after the stall")
            return stalled, resumed
        finally:
            await c.close()

    stalled, resumed = run(go())
    after = _ids_after(c, resumed)
    stale = [f for f in after if f[2] > 1000.0]  # sent before the stall ended
    fresh = [f for f in after if f[2] <= 1000.0]
    assert len(stale) <= 1, f"a backlog of stale frames was replayed: {stale}"
    assert fresh and all(age <= 1000.0 for _, _, age in after[len(stale):]), "fresh frames only, after the stall"
    ids = [fid for _, fid, _ in after]
    assert ids == sorted(ids), "frames come back in order"
    print(f"B2: first fresh frame {1e3 * (fresh[0][0] - resumed):.0f} ms after the stall, id age {fresh[0][2]:.0f} ms")
    server.wait_idle()


def test_b3_bursty_input_is_not_queued(server: Server, clip: list[np.ndarray]) -> None:
    """60 webcam frames at once, then 15 fps: the slots stay at one frame, aiortc's queue drained, latency back."""
    server.wait_idle()
    c = LoopbackClient(server.url, clip, fps=15, follow_hints=False)
    depths: list[tuple[int, int]] = []

    async def go() -> tuple[float, float]:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            await asyncio.sleep(2.0)
            burst = time.monotonic()
            start = c.track.count
            c.track.fps = 1000.0  # the burst: as fast as the encoder goes
            async with aiohttp.ClientSession() as http:
                while c.track.count < start + 60:
                    async with http.get(f"{server.base}/debug/state") as r:
                        for s in (await r.json())["per_session"]:
                            depths.append((s["inbox_depth"], s["remote_queue"] or 0))
                    await asyncio.sleep(0.05)
                c.track.fps = 15.0
                after = time.monotonic()
                for _ in range(10):
                    async with http.get(f"{server.base}/debug/state") as r:
                        for s in (await r.json())["per_session"]:
                            depths.append((s["inbox_depth"], s["remote_queue"] or 0))
                    await asyncio.sleep(0.2)
            await until(lambda: len(_ids_after(c, after + 1.0)) >= 10, 30, "frames after the burst")
            return burst, after
        finally:
            await c.close()

    burst, after = run(go())
    assert depths and max(d for d, _ in depths) <= 1, "the slot between decoder and generator holds one frame"
    assert max(q for _, q in depths) <= 2, f"aiortc's queue is drained during the burst: {depths}"
    before = [age for t, _, age in _ids_after(c, 0) if t < burst]
    late = [age for _, _, age in _ids_after(c, after + 1.0)]
    assert before and late and np.median(late) <= 2 * np.median(before) + 200, (
        f"latency after the burst {np.median(late):.0f} ms vs {np.median(before):.0f} ms before: frames queued")
    server.wait_idle()


def _lossy(client: LoopbackClient, loss: dict[str, float]) -> None:
    """Drop the client's outgoing RTP (not STUN, DTLS or RTCP) with probability ``loss["p"]``, on its sockets."""
    from enliven.server.ice_policy import _ice_connections

    rng = random.Random(7)
    for connection in _ice_connections(client.pc):
        for protocol in connection._protocols:
            send = protocol.send_data

            async def lossy_send(data: bytes, addr: tuple[str, int], send: Any = send) -> None:
                is_rtp = len(data) > 1 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223
                if is_rtp and rng.random() < loss["p"]:
                    return
                await send(data, addr)

            protocol.send_data = lossy_send


def test_t6_packet_loss_and_an_outage(server: Server, clip: list[np.ndarray]) -> None:
    """5 % of the webcam's RTP lost for 4 s, then all of it for 1 s: frames keep coming at 5 % loss, and come
    again after the outage (the server asks for a key frame: PLI); no decoder crash, the session goes on."""
    server.wait_idle()
    c = LoopbackClient(server.url, clip, fps=15, follow_hints=False)
    loss = {"p": 0.0}

    async def go() -> tuple[float, float, float, float]:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            _lossy(c, loss)
            await asyncio.sleep(2.0)
            t0 = time.monotonic()
            clean_fps = c.fps(since_s=t0 - 2.0)
            loss["p"] = 0.05
            await asyncio.sleep(4.0)
            lossy_fps = c.fps(since_s=t0)
            loss["p"] = 1.0
            await asyncio.sleep(1.0)
            loss["p"] = 0.0
            back = time.monotonic()
            await until(lambda: any(r.t_s > back for r in c.result.received), 30, "frames after the outage")
            first = next(r.t_s for r in c.result.received if r.t_s > back)
            await until(lambda: sum(r.t_s > back for r in c.result.received) >= 10, 30, "the stream going on")
            return clean_fps, lossy_fps, first - back, float(not c.ended.is_set())
        finally:
            await c.close()

    clean_fps, lossy_fps, recovery_s, alive = run(go())
    print(f"T6: {clean_fps:.1f} fps clean, {lossy_fps:.1f} fps at 5 % loss; first frame {recovery_s:.2f} s "
          "after a 1 s outage")
    assert alive, "the session must survive loss"
    assert lossy_fps >= 0.5 * clean_fps, f"{lossy_fps:.1f} fps at 5 % loss vs {clean_fps:.1f} clean"
    assert "Traceback" not in server.log()
    server.wait_idle()


def test_t8_server_killed_and_restarted(tmp_path: Path, clip: list[np.ndarray], astronaut: np.ndarray) -> None:
    """kill -9 the server while a session with an uploaded photo streams: nothing was written to disk (no
    photo to sweep), requests fail at once instead of hanging, and a restarted server serves again."""
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # the server's children inherit it; multiprocessing puts its sockets there
    try:
        first = start_server(tmp_path / "first.log", *NO_LIMITS, *TEST_TIMEOUTS, cwd=work)
    finally:
        if env_tmp is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = env_tmp
    upload = jpeg_bytes(astronaut)
    c = LoopbackClient(first.url, clip, fps=15, photo=upload)

    async def stream_then_kill() -> str:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
            async with aiohttp.ClientSession() as http:
                try:
                    async with http.get(f"{first.base}/api/health", timeout=aiohttp.ClientTimeout(total=5)):
                        return "answered"
                except aiohttp.ClientConnectionError:
                    return "refused"
        finally:
            await c.close()

    after_kill = run(stream_then_kill())
    _reap_orphans(first)
    assert after_kill == "refused", "a dead server refuses connections at once"
    files = [p for p in list(work.rglob("*")) + list(tmp.rglob("*")) if p.is_file()]
    photos = [p for p in files if p.stat().st_size > 64 * 1024 or any(
        magic in p.read_bytes() for magic in (b"\xff\xd8\xff", b"\x89PNG", b"WEBP"))]
    assert not photos, f"the server wrote what may be a photo: {photos} (all files: {files})"
    second = start_server(tmp_path / "second.log", *NO_LIMITS, *TEST_TIMEOUTS)
    try:
        fresh = LoopbackClient(second.url, clip, fps=15, photo=upload)

        async def again() -> None:
            try:
                await fresh.connect()
                await asyncio.wait_for(fresh.first_frame.wait(), 60)
            finally:
                await fresh.close()

        run(again())
        state = second.wait_idle()
        assert state["photos_alive"] == 0
    finally:
        stop_server(second)


def _reap_orphans(server: Server) -> None:
    """The killed server's worker and fork-server children notice their parent is gone; wait for them."""
    import psutil

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        orphans = [p for p in psutil.process_iter(["cmdline", "ppid"])
                   if p.info["ppid"] == 1 and any(str(server.proc.pid) in a for a in (p.info["cmdline"] or []))]
        if not orphans:
            return
        time.sleep(0.2)


def test_p5_dtls_fingerprint_mismatch_reaches_no_generator(server: Server) -> None:
    """The client's offer carries a fingerprint that is not its certificate's: DTLS fails, no frame is decoded
    for the generator, and the session is reaped."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    server.wait_idle()
    c = LoopbackClient(server.url, noise_frames())

    async def go() -> dict[str, Any]:
        pc = RTCPeerConnection()
        try:
            await c.create()
            pc.createDataChannel("control")
            pc.addTrack(c.track)
            await pc.setLocalDescription(await pc.createOffer())
            lines = []
            for line in pc.localDescription.sdp.split("\r\n"):
                if line.startswith("a=fingerprint:sha-256 "):
                    line = "a=fingerprint:sha-256 " + ":".join(["5A"] * 32)  # not this certificate's
                elif line.startswith("a=fingerprint:"):
                    continue
                lines.append(line)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base}/api/sessions/{c.session_id}/offer",
                                     json={"type": "offer", "sdp": "\r\n".join(lines)},
                                     headers={"Authorization": f"Bearer {c.token}"}) as r:
                    assert r.status == 200
                    answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(**answer))
            t0 = time.monotonic()
            state = await asyncio.to_thread(server.wait_ended, c.session_id, 20)
            return {"state": state, "reaped_s": time.monotonic() - t0}
        finally:
            await pc.close()
            await c.close()

    out = run(go())
    print(f"P5: session reaped {out['reaped_s']:.1f} s after the answer")
    ended = re.search(rf"session {log_id(c.session_id or '')} ended: ([^(]+) \(.*?, (\d+) frames in", server.log())
    assert ended, "the session's end is logged"
    assert ended.group(1).strip() in ("connection failed", "not connected in time"), ended.group(0)
    assert ended.group(2) == "0", "no frame reached the generator"


def test_server_keeps_serving_after_the_gates(server: Server) -> None:
    """Whatever the gates above did, the shared server is healthy: a fresh session connects."""
    server.wait_idle()
    c = LoopbackClient(server.url, noise_frames())

    async def go() -> None:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 30)
        finally:
            await c.close()

    run(go())
