"""Hostile clients against a real server process (``python -m enliven.server``, i.e. ``enliven serve``).

Each test runs one class of attack while another client (the "bystander", its own address) streams,
and asserts: every answer is a 4xx (never a 5xx), the bystander's frames keep arriving, the server's
memory stays bounded, and (when the server stops) its log holds no traceback. The server trusts
127.0.0.1 as a proxy, so each attacker poses as its own client address with X-Forwarded-For.

Attacks (issue 10): stalled and trickled uploads; SDP smuggled past a line regex; a microphone the
client never takes back, data-channel messages over the announced limit, webcam frames over the size
limit; wrong-typed options and broken bodies; a foreign Host (DNS rebinding); offers and sessions per
address; upload bombs; ICE candidates outside the allowed networks; the photo outliving its session.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import re
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import numpy as np
import psutil
import pytest
from server_harness import Server, run, start_server, stop_server, until, valid_offer

from enliven.server.client import LoopbackClient, noise_frames

pytestmark = pytest.mark.slow

MiB = 2**20
BODY_TIMEOUT_S = 2.0
MEMORY_BOUND_MB = 60.0  # server RSS growth allowed across one attack (the attacks would add far more)
BYSTANDER = "198.51.100.200"


def _own_addresses() -> list[str]:
    from aioice.ice import get_host_addresses

    return get_host_addresses(use_ipv4=True, use_ipv6=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with tight limits; 127.0.0.1 is its trusted proxy; ICE may talk to 127.0.0.1 and this host's
    own addresses only (so 127.0.0.3 is outside: the ICE test listens there)."""
    networks = [a for addr in ["127.0.0.1", *_own_addresses()] for a in ("--ice-peer-network", addr)]
    s = start_server(tmp_path_factory.mktemp("hostile") / "server.log", "--max-sessions", "4",
                     "--max-sessions-per-client", "2", "--body-timeout", str(BODY_TIMEOUT_S),
                     "--trusted-proxy", "127.0.0.1", "--create-rate", "60", "--create-burst", "20",
                     "--offer-rate", "12", "--offer-burst", "3", "--idle-timeout", "10",
                     "--heartbeat-timeout", "5", *networks)
    yield s
    stop_server(s)


def _as(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _rss_mb(server: Server) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / MiB


@asynccontextmanager
async def bystander(server: Server) -> AsyncIterator[LoopbackClient]:
    """Another client streaming meanwhile, from its own address."""
    http = aiohttp.ClientSession(headers=_as(BYSTANDER))
    client = LoopbackClient(server.url, noise_frames(320, 240), fps=15, http=http)
    try:
        await client.connect()
        await asyncio.wait_for(client.first_frame.wait(), 60)
        yield client
    finally:
        await client.close()
        await http.close()


async def keeps_streaming(client: LoopbackClient, during: str, frames: int = 10) -> None:
    before = len(client.result.received)
    await until(lambda: len(client.result.received) - before >= frames, 30,
                f"the bystander's frames keep arriving after {during}")
    assert not client.ended.is_set(), f"the bystander's session ended during {during}"


def _no_5xx(results: list[tuple[str, int]]) -> None:
    bad = [(name, status) for name, status in results if status >= 500 or status < 0]
    assert not bad, f"expected 4xx answers, never 5xx: {bad}"


def _log_clean(server: Server) -> None:
    problems = [line for line in server.log().splitlines() if "Traceback" in line or " ERROR " in line]
    assert not problems, problems[:5]


# --- capacity held by stalled uploads -----------------------------------------------------------------
async def _stalled_upload(base: str, address: str, trickle: bool) -> int:
    """POST /api/sessions announcing a 5 MB photo and sending (almost) none of it. Returns the status."""
    host, port = base.split("//")[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    boundary = "stall"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\ntrue\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n\r\n")
    writer.write((f"POST /api/sessions HTTP/1.1\r\nHost: {host}:{port}\r\nX-Forwarded-For: {address}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {5 * MiB}\r\n\r\n"
                  + head).encode())
    await writer.drain()
    try:
        async def keep_trickling() -> None:
            while trickle:
                await asyncio.sleep(0.3)
                writer.write(b"\xff")
                await writer.drain()

        trickler = asyncio.ensure_future(keep_trickling())
        try:
            status_line = await asyncio.wait_for(reader.readline(), BODY_TIMEOUT_S * 5)
        finally:
            trickler.cancel()
            await asyncio.gather(trickler, return_exceptions=True)
        m = re.match(rb"HTTP/1\.1 (\d{3})", status_line)
        return int(m.group(1)) if m else -1
    except (ConnectionError, OSError):
        return -1
    finally:
        writer.close()


def test_stalled_uploads_hold_no_session_slot(hostile: Server) -> None:
    """More stalled uploads than the server has slots: newcomers are still served; the stalled ones get 408."""
    hostile.wait_idle()

    async def go() -> tuple[list[int], list[tuple[str, int]], dict[str, Any]]:
        async with bystander(hostile) as b:
            stalled = [asyncio.ensure_future(_stalled_upload(hostile.base, f"203.0.113.{i}", trickle=i % 2 == 1))
                       for i in range(6)]
            await asyncio.sleep(0.5)  # all six are waiting for their bodies now
            answers = []
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{hostile.base}/api/health") as r:
                    health = await r.json()
                for i in range(2):  # newcomers, while six uploads stall: not 503
                    async with http.post(f"{hostile.base}/api/sessions", headers=_as(f"192.0.2.{i}")) as r:
                        answers.append((f"newcomer {i}", r.status))
                        body = await r.json()
                    if r.status == 201:
                        async with http.delete(f"{hostile.base}/api/sessions/{body['session_id']}",
                                               headers={"Authorization": f"Bearer {body['token']}"}):
                            pass
            statuses = await asyncio.gather(*stalled)
            await keeps_streaming(b, "six stalled uploads")
            return statuses, answers, health

    statuses, answers, health = run(go())
    assert [s for _, s in answers] == [201, 201], answers
    assert health["sessions"] == 1, "only the bystander is a session: stalled uploads hold nothing"
    assert all(s in (408, -1) for s in statuses), f"stalled uploads time out: {statuses}"
    assert statuses.count(408) >= 3
    hostile.wait_for(lambda s: s["sessions"] == s["reserved"] == 0, 20, "nothing left reserved")
    _log_clean(hostile)


# --- SDP smuggling ------------------------------------------------------------------------------------
def _smuggled(valid: str) -> list[tuple[str, str]]:
    video = valid[valid.index("m=video"):valid.index("m=application")].replace("a=mid:0", "a=mid:7")
    audio = ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:8\r\na=rtcp-mux\r\n"
             "a=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n")
    out = []
    for sep_name, sep in [("lone CR", "\r"), ("form feed", "\x0c"), ("vertical tab", "\x0b"), ("NEL", "\x85"),
                          ("U+2028", "\u2028"), ("U+2029", "\u2029"), ("file separator", "\x1c")]:
        out.append((f"video after {sep_name}", valid + "a=x-note:hi" + sep + video.replace("\r\n", sep)))
        out.append((f"two audios after {sep_name}", valid + "a=x-note:hi" + sep + (audio * 2).replace("\r\n", sep)))
    out.append(("many sections", valid + "".join(video.replace("a=mid:7", f"a=mid:{20 + i}") for i in range(30))))
    return out


def test_smuggled_media_sections_are_refused_before_anything_is_built(hostile: Server) -> None:
    hostile.wait_idle()

    async def go() -> tuple[list[tuple[str, int]], list[str], int]:
        valid = await valid_offer()
        results, codes = [], []
        async with bystander(hostile) as b:
            http = aiohttp.ClientSession(headers=_as("203.0.113.50"))
            victim = LoopbackClient(hostile.url, noise_frames(), http=http)
            try:
                await victim.create()
                for name, sdp in _smuggled(valid):
                    async with http.post(f"{hostile.base}/api/sessions/{victim.session_id}/offer",
                                         json={"type": "offer", "sdp": sdp},
                                         headers={"Authorization": f"Bearer {victim.token}",
                                                  "X-Forwarded-For": f"203.0.114.{len(results)}"}) as r:
                        results.append((name, r.status))
                        codes.append((await r.json()).get("code"))
                state = await asyncio.to_thread(hostile.state)
                mine = [p for p in state["per_session"] if p["state"] == "created"]
                await victim.connect()  # the same session still takes a good offer
                await asyncio.wait_for(victim.first_frame.wait(), 60)
                await keeps_streaming(b, "smuggled offers")
            finally:
                await victim.close()
                await http.close()
        return results, codes, len(mine)

    results, codes, untouched = run(go(), timeout_s=180)
    _no_5xx(results)
    assert all(status == 400 for _, status in results), results
    assert set(codes) == {"bad_offer"}
    assert untouched == 1, "no peer connection was built for the refused offers (the session is still 'created')"
    _log_clean(hostile)


# --- unbounded queues: microphone, data channel, frame size --------------------------------------------
def test_microphone_never_taken_back_is_drained(hostile: Server) -> None:
    """The client sends its microphone but does not ask for it back: the server's sender never starts, and
    aiortc's queue behind the received track would grow forever unless drained."""
    hostile.wait_idle()
    http = None

    async def go() -> tuple[list[int], int]:
        nonlocal http
        http = aiohttp.ClientSession(headers=_as("203.0.113.60"))
        c = LoopbackClient(hostile.url, noise_frames(320, 240), fps=15, audio=True, audio_send_only=True, http=http)
        depths = []
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            for _ in range(15):  # 3 s of sound: 150 frames would be waiting without the drain
                state = await asyncio.to_thread(hostile.state)
                depths += [p["remote_audio_queue"] for p in state["per_session"] if p["remote_audio_queue"] is not None]
                await asyncio.sleep(0.2)
            return depths, c.result.audio_frames
        finally:
            await c.close()
            await http.close()

    depths, audio_back = run(go())
    assert depths and max(depths) <= 5, f"aiortc's queue behind the microphone: {depths}"
    assert audio_back == 0, "the client did not ask for its microphone back"
    _log_clean(hostile)


def test_data_channel_over_the_limit_ends_only_that_client(hostile: Server) -> None:
    hostile.wait_idle()
    rss0 = _rss_mb(hostile)

    async def go() -> tuple[bool, bool, float]:
        async with bystander(hostile) as b:
            flood_http = aiohttp.ClientSession(headers=_as("203.0.113.70"))
            big_http = aiohttp.ClientSession(headers=_as("203.0.113.71"))
            flooder = LoopbackClient(hostile.url, noise_frames(), fps=10, http=flood_http)
            big = LoopbackClient(hostile.url, noise_frames(), fps=10, http=big_http)
            try:
                await asyncio.gather(flooder.connect(), big.connect())
                await asyncio.gather(asyncio.wait_for(flooder.hello.wait(), 60), asyncio.wait_for(big.hello.wait(), 60))
                big.pc.sctp._remote_max_message_size = 16 * MiB  # ignore the limit the answer announced
                for _ in range(3):
                    big.send("x" * MiB)  # 3 MB: refused while it is reassembled
                for i in range(2000):  # a flood: 2000 messages at once, over the per-second limit
                    flooder.send({"type": "ping", "t": i})
                await asyncio.wait_for(big.ended.wait(), 30)
                await keeps_streaming(b, "a 1 MB data-channel message and a flood")
                rss = _rss_mb(hostile)
                return flooder.ended.is_set(), b.ended.is_set(), rss
            finally:
                await asyncio.gather(flooder.close(), big.close())
                await flood_http.close()
                await big_http.close()

    flooder_ended, bystander_ended, rss = run(go())
    state = hostile.wait_for(lambda s: s["end_reasons"].get("data-channel limit broken", 0) >= 1, 20,
                             "the client over the limit ended")
    assert not flooder_ended and not bystander_ended, "a flood is cut by the rate limit, not by ending the session"
    assert rss - rss0 <= MEMORY_BOUND_MB, f"server RSS {rss0:.0f} -> {rss:.0f} MB"
    assert state["end_reasons"]["data-channel limit broken"] >= 1
    _log_clean(hostile)


def test_oversized_webcam_frames_are_dropped_before_decoding(hostile: Server) -> None:
    """2560x1440 frames (3.7 MP, over the 2.1 MP limit): dropped from their VP8 key frame's header on."""
    hostile.wait_idle()
    huge = [np.full((1440, 2560, 3), v, np.uint8) for v in (60, 120)]

    async def go() -> dict[str, Any]:
        http = aiohttp.ClientSession(headers=_as("203.0.113.80"))
        c = LoopbackClient(hostile.url, huge, fps=4, http=http)
        try:
            await c.connect()
            await asyncio.wait_for(c.hello.wait(), 60)
            return await asyncio.to_thread(
                hostile.wait_for, lambda s: any(p["dropped_oversized"] >= 5 for p in s["per_session"]), 40,
                "oversized frames dropped")
        finally:
            await c.close()
            await http.close()

    state = run(go())
    mine = next(p for p in state["per_session"] if p["dropped_oversized"] >= 5)
    assert mine["frames_in"] == 0, "no oversized frame was decoded"
    _log_clean(hostile)


# --- wrong types and broken bodies ----------------------------------------------------------------------
def _raw_requests(base: str) -> list[tuple[str, bytes]]:
    host = base.split("//")[1]

    def post(path: str, headers: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.90\r\n{headers}"
                f"Connection: close\r\n\r\n").encode() + body

    return [
        ("bad chunked encoding", post("/api/sessions", "Transfer-Encoding: chunked\r\nContent-Type: multipart/"
                                      "form-data; boundary=b\r\n", b"zz\r\nnot a chunk\r\n0\r\n\r\n")),
        ("no boundary", post("/api/sessions", "Content-Type: multipart/form-data\r\nContent-Length: 10\r\n",
                             b"0123456789")),
        ("body shorter than its length", post("/api/sessions", "Content-Type: application/json\r\n"
                                              "Content-Length: 100\r\n", b"{}")),
        ("headers only, lying length", post("/api/sessions/x/offer", "Content-Type: application/json\r\n"
                                            "Content-Length: 999999\r\nAuthorization: Bearer x\r\n", b"")),
    ]


async def _raw(base: str, request: bytes) -> int:
    host, port = base.split("//")[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), BODY_TIMEOUT_S * 5)
        m = re.match(rb"HTTP/1\.1 (\d{3})", line)
        return int(m.group(1)) if m else 0  # 0: the server closed the connection without an answer
    except (ConnectionError, OSError):
        return 0
    finally:
        writer.close()


def test_wrong_types_and_broken_bodies_get_4xx(hostile: Server) -> None:
    hostile.wait_idle()
    deep = b"[" * 5000 + b"]" * 5000

    def form(fields: list[tuple[str, str | bytes, dict[str, str]]]) -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("note", b"", filename="note.txt")  # a file: the form goes as multipart/form-data
        for name, value, extra in fields:
            f.add_field(name, value, **extra)
        return f

    async def go() -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        async with bystander(hostile) as b, aiohttp.ClientSession() as http:
            n = 0

            async def post(name: str, **kw: Any) -> None:
                nonlocal n
                n += 1
                headers = {**kw.pop("headers", {}), **_as(f"203.0.115.{n}")}
                async with http.post(f"{hostile.base}/api/sessions", headers=headers, **kw) as r:
                    out.append((name, r.status))
                    body = await r.json(content_type=None) if r.content_type == "application/json" else {}
                if r.status == 201:
                    async with http.delete(f"{hostile.base}/api/sessions/{body['session_id']}",
                                           headers={"Authorization": f"Bearer {body['token']}"}):
                        pass

            for size in (256.0, "256", [256], {"a": 1}, True, 1e308, -1, 2**70, "NaN"):
                await post(f"size {size!r}", json={"size": size})
            await post("size NaN literal", data=b'{"size": NaN}', headers={"Content-Type": "application/json"})
            await post("deep JSON", data=deep[:1000], headers={"Content-Type": "application/json"})
            await post("JSON list", data=b"[1, 2]", headers={"Content-Type": "application/json"})
            await post("size field not a number", data=form([("size", "\u00b2\u00b2\u00b2", {})]))
            await post("size field huge", data=form([("size", "9" * 500, {})]))
            await post("consent not UTF-8", data=form([("consent", b"\xff\xfe", {"content_type": "text/plain", "filename": "c.txt"})]))
            await post("base64 photo part", data=form([("consent", "true", {}), (
                "photo", b"aGVsbG8=", {"content_type": "image/jpeg", "filename": "p.jpg"})]))
            await post("photo field twice", data=form([("consent", "true", {}), ("photo", b"\xff\xd8\xff", {
                "filename": "a.jpg"}), ("photo", b"\xff\xd8\xff", {"filename": "b.jpg"})]))
            await post("many small fields", data=form([(f"f{i}", "x", {}) for i in range(2000)]))
            for name, raw in _raw_requests(hostile.base):
                out.append((name, await _raw(hostile.base, raw)))
            # offers: bodies of every shape, with and without a token
            async with http.post(f"{hostile.base}/api/sessions", headers=_as("203.0.115.200")) as r:
                session = await r.json()
            auth = {"Authorization": f"Bearer {session['token']}", **_as("203.0.115.201")}
            for name, body in [("offer deep JSON", deep[:2000]), ("offer NaN", b'{"type": "offer", "sdp": NaN}'),
                               ("offer sdp list", b'{"type": "offer", "sdp": ["v=0"]}')]:
                async with http.post(f"{hostile.base}/api/sessions/{session['session_id']}/offer", data=body,
                                     headers=auth) as r:
                    out.append((name, r.status))
            # delete: the same answer whether or not the session is live, and whatever the token
            for name, sid, token in [("delete unknown", "nope", "x" * 43),
                                     ("delete live, wrong token", session["session_id"], "x" * 43)]:
                async with http.delete(f"{hostile.base}/api/sessions/{sid}",
                                       headers={"Authorization": f"Bearer {token}"}) as r:
                    out.append((name, r.status))
            async with http.delete(f"{hostile.base}/api/sessions/{session['session_id']}") as r:
                out.append(("delete without a token", r.status))
            async with http.get(f"{hostile.base}/api/sessions/{session['session_id']}/photo",
                                headers={"Authorization": f"Bearer {session['token']}"}) as r:
                out.append(("still alive after the wrong-token delete", r.status))
            async with http.delete(f"{hostile.base}/api/sessions/{session['session_id']}",
                                   headers={"Authorization": f"Bearer {session['token']}"}) as r:
                out.append(("delete, right token", r.status))
            await keeps_streaming(b, "wrong types and broken bodies")
        return out

    results = dict(run(go(), timeout_s=180))
    _no_5xx([(k, v) for k, v in results.items() if v != 0])
    for name, status in results.items():
        if name.startswith("size ") or name in ("deep JSON", "JSON list", "photo field twice", "base64 photo part",
                                                "offer deep JSON", "offer NaN", "offer sdp list"):
            assert 400 <= status < 500, (name, status)
    assert results["size field not a number"] == results["size field huge"] == 400
    assert results["body shorter than its length"] == 408
    assert results["delete unknown"] == results["delete live, wrong token"] == 204
    assert results["delete without a token"] == 401
    assert results["still alive after the wrong-token delete"] == 200 and results["delete, right token"] == 204
    raw = {name: results[name] for name, _ in _raw_requests(hostile.base)}
    assert all(status in (0, 400, 403, 408, 413) for status in raw.values()), raw
    _log_clean(hostile)


# --- DNS rebinding --------------------------------------------------------------------------------------
def test_foreign_host_names_are_refused(hostile: Server) -> None:
    async def go() -> dict[str, int]:
        out = {}
        port = hostile.base.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as http:
            for name, host, origin in [("rebound name", f"evil.example:{port}", None),
                                       ("rebound name, its own origin", f"evil.example:{port}",
                                        f"http://evil.example:{port}"),
                                       ("localhost", f"localhost:{port}", None),
                                       ("ip", f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")]:
                headers = {"Host": host, **({"Origin": origin} if origin else {})}
                for path in ("/", "/api/health"):
                    async with http.get(f"{hostile.base}{path}", headers=headers) as r:
                        out[f"{name} GET {path}"] = r.status
                async with http.post(f"{hostile.base}/api/sessions", headers={**headers, **_as("203.0.113.99")}) as r:
                    out[f"{name} POST"] = r.status
                    body = await r.json()
                if r.status == 201:
                    async with http.delete(f"{hostile.base}/api/sessions/{body['session_id']}",
                                           headers={"Authorization": f"Bearer {body['token']}", "Host": host}):
                        pass
        return out

    out = run(go())
    for key, status in out.items():
        assert status == (403 if key.startswith("rebound") else (201 if key.endswith("POST") else 200)), (key, status)


# --- rate limits, per-client cap, trusted proxy ------------------------------------------------------------
def test_offers_and_sessions_are_metered_per_client(hostile: Server) -> None:
    hostile.wait_idle()

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            created = []
            for _ in range(3):  # the per-client session cap is 2
                async with http.post(f"{hostile.base}/api/sessions", headers=_as("203.0.116.1")) as r:
                    created.append((r.status, await r.json(), r.headers.get("Retry-After")))
            out["sessions"] = [s for s, _, _ in created]
            out["cap code"] = created[-1][1].get("code")
            out["cap retry"] = created[-1][2]
            first = created[0][1]
            offers = []
            for _ in range(10):  # offers are metered per address: a burst of 3, then 12 a minute
                async with http.post(f"{hostile.base}/api/sessions/{first['session_id']}/offer", data=b"{}",
                                     headers={"Authorization": f"Bearer {first['token']}", **_as("203.0.116.2")}) as r:
                    offers.append((r.status, r.headers.get("Retry-After")))
            out["offers"] = offers

            async def end_all() -> None:
                for status, body, _ in created:
                    if status == 201:
                        async with http.delete(f"{hostile.base}/api/sessions/{body['session_id']}",
                                               headers={"Authorization": f"Bearer {body['token']}"}):
                            pass
                created.clear()

            await end_all()
            # X-Forwarded-For counts only from the trusted proxy (127.0.0.1): from 127.0.0.2 it is ignored
            untrusted = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
            async with untrusted:
                spoofed = []
                for i in range(3):
                    async with untrusted.post(f"{hostile.base}/api/sessions", headers=_as(f"198.18.0.{i}")) as r:
                        spoofed.append(r.status)
                        body = await r.json()
                    if r.status == 201:
                        created.append((201, body, None))
                out["spoofed"] = spoofed
            await end_all()
        return out

    out = run(go())
    assert out["sessions"] == [201, 201, 429] and out["cap code"] == "too_many_sessions" and out["cap retry"]
    statuses = [s for s, _ in out["offers"]]
    assert statuses[:3] == [400, 400, 400] and set(statuses[3:]) == {429}, statuses
    assert all(int(ra) >= 1 for s, ra in out["offers"] if s == 429)
    assert out["spoofed"] == [201, 201, 429], "a client that is not the proxy cannot pose as others"
    hostile.wait_idle()


# --- uploads ---------------------------------------------------------------------------------------------
def _rgba16_png(side: int) -> bytes:
    import cv2

    ramp = np.tile((np.arange(side, dtype=np.uint32) * 65535 // side).astype(np.uint16)[None, :], (side, 1))
    ok, data = cv2.imencode(".png", np.stack([ramp, ramp.T, ramp, np.full_like(ramp, 50000)], axis=2),
                            [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return data.tobytes()


def test_upload_bombs_are_decoded_in_a_capped_child(hostile: Server, astronaut: np.ndarray) -> None:
    """16-bit RGBA (several hundred MB to decode), a PNG bomb and a JPEG claiming 30000x30000: refused with
    4xx; the server's own memory barely moves. The preview of a good photo is encoded once, at most 1024 px."""
    from server_harness import jpeg_bytes
    from test_server_bad_input import _jpeg_claiming, _png_bomb

    hostile.wait_idle()
    good = jpeg_bytes(np.ascontiguousarray(np.kron(astronaut, np.ones((4, 4, 1), np.uint8))))  # 2048 px
    uploads = [("16-bit RGBA 16 MP", _rgba16_png(4000)), ("PNG bomb", _png_bomb()),
               ("JPEG 30000x30000", _jpeg_claiming(30000, good))]
    assert all(len(data) < 10 * MiB for _, data in uploads)

    async def go() -> tuple[list[tuple[str, int, str]], list[float], dict[str, Any]]:
        results, rss = [], [_rss_mb(hostile)]
        async with bystander(hostile) as b, aiohttp.ClientSession() as http:
            for i, (name, data) in enumerate(uploads):
                f = aiohttp.FormData()
                f.add_field("consent", "true")
                f.add_field("photo", data, filename="p.png", content_type="image/png")
                t0 = asyncio.get_running_loop().time()
                async with http.post(f"{hostile.base}/api/sessions", data=f, headers=_as(f"203.0.117.{i}")) as r:
                    results.append((name, r.status, (await r.json()).get("code")))
                print(f"{name}: {r.status} in {asyncio.get_running_loop().time() - t0:.1f} s")
                rss.append(_rss_mb(hostile))
            f = aiohttp.FormData()
            f.add_field("consent", "true")
            f.add_field("photo", good, filename="p.jpg", content_type="image/jpeg")
            async with http.post(f"{hostile.base}/api/sessions", data=f, headers=_as("203.0.117.50")) as r:
                made = await r.json()
            previews = []
            for _ in range(10):
                async with http.get(f"{hostile.base}/api/sessions/{made['session_id']}/photo",
                                    headers={"Authorization": f"Bearer {made['token']}"}) as r:
                    previews.append(await r.read())
            state = await asyncio.to_thread(hostile.state)
            async with http.delete(f"{hostile.base}/api/sessions/{made['session_id']}",
                                   headers={"Authorization": f"Bearer {made['token']}"}):
                pass
            await keeps_streaming(b, "upload bombs")
        return results, rss, {"made": made, "previews": previews, "state": state}

    results, rss, info = run(go(), timeout_s=240)
    _no_5xx([(n, s) for n, s, _ in results])
    assert all(s == 422 for _, s, _ in results), results
    assert dict((n, c) for n, _, c in results)["PNG bomb"] == "image_too_large"
    assert max(rss) - rss[0] <= MEMORY_BOUND_MB, f"server RSS during the bombs: {rss}"
    previews = info["previews"]
    assert len(set(previews)) == 1 and previews[0].startswith(b"\x89PNG"), "the same cached PNG each time"
    from PIL import Image

    assert max(Image.open(io.BytesIO(previews[0])).size) == 1024
    made = info["made"]
    assert made["consent"]["photo_sha256"] == hashlib.sha256(good).hexdigest()
    assert info["state"]["consent_records"] >= 1
    state = hostile.wait_idle()
    assert state["consent_records"] == 0 and state["photos_alive"] == 0, "consent and photo end with the session"
    _log_clean(hostile)


# --- ICE ----------------------------------------------------------------------------------------------------
def test_ice_talks_only_to_allowed_networks(hostile: Server) -> None:
    """An offer naming candidates inside (127.0.0.1) and outside (127.0.0.3, 8.8.8.8, an mDNS name) the
    allowed networks: STUN checks reach the inside listener only; packets from outside are ignored."""
    hostile.wait_idle()
    inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inside.bind(("127.0.0.1", 0))
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.3", 0))
    for s in (inside, outside):
        s.setblocking(False)

    async def go() -> tuple[int, int, dict[str, Any], str]:
        valid = await valid_offer()
        candidates = "".join(
            f"a=candidate:{i} 1 udp {2130706431 - i} {host} {port} typ host\r\n"
            for i, (host, port) in enumerate([("127.0.0.1", inside.getsockname()[1]),
                                              ("127.0.0.3", outside.getsockname()[1]),
                                              ("8.8.8.8", 3478), ("abcdefgh-1234.local", 9)]))
        lines = [line for line in valid.split("\r\n") if not line.startswith("a=candidate:")]
        sdp = "\r\n".join(line if line != "a=end-of-candidates" else candidates + line for line in lines)
        http = aiohttp.ClientSession(headers=_as("203.0.118.1"))
        c = LoopbackClient(hostile.url, noise_frames(), http=http)
        try:
            await c.create()
            async with http.post(f"{hostile.base}/api/sessions/{c.session_id}/offer",
                                 json={"type": "offer", "sdp": sdp},
                                 headers={"Authorization": f"Bearer {c.token}"}) as r:
                assert r.status == 200, await r.text()
                answer = (await r.json())["sdp"]
            port = int(next(line.split()[5] for line in answer.splitlines() if line.startswith("a=candidate:")))
            got_in = got_out = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 4.0
            while loop.time() < deadline:  # the server's checks (and retransmissions) for 4 s
                for sock in (inside, outside):
                    try:
                        while True:
                            data = sock.recv(2048)
                            if sock is inside:
                                got_in += 1
                            else:
                                got_out += 1
                            _ = data
                    except BlockingIOError:
                        pass
                # a STUN binding request from outside the allowed networks, to the server's own port
                outside.sendto(struct.pack(">HHI12s", 0x0001, 0, 0x2112A442, b"enliven-test"), ("127.0.0.1", port))
                await asyncio.sleep(0.1)
            state = await asyncio.to_thread(hostile.state)
            return got_in, got_out, state, answer
        finally:
            await c.delete()
            await c.close()
            await http.close()

    try:
        got_in, got_out, state, answer = run(go())
    finally:
        inside.close()
        outside.close()
    assert got_in >= 1, "the allowed candidate is checked"
    assert got_out == 0, "nothing is sent outside the allowed networks"
    assert state["ice"]["refused_candidates"] >= 3 and state["ice"]["dropped_receives"] >= 1
    assert {line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")} == {"127.0.0.1"}
    hostile.wait_idle()


# --- the photo outliving its session ------------------------------------------------------------------------
def test_no_core_files_and_no_session_ids_in_the_log(hostile: Server) -> None:
    hostile.wait_idle()
    state = hostile.state()
    pids = [hostile.proc.pid] + [w["pid"] for w in state.get("workers", [])]
    for pid in pids:
        assert psutil.Process(pid).rlimit(psutil.RLIMIT_CORE) == (0, 0), f"process {pid} may write a core file"

    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{hostile.base}/api/sessions", headers=_as("203.0.119.1")) as r:
                body = await r.json()
            async with http.delete(f"{hostile.base}/api/sessions/{body['session_id']}",
                                   headers={"Authorization": f"Bearer {body['token']}"}):
                pass
        return body

    body = run(go())
    hostile.wait_idle()
    log = hostile.log()
    assert body["session_id"] not in log and body["session_id"][:8] not in log and body["token"] not in log
    assert re.search(r"session [0-9a-f]{8} created", log), "sessions are named by a short hash in the log"
