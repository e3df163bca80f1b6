"""Bad input: malformed offers, bad uploads, foreign origins, path traversal, abuse of the data channel.

Each must get a clear 4xx (never a 5xx), the server must stay up, and a session streaming
meanwhile must be unaffected. The server log is checked for tracebacks when it stops.
"""
from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from PIL import Image
from server_harness import Server, jpeg_bytes, run, start_server, stop_server, until, valid_offer
from yarl import URL

from enliven.server.client import LoopbackClient, noise_frames

pytestmark = pytest.mark.slow


async def _post_photo(http: aiohttp.ClientSession, base: str, data: bytes | None, consent: str = "true",
                      **headers: str) -> tuple[int, dict[str, Any], Any]:
    form = aiohttp.FormData()
    form.add_field("consent", consent)
    if data is not None:
        form.add_field("photo", data, filename="photo.jpg", content_type="image/jpeg")
    async with http.post(f"{base}/api/sessions", data=form, headers=headers) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return r.status, body, r.headers


async def _end(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> None:
    if "session_id" in body:
        async with http.delete(f"{base}/api/sessions/{body['session_id']}",
                               headers={"Authorization": f"Bearer {body['token']}"}) as r:
            assert r.status == 204


# --- uploads ---------------------------------------------------------------------------------
def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(side: int = 14000) -> bytes:
    """A small PNG whose header claims side x side pixels (rows of zeros, highly compressible)."""
    raw = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # only the first rows: the header is what matters
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b""))


def _jpeg_claiming(size: int, jpeg: bytes) -> bytes:
    """A real JPEG whose SOF header is patched to claim size x size pixels."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[:i + 5] + struct.pack(">HH", size, size) + jpeg[i + 9:]


def _other_format(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def test_bad_uploads_get_clear_4xx_and_others_stream_on(server: Server, astronaut: np.ndarray,
                                                        clip: list[np.ndarray]) -> None:
    server.wait_idle()
    good = jpeg_bytes(astronaut)
    small = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)
    tiny_face = cv2.copyMakeBorder(small, 224, 224, 224, 224, cv2.BORDER_CONSTANT, value=(200, 200, 200))
    gradient = np.tile(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (512, 1, 3))
    rng = np.random.default_rng(1)
    cases: list[tuple[str, bytes | None, str, set[int], str | None]] = [
        # name, photo bytes, consent, allowed statuses, expected error code
        ("truncated jpeg", good[: len(good) // 2], "true", {422}, "bad_image"),
        ("garbage after a jpeg header", good[:600] + rng.bytes(4000), "true", {422}, "bad_image"),
        ("png bomb 14000x14000", _png_bomb(), "true", {422}, "image_too_large"),
        ("jpeg header 30000x30000", _jpeg_claiming(30000, good), "true", {422}, "image_too_large"),
        ("random bytes", rng.bytes(5000), "true", {415, 422}, None),
        ("text", b"hello, this is not a photo\n" * 20, "true", {415}, "unsupported_format"),
        ("svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>',
         "true", {415}, "unsupported_format"),
        ("gif", _other_format(astronaut, "GIF"), "true", {415}, "unsupported_format"),
        ("bmp named .jpg", _other_format(astronaut, "BMP"), "true", {415}, "unsupported_format"),
        ("tiff", _other_format(astronaut, "TIFF"), "true", {415}, "unsupported_format"),
        ("empty", b"", "true", {422}, "bad_image"),
        ("no face", _png(gradient), "true", {422}, "no_face"),
        ("tiny face", _png(np.ascontiguousarray(tiny_face)), "true", {422}, None),
        ("three faces", jpeg_bytes(np.concatenate([astronaut] * 3, axis=1)), "true", {422}, "multiple_faces"),
        ("no consent", good, "false", {400}, "consent_required"),
        ("oversized", b"\xff\xd8\xff" + bytes(11 * 2**20), "true", {413}, None),
    ]
    background = LoopbackClient(server.url, clip, fps=15)

    async def go() -> tuple[list[tuple[str, int, dict[str, Any]]], int, int, tuple[int, dict[str, Any]]]:
        results = []
        try:
            await background.connect()
            await asyncio.wait_for(background.first_frame.wait(), 30)
            before = len(background.result.received)
            async with aiohttp.ClientSession() as http:
                for name, data, consent, _, _ in cases:
                    status, body, _ = await _post_photo(http, server.base, data, consent)
                    results.append((name, status, body))
                    await _end(http, server.base, body)
                # a polyglot (PNG + ZIP appended) is accepted as pixels only
                poly_status, poly = await _polyglot(http, server.base, astronaut)
            await until(lambda: len(background.result.received) - before >= 10, 20, "the stream goes on")
            after = len(background.result.received)
            return results, before, after, (poly_status, poly)
        finally:
            await background.close()

    results, before, after, (poly_status, poly) = run(go(), timeout_s=240)
    for (name, _, _, allowed, code), (_, status, body) in zip(cases, results, strict=True):
        assert status in allowed, f"{name}: got {status} {body}"
        assert body.get("message"), f"{name}: the error must say what is wrong"
        if code is not None:
            assert body.get("code") == code, f"{name}: {body}"
    assert poly_status == 201 and poly["stored_is_png"] and not poly["tail_kept"]
    assert after - before >= 10, "a session streaming during the bad uploads should be unaffected"
    state = server.wait_idle()
    assert state["photos_alive"] == 0 and state["reserved"] == 0


async def _polyglot(http: aiohttp.ClientSession, base: str, astronaut: np.ndarray) -> tuple[int, dict[str, bool]]:
    tail = b"PK\x03\x04" + b"zipped secrets" * 10
    status, body, _ = await _post_photo(http, base, _png(astronaut) + tail)
    info = {"stored_is_png": False, "tail_kept": True}
    if status == 201:
        async with http.get(f"{base}/api/sessions/{body['session_id']}/photo",
                            headers={"Authorization": f"Bearer {body['token']}"}) as r:
            stored = await r.read()
            info = {"stored_is_png": r.headers["Content-Type"] == "image/png" and stored.startswith(b"\x89PNG")
                    and r.headers.get("X-Content-Type-Options") == "nosniff",
                    "tail_kept": b"zipped secrets" in stored}
        await _end(http, base, body)
    return status, info


def test_chunked_oversized_upload_is_refused(server: Server) -> None:
    server.wait_idle()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(12 * 16):  # 12 MB in 64 KB chunks, no Content-Length
            yield bytes(64 * 1024)

    async def go() -> int:
        async with aiohttp.ClientSession() as http:
            boundary = "xyzzy"
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\ntrue\r\n"
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode()

            async def body() -> AsyncIterator[bytes]:
                yield head
                async for c in chunks():
                    yield c

            try:
                async with http.post(f"{server.base}/api/sessions", data=body(),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}) as r:
                    return r.status
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                return -1  # the server may close the connection after its 413; the state check below still holds

    status = run(go())
    assert status in (413, -1)
    state = server.wait_idle()
    assert state["photos_alive"] == 0


def test_wrong_content_types_and_broken_forms(server: Server) -> None:
    async def go() -> list[int]:
        async with aiohttp.ClientSession() as http:
            out = []
            async with http.post(f"{server.base}/api/sessions", data=b"photo",
                                 headers={"Content-Type": "text/plain"}) as r:
                out.append(r.status)
            async with http.post(f"{server.base}/api/sessions", data=b"--nope\r\ngarbage",
                                 headers={"Content-Type": "multipart/form-data; boundary=other"}) as r:
                out.append(r.status)
            async with http.post(f"{server.base}/api/sessions", data=b"{not json",
                                 headers={"Content-Type": "application/json"}) as r:
                out.append(r.status)
            async with http.post(f"{server.base}/api/sessions", json={"size": 300}) as r:
                out.append(r.status)
            return out

    statuses = run(go())
    assert statuses[0] == 415 and all(400 <= s < 500 for s in statuses), statuses
    server.wait_idle()


# --- offers ----------------------------------------------------------------------------------
def _sdp_corpus(valid: str, with_audio: str) -> list[tuple[str, bytes]]:
    lines = valid.split("\r\n")
    first_m = next(i for i, line in enumerate(lines) if line.startswith("m="))
    video_start = next(i for i, line in enumerate(lines) if line.startswith("m=video"))

    def env(sdp: str, kind: str = "offer") -> bytes:
        import json

        return json.dumps({"type": kind, "sdp": sdp}).encode()

    def without(prefix: str) -> str:
        return "\r\n".join(line for line in lines if not line.startswith(prefix))

    bogus_codec = "\r\n".join(
        line for line in lines if not (line.startswith("a=rtpmap:") or line.startswith("a=fmtp:")
                                       or line.startswith("a=rtcp-fb:")))
    bogus_codec = bogus_codec.replace("a=mid:0", "a=mid:0\r\na=rtpmap:96 BOGUS/90000")
    audio_only = "\r\n".join(lines[:video_start]) + "\r\n"
    return [
        ("empty body", b""),
        ("not utf-8", b"\xff\xfe\xfa" * 50),
        ("not json", b"v=0 hello"),
        ("json list", b"[]"),
        ("json null", b"null"),
        ("no sdp", b'{"type": "offer"}'),
        ("sdp not a string", b'{"type": "offer", "sdp": 5}'),
        ("wrong type", env(valid, "answer")),
        ("empty sdp", env("")),
        ("not sdp", env("hello\r\nworld\r\n")),
        ("truncated", env(valid[: len(valid) // 2])),
        ("no m= lines", env("\r\n".join(lines[:first_m]) + "\r\n")),
        ("100 m= lines", env(valid + "".join(f"m=video {9 + i} UDP/TLS/RTP/SAVPF 96\r\n" for i in range(100)))),
        ("1 MB sdp", env(valid + "a=x-junk:" + "j" * 2**20 + "\r\n")),
        ("no fingerprint", env(without("a=fingerprint"))),
        ("no ice-ufrag", env(without("a=ice-ufrag"))),
        ("no ice-pwd", env(without("a=ice-pwd"))),
        ("bogus codec", env(bogus_codec)),
        ("audio only", env(audio_only)),
        ("garbage media line", env(re.sub(r"m=video \d+", "m=video banana", valid))),
        ("bad fingerprint", env(valid.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256 ZZ:"))),
        ("bad candidate", env(valid.replace("a=candidate:", "a=candidate:x y z "))),
        ("too many candidates", env(valid.replace("a=end-of-candidates",
                                                  "a=candidate:1 1 UDP 1 127.0.0.1 9 typ host\r\n" * 60 +
                                                  "a=end-of-candidates"))),
        ("two video tracks", env(valid + valid[valid.index("m=video"):])),
        ("with audio, wrong type", env(with_audio, "pranswer")),
    ]


def test_malformed_offers_get_400_never_500(server: Server) -> None:
    server.wait_idle()

    async def go() -> list[tuple[str, int, dict[str, Any]]]:
        valid, with_audio = await valid_offer(), await valid_offer(audio=True)
        out = []
        c = LoopbackClient(server.url, noise_frames())
        try:
            await c.create()
            async with aiohttp.ClientSession() as http:
                for name, body in _sdp_corpus(valid, with_audio):
                    async with http.post(f"{server.base}/api/sessions/{c.session_id}/offer", data=body,
                                         headers={"Authorization": f"Bearer {c.token}",
                                                  "Content-Type": "application/json"}) as r:
                        out.append((name, r.status, await r.json(content_type=None)))
                    if r.status == 200:  # wrongly accepted (the assertion below says so): take a fresh session
                        await c.delete()
                        c.session_id = None
                        await c.create()
                # each line of a valid offer removed in turn: 200 or 4xx, never 5xx
                lines = valid.split("\r\n")
                import json

                for i in range(len(lines)):
                    mutated = "\r\n".join(lines[:i] + lines[i + 1:])
                    async with http.post(f"{server.base}/api/sessions/{c.session_id}/offer",
                                         data=json.dumps({"type": "offer", "sdp": mutated}),
                                         headers={"Authorization": f"Bearer {c.token}"}) as r:
                        out.append((f"line {i} removed", r.status, await r.json(content_type=None)))
                    if r.status in (200, 403):  # accepted (or it failed at once): take a fresh session
                        await c.delete()
                        c.session_id = None
                        await c.create()
            await c.connect()  # the server still serves a good session
            await asyncio.wait_for(c.first_frame.wait(), 30)
        finally:
            await c.close()
        return out

    results = run(go(), timeout_s=240)
    for name, status, body in results:
        print(name, status, body.get("code"), body.get("message", "")[:100])
    corpus_names = {name for name, _ in _sdp_corpus("v=0\r\nm=video 9 x\r\n", "")}
    for name, status, body in results:
        assert status < 500, f"{name}: {status} {body}"
        if name in corpus_names:
            assert status in (400, 413), f"{name}: {status} {body}"
            assert body.get("message"), name
    state = server.wait_idle()
    assert state["photos_alive"] == 0


# --- origin, static files, limits ------------------------------------------------------------
def test_foreign_origins_are_refused(server: Server) -> None:
    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            evil = {"Origin": "https://evil.example"}
            async with http.post(f"{server.base}/api/sessions", json={}, headers=evil) as r:
                out["create"] = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            async with http.options(f"{server.base}/api/sessions",
                                    headers={**evil, "Access-Control-Request-Method": "POST"}) as r:
                out["preflight"] = (r.status, r.headers.get("Access-Control-Allow-Origin"))
            async with http.post(f"{server.base}/api/sessions/x/offer", json={}, headers=evil) as r:
                out["offer"] = r.status
            async with http.post(f"{server.base}/api/sessions", json={}, headers={"Origin": server.base}) as r:
                out["same"] = r.status
                await _end(http, server.base, await r.json())
        return out

    out = run(go())
    assert out["create"] == (403, None) and out["preflight"] == (403, None) and out["offer"] == 403
    assert out["same"] == 201
    server.wait_idle()


def test_static_files_without_path_traversal(server: Server) -> None:
    async def go() -> dict[str, Any]:
        out = {}
        async with aiohttp.ClientSession() as http:
            for name, path in [("traversal", "/static/../pyproject.toml"),
                               ("encoded", "/static/%2e%2e%2fpyproject.toml"),
                               ("double", "/static/..%252f..%252fpyproject.toml"), ("abs", "/static//etc/passwd"),
                               ("py", "/static/app.py"), ("init", "/static/__init__.py"),
                               ("backslash", "/static/..%5c..%5cpyproject.toml")]:
                async with http.get(URL(server.base + path, encoded=True)) as r:
                    out[name] = (r.status, b"[project]" in await r.read())
            async with http.get(f"{server.base}/static/app.js") as r:
                out["app.js"] = (r.status, r.headers.get("X-Content-Type-Options"))
            async with http.get(f"{server.base}/") as r:
                out["index"] = (r.status, "script-src 'self'" in r.headers.get("Content-Security-Policy", ""))
        return out

    out = run(go())
    for name in ("traversal", "encoded", "double", "abs", "py", "init", "backslash"):
        assert out[name][0] == 404 and not out[name][1], (name, out[name])
    assert out["app.js"] == (200, "nosniff") and out["index"] == (200, True)


def test_capacity_503_and_rate_limit_429(tmp_path: Path) -> None:
    tight = start_server(tmp_path / "tight.log", "--max-sessions", "1", "--create-rate", "3", "--create-burst", "3")
    try:
        async def go() -> list[tuple[int, str | None]]:
            out = []
            async with aiohttp.ClientSession() as http:
                async def create() -> dict[str, Any]:
                    async with http.post(f"{tight.base}/api/sessions") as r:
                        out.append((r.status, r.headers.get("Retry-After")))
                        return await r.json()

                first = await create()  # 201
                await create()  # 503: full
                await _end(http, tight.base, first)
                third = await create()  # 201
                await _end(http, tight.base, third)
                await create()  # 429: 3 per minute from this address
            return out

        out = run(go())
        assert [s for s, _ in out] == [201, 503, 201, 429], out
        assert out[1][1] is not None and out[3][1] is not None and int(out[3][1]) >= 1, "Retry-After is required"
    finally:
        stop_server(tight)


ABUSE_CODES = {"bad_message", "unknown_type", "bad_value"}


def _error_codes(client: LoopbackClient) -> list[str | None]:
    return [m.get("code") for m in client.result.messages if m.get("type") == "error"]


def test_data_channel_abuse_is_contained(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    c = LoopbackClient(server.url, clip, fps=15)

    async def go() -> tuple[int, int, dict[str, Any], bool]:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 30)
            # larger messages cannot be sent: the answer announces a 64 KiB limit, which aiortc (and browsers)
            # keep to; a client that breaks it is ended (test_server_hostile.py)
            assert c.pc.sctp._remote_max_message_size == 65536
            c.send("x" * 60_000)
            c.send("{not json")
            c.send('"a string"')
            c.send('{"type": "launch_missiles"}')
            c.send('{"type": "set", "size": 1000}')
            c.send('{"type": "set", "mode": "sideways"}')
            for i in range(300):  # a flood: over the per-second limit
                c.send({"type": "ping", "t": i})
            await until(lambda: ABUSE_CODES <= set(_error_codes(c)), 20, "an error for each bad message")
            before = len(c.result.received)
            await until(lambda: len(c.result.received) - before >= 5, 20, "the stream goes on")
            state = await asyncio.to_thread(
                server.wait_for, lambda s: any(p["dropped_messages"] for p in s["per_session"]), 20, "the flood cut")
            return before, len(c.result.received), state, c.ended.is_set()
        finally:
            await c.close()

    before, after, state, ended = run(go())
    codes = _error_codes(c)
    assert ABUSE_CODES <= set(codes), codes
    assert after - before >= 5, "the stream must go on"
    assert not ended, "abuse is refused message by message; the session goes on"
    assert state["per_session"][0]["dropped_messages"] > 0, "a flood is cut by the rate limit"
    server.wait_idle()
