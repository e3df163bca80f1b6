"""Loopback tests: Python aiortc clients stream the synthetic webcam to the real server (own process).

No timed assertions: the CPU may be shared with other work. Deadlines below are generous
ceilings for "it happens at all", not performance gates (those live in benchmarks/load.py).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from server_harness import (
    LABEL_TOLERANCE,
    Server,
    jpeg_bytes,
    label_mismatch,
    run,
    start_server,
    stop_server,
    until,
    wait_until,
)

from enliven.server.client import LoopbackClient, ServerRefused, noise_frames

pytestmark = pytest.mark.slow


async def _stream(client: LoopbackClient, seconds: float) -> None:
    await client.connect()
    await asyncio.wait_for(client.first_frame.wait(), 30)
    await asyncio.sleep(seconds)


def _messages(client: LoopbackClient, kind: str) -> list[dict]:
    return [m for m in client.result.messages if m.get("type") == kind]


def test_streams_animated_frames_of_the_right_size(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    client = LoopbackClient(server.url, clip, fps=25, keep_every=5)

    async def go() -> None:
        try:
            await _stream(client, 4.0)
            assert client.hello.is_set()
            answer = client.pc.remoteDescription.sdp
            # DTLS-SRTP only, with a sha-256 fingerprint: no plain RTP
            assert "UDP/TLS/RTP/SAVPF" in answer and "RTP/AVP " not in answer
            assert "a=fingerprint:sha-256 " in answer
            # listening on 127.0.0.1, the server announces that address only, and VP8 only
            hosts = {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")}
            assert hosts == {"127.0.0.1"}, hosts
            assert "VP8/90000" in answer and "H264" not in answer
            assert "a=max-message-size:65536" in answer
        finally:
            await client.close()

    run(go())
    got = client.result.received
    assert len(got) >= 20, f"only {len(got)} frames came back in 4 s"
    assert {(r.width, r.height) for r in got} == {(256, 256)}
    ids = [r.frame_id for r in got if r.frame_id is not None]
    assert len(ids) >= 0.9 * len(got), "the echoed frame ids should be readable"
    assert ids == sorted(ids), "frames must come back in order (never an older frame after a newer one)"
    mismatch = [label_mismatch(k) for k in client.result.kept]  # the label is burned into the stream itself
    print(f"label mismatch after VP8, grey levels: max {max(mismatch):.1f}")
    assert max(mismatch) <= LABEL_TOLERANCE, f"the disclosure label should be in every frame: {mismatch}"
    kept = [k[16:-24].astype(np.int16) for k in client.result.kept]  # between the echoed id rows and the label
    assert max(float(np.abs(a - kept[0]).mean()) for a in kept[1:]) > 2.0, "the output should move"
    stats = _messages(client, "stats")
    assert stats and stats[-1]["fps_out"] > 0 and stats[-1]["face_found"] is True
    assert any(m["type"] == "face" and m["found"] for m in client.result.messages)
    server.wait_idle()


def _size_mode_engine(client: LoopbackClient) -> list[dict[str, Any]]:
    """Size, mode and engine of every settings message the client got (they also carry gains and eyes)."""
    return [{k: m["settings"][k] for k in ("size", "mode", "engine")} for m in _messages(client, "settings")]


def test_output_size_and_controls(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    client = LoopbackClient(server.url, clip, fps=25, size=512)

    async def go() -> None:
        try:
            await _stream(client, 1.0)
            assert client.result.received[-1].width == 512
            client.send({"type": "set", "mode": "absolute"})
            client.send({"type": "reset_reference"})
            client.send({"type": "set", "engine": "analytic"})  # from the default, trained
            client.send({"type": "set", "size": 256})
            mark = time.monotonic()

            def resized() -> bool:
                late = [r for r in client.result.received if r.t_s > mark]
                return bool(late) and late[-1].width == 256

            await until(resized, 20, "the size change reaches the stream")
        finally:
            await client.close()

    run(go())
    assert client.result.received[-1].width == 256, "the size change should reach the stream"
    assert {"size": 256, "mode": "absolute", "engine": "analytic"} in _size_mode_engine(client)
    assert _messages(client, "error") == []


def test_thread_engine_streams_the_same_way(tmp_path: Path, clip: list[np.ndarray], photo_png: bytes) -> None:
    """``--workers 0``: the Animators run in threads of the server, through the same per-frame routine."""
    threads = start_server(tmp_path / "threads.log", "--workers", "0", "--max-sessions", "1")
    client = LoopbackClient(threads.url, clip, fps=20, photo=photo_png, size=512, keep_every=5)

    async def go() -> None:
        try:
            await _stream(client, 1.0)
            client.send({"type": "set", "size": 256, "mode": "absolute"})
            await until(lambda: client.result.received[-1].width == 256, 20, "the size change reaches the stream")
        finally:
            await client.close()

    try:
        assert "workers" not in threads.state()
        run(go())
        state = threads.wait_idle()
    finally:
        stop_server(threads)
    widths = [r.width for r in client.result.received]
    assert widths[0] == 512 and widths[-1] == 256
    assert sum(r.frame_id is not None for r in client.result.received) >= 0.9 * len(widths), "ids are echoed"
    assert all(label_mismatch(k) <= LABEL_TOLERANCE for k in client.result.kept), (
        "the disclosure label should be in every frame")
    assert {"size": 256, "mode": "absolute", "engine": "trained"} in _size_mode_engine(client)
    assert state["photos_alive"] == 0


def test_sessions_are_isolated(server: Server, clip: list[np.ndarray], astronaut: np.ndarray) -> None:
    """Client A uploads a blue-skinned photo, B keeps the built-in one: B never sees A's photo."""
    server.wait_idle()
    blue = np.ascontiguousarray(astronaut[:, :, ::-1])  # red <-> blue: a face that is blue, not red
    upload = jpeg_bytes(blue) + b"<html><script>alert(1)</script></html>"  # a polyglot tail, too
    a = LoopbackClient(server.url, clip, fps=20, photo=upload, keep_every=3)
    b = LoopbackClient(server.url, clip, fps=20, keep_every=3)

    async def go() -> tuple[int, int, bytes, str]:
        try:
            await asyncio.gather(a.create(), b.create())
            async with aiohttp.ClientSession() as http:
                url_b = f"{server.base}/api/sessions/{b.session_id}/photo"
                async with http.get(url_b, headers={"Authorization": f"Bearer {a.token}"}) as r:
                    cross = r.status
                async with http.post(f"{server.base}/api/sessions/{b.session_id}/offer",
                                     headers={"Authorization": f"Bearer {a.token}"},
                                     json={"type": "offer", "sdp": "v=0"}) as r:
                    cross_offer = r.status
                async with http.get(f"{server.base}/api/sessions/{a.session_id}/photo",
                                    headers={"Authorization": f"Bearer {a.token}"}) as r:
                    stored, ctype = await r.read(), r.headers["Content-Type"]
            await asyncio.gather(_stream(a, 3.0), _stream(b, 3.0))
            return cross, cross_offer, stored, ctype
        finally:
            await asyncio.gather(a.close(), b.close())

    cross, cross_offer, stored, ctype = run(go())
    assert cross == 403 and cross_offer == 403, "a token must not reach another session"
    assert ctype == "image/png" and stored.startswith(b"\x89PNG") and stored != upload
    assert b"<script" not in stored, "the stored photo is re-encoded pixels, no trailing data"

    def redness(frames: list[np.ndarray]) -> list[float]:
        return [float(f[64:192, 64:192, 0].mean() - f[64:192, 64:192, 2].mean()) for f in frames]

    ra, rb = redness(a.result.kept), redness(b.result.kept)
    assert len(ra) >= 5 and len(rb) >= 5
    assert max(ra) < 0, "A's frames should all show A's blue face"
    assert min(rb) > 0, "B's frames should all show B's own (built-in) face, never A's"
    server.wait_idle()


def test_tokens_are_required(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()

    async def go() -> dict[str, int]:
        codes = {}
        c = LoopbackClient(server.url, noise_frames())
        other = LoopbackClient(server.url, noise_frames())
        try:
            await c.create()
            await other.create()
            for name, token in [("missing", ""), ("wrong", "x" * 43), ("other", other.token)]:
                try:
                    await LoopbackClient.connect(c, offer_token=token)
                    codes[name] = 200
                except ServerRefused as e:
                    codes[name] = e.status
                if c.pc is not None:
                    await c.pc.close()
                    c.pc = None
            await c.connect()  # the right token
            await asyncio.wait_for(c.hello.wait(), 30)
            async with aiohttp.ClientSession() as http:  # offers are single use
                async with http.post(f"{server.base}/api/sessions/{c.session_id}/offer",
                                     json={"type": "offer", "sdp": c.pc.localDescription.sdp},
                                     headers={"Authorization": f"Bearer {c.token}"}) as r:
                    codes["replay"] = r.status
            await c.close()
            await asyncio.to_thread(server.wait_ended, c.session_id)  # ended when the data channel closes
            try:  # after the end, the old token opens nothing
                fresh = LoopbackClient(server.url, noise_frames())
                fresh.session_id, fresh.token = c.session_id, c.token
                await fresh.connect()
                codes["ended"] = 200
            except ServerRefused as e:
                codes["ended"] = e.status
            finally:
                await fresh.close()
        finally:
            await c.close()
            await other.delete()
            await other.close()
        return codes

    codes = run(go())
    assert codes == {"missing": 401, "wrong": 403, "other": 403, "replay": 409, "ended": 403}
    server.wait_idle()


def test_data_channel_needs_the_token(server: Server) -> None:
    server.wait_idle()
    c = LoopbackClient(server.url, noise_frames())

    async def go() -> None:
        await c.create()
        real = c.token
        c.token = "not-the-token"  # the hello carries a wrong token; the offer the right one
        try:
            await c.connect(offer_token=real)
            await asyncio.wait_for(c.ended.wait(), 30)
        finally:
            await c.close()

    run(go())
    assert any(m.get("code") == "forbidden" for m in c.result.messages) or not c.hello.is_set()
    state = server.wait_idle()
    assert state["end_reasons"].get("bad data-channel token", 0) >= 1


def test_close_frees_everything(server: Server, clip: list[np.ndarray], photo_png: bytes) -> None:
    """Connect, upload, stream, close: sessions, photos, threads and fds return to where they were."""
    import psutil

    server.wait_idle()
    proc = psutil.Process(server.proc.pid)

    async def cycle() -> None:
        c = LoopbackClient(server.url, clip, fps=25, photo=photo_png)
        try:
            await _stream(c, 1.0)
        finally:
            await c.close()

    def usage() -> tuple[int, int]:
        return proc.num_threads(), proc.num_fds()

    def settled() -> tuple[int, int] | None:
        """The usage once three reads in a row agree (an ended session's thread takes a moment to exit)."""
        reads.append(usage())
        return reads[-1] if len(reads) >= 3 and len(set(reads[-3:])) == 1 else None

    counts: list[tuple[int, int]] = []
    for i in range(4):
        run(cycle())
        state = server.wait_for(lambda s: s["sessions"] == 0 and s["photos_alive"] == 0, 20,
                                "session ended and photo freed")
        reads: list[tuple[int, int]] = []
        if i < 2:  # the first cycle starts thread pools that stay: the second one is the reference
            counts.append(wait_until(settled, 20, "threads and fds settle"))
        else:
            wait_until(lambda: usage() == counts[1], 10, f"threads/fds back to {counts[1]}; so far {counts}")
            counts.append(usage())
    assert state["end_reasons"].get("data channel closed", 0) + state["end_reasons"].get(
        "connection closed", 0) + state["end_reasons"].get("webcam track ended", 0) >= 4
    assert counts[-1] == counts[1], f"threads/fds per cycle: {counts} (they must not grow)"


def test_vanished_client_is_reaped_by_the_heartbeat(server: Server) -> None:
    """kill -9 the client process: no BYE, no DTLS close; the heartbeat timeout ends the session."""
    server.wait_idle()
    env = dict(os.environ, GLOG_minloglevel="2")
    proc = subprocess.Popen([sys.executable, "-m", "enliven.server.client", server.url, "--seconds", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("connected"), line
        assert server.state()["sessions"] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        state = server.wait_idle(timeout_s=25)
        assert state["photos_alive"] == 0
        print(f"vanished client reaped after {time.monotonic() - t0:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert state["end_reasons"].get("heartbeat timeout", 0) >= 1


def test_idle_and_silent_sessions_are_reaped(server: Server) -> None:
    """No webcam frames (idle), no offer, and an offer whose ICE never completes: all reaped."""
    server.wait_idle()
    before = server.state()["end_reasons"]

    async def go() -> None:
        idle = LoopbackClient(server.url, noise_frames())
        idle.track.paused = True
        silent = LoopbackClient(server.url, noise_frames())
        no_ice = LoopbackClient(server.url, noise_frames())
        try:
            await idle.connect()
            await silent.create()
            await no_ice.create()
            from aiortc import RTCPeerConnection

            pc = RTCPeerConnection()
            pc.createDataChannel("control")
            pc.addTrack(no_ice.track)
            await pc.setLocalDescription(await pc.createOffer())
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.base}/api/sessions/{no_ice.session_id}/offer",
                                     json={"type": "offer", "sdp": pc.localDescription.sdp},
                                     headers={"Authorization": f"Bearer {no_ice.token}"}) as r:
                    assert r.status == 200
            await pc.close()  # the answer is never applied: no ICE, no DTLS, no data channel
            await asyncio.wait_for(idle.ended.wait(), 30)
        finally:
            await asyncio.gather(idle.close(), silent.close(), no_ice.close())

    run(go())
    state = server.wait_idle(timeout_s=30)
    after = state["end_reasons"]
    for reason in ("idle timeout", "no offer in time", "not connected in time"):
        assert after.get(reason, 0) > before.get(reason, 0), f"no session ended by {reason!r}: {after}"
    assert state["photos_alive"] == 0


def test_face_lost_mid_stream_keeps_the_stream(server: Server, clip: list[np.ndarray]) -> None:
    """3 s face, 3 s no face, 3 s face: frames keep coming, face events go False then True."""
    server.wait_idle()
    fps = 20
    blank = np.full_like(clip[0], 40)

    def frame(i: int) -> np.ndarray:
        return blank if fps * 3 <= i < fps * 6 else clip[i % len(clip)]

    c = LoopbackClient(server.url, frame, fps=fps)

    async def go() -> None:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 30)
            await until(lambda: c.track.count >= fps * 9 + 10, 60, "the clip sent")
            await until(lambda: len(_faces(c)) >= 3 and any(i >= fps * 6 + 5 for i in _ids(c)), 20,
                        "the face lost and found again, and frames after its return back")
        finally:
            await c.close()

    run(go())
    faces = _faces(c)
    assert faces[:3] == [True, False, True], faces
    ids = _ids(c)
    during = [i for i in ids if fps * 3 + 5 <= i < fps * 6]
    assert len(during) >= 0.3 * (fps * 3 - 5), f"only {len(during)} frames came back while the face was gone"
    assert any(i >= fps * 6 + 5 for i in ids), "frames must keep coming after the face returns"
    server.wait_idle()


def _faces(client: LoopbackClient) -> list[bool]:
    return [m["found"] for m in client.result.messages if m.get("type") == "face"]


def _ids(client: LoopbackClient) -> list[int]:
    return [r.frame_id for r in client.result.received if r.frame_id is not None]


def test_microphone_comes_back(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    c = LoopbackClient(server.url, clip, fps=25, audio=True)

    async def go() -> None:
        try:
            await _stream(c, 2.0)
        finally:
            await c.close()

    run(go())
    assert c.result.audio_frames > 10
    assert len(c.result.received) > 10
    server.wait_idle()


def test_delete_now(server: Server, photo_png: bytes) -> None:
    server.wait_idle()

    async def go() -> tuple[int, int, int]:
        c = LoopbackClient(server.url, noise_frames(), photo=photo_png)
        try:
            await c.connect()
            await asyncio.wait_for(c.hello.wait(), 30)
            first = await c.delete()
            await asyncio.wait_for(c.ended.wait(), 10)
            second = await c.delete()  # idempotent
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base}/api/sessions/{c.session_id}/photo",
                                    headers={"Authorization": f"Bearer {c.token}"}) as r:
                    photo = r.status
            return first, second, photo
        finally:
            await c.close()

    first, second, photo = run(go())
    assert (first, second, photo) == (204, 204, 403)
    state = server.wait_idle()
    assert state["photos_alive"] == 0
    assert state["end_reasons"].get("deleted by the user", 0) >= 1
