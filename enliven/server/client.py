"""A Python aiortc client of the server: a synthetic webcam in, the animated stream out.

Used by the loopback tests and the load benchmark (benchmarks/load.py), and runnable by hand:
``python -m enliven.server.client http://127.0.0.1:8080/ --seconds 10``.

Each sent frame carries its number as a block barcode in its top 16 rows (16x16-pixel blocks,
which survive VP8). A server started with ``--echo-frame-ids`` copies those rows into its output,
so the client can tell which webcam frame each animated frame was made from and measure the
true glass-to-glass latency on one clock (client and server on the same host).

Given ``points`` (face landmarks per frame, as a page's in-browser landmarker measures them), the client
sends no video: it offers a receive-only video section and sends the points on the ``points`` data
channel (points.py), paced like a camera; the server then draws each message's frame id into its output.
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ._jitter import use_low_latency_jitter_buffer
from .frame_ids import ID_BITS, ID_BLOCK_PX, read_id, stamp_id
from .points import encode_points

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
_LUMA_FIRST = ("yuv420p", "yuvj420p", "nv12")  # decoded formats whose first plane is the luma (Y), one byte a pixel


def top_luma(frame: av.VideoFrame, rows: int) -> np.ndarray:
    """The top ``rows`` rows of a decoded frame's luma, (rows, W) uint8: a view of its Y plane (aiortc's
    decoders give yuv420p), so reading a frame id costs no conversion of the whole frame to RGB."""
    if frame.format.name not in _LUMA_FIRST:
        return frame.to_ndarray(format="gray")[:rows]
    plane = frame.planes[0]
    rows = min(rows, frame.height)
    return np.frombuffer(plane, np.uint8, rows * plane.line_size).reshape(rows, plane.line_size)[:, :frame.width]


class ServerRefused(Exception):
    """The server answered an HTTP request with an error status."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(f"{status} {body.get('code', '')}: {body.get('message', '')}")
        self.status, self.body, self.headers = status, body, headers


class ClipTrack(MediaStreamTrack):
    """A synthetic webcam: ``frames`` (or ``frames(i)``) looped at ``fps``, each stamped with its number."""

    kind = "video"

    def __init__(self, frames: Sequence[np.ndarray] | Callable[[int], np.ndarray], fps: float = 25.0,
                 stamp: bool = True) -> None:
        super().__init__()
        self._frames = frames
        self.fps = fps
        self.stamp = stamp
        self.sent_s: dict[int, float] = {}  # frame id -> time.monotonic() when handed to the encoder
        self.count = 0
        self.paused = False  # while True, no frames are sent (an idle webcam)
        self._epoch: float | None = None  # time of the first frame: pts are wall-clock based
        self._next: float | None = None  # when the next frame is due

    def image(self, i: int) -> np.ndarray:
        frames = self._frames
        return frames(i) if callable(frames) else frames[i % len(frames)]

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while self.paused:
            await asyncio.sleep(0.05)
            self._next = None
        now = time.monotonic()
        if self._epoch is None:
            self._epoch = now
        if self._next is None or self._next < now - 1.0:  # (re)start the pacing after a pause or a stall
            self._next = now
        wait = self._next - now
        if wait > 0:
            await asyncio.sleep(wait)
        self._next += 1.0 / self.fps  # fps may change between frames (the server's hint)
        i = self.count
        image = self.image(i)
        if self.stamp:
            image = image.copy()
            stamp_id(image, i % (1 << ID_BITS))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = int((time.monotonic() - self._epoch) * 90_000)
        frame.time_base = VIDEO_TIME_BASE
        self.sent_s[i % (1 << ID_BITS)] = time.monotonic()
        self.count += 1
        return frame


class PointsSender:
    """A page's landmarker stand-in: ``points`` ((478, 3) pixels or None per frame) looped at ``fps`` as
    points messages on a data channel; the same pacing, pause and frame-rate hint as ClipTrack."""

    def __init__(self, points: Sequence[np.ndarray | None], fps: float = 25.0, size: tuple[int, int] = (640, 480)
                 ) -> None:
        self.points = points
        self.fps = fps
        self.size = size  # (width, height) of the frames the points were measured on
        self.sent_s: dict[int, float] = {}  # frame id (mod 2**ID_BITS) -> time.monotonic() when sent
        self.count = 0
        self.paused = False  # while True, nothing is sent (a stalled landmarker)

    def message(self, i: int) -> bytes:
        return encode_points(i, time.time() * 1e3, *self.size, self.points[i % len(self.points)])

    async def run(self, channel: Any) -> None:
        """Send one message per frame until the channel closes (or the task is cancelled)."""
        next_s = time.monotonic()
        while channel.readyState == "open":
            if self.paused:
                await asyncio.sleep(0.05)
                next_s = time.monotonic()
                continue
            next_s = max(next_s + 1.0 / self.fps, time.monotonic() - 1.0)
            await asyncio.sleep(max(0.0, next_s - time.monotonic()))
            if channel.readyState != "open":
                return
            i = self.count
            channel.send(self.message(i))
            self.sent_s[i % (1 << ID_BITS)] = time.monotonic()
            self.count += 1


class ToneTrack(MediaStreamTrack):
    """A microphone stand-in: a 440 Hz tone, 20 ms frames of 48 kHz mono s16."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        rate, samples = 48_000, 960
        now = time.monotonic()
        if self._start is None:
            self._start = now
        wait = self._start + self._n * samples / rate - now
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(samples) + self._n * samples) / rate
        pcm = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._n * samples
        frame.time_base = fractions.Fraction(1, rate)
        self._n += 1
        return frame


@dataclass
class Received:
    t_s: float  # time.monotonic() when the frame came out of the decoder
    frame_id: int | None  # the echoed webcam frame number, if the server echoes ids
    latency_ms: float | None  # glass-to-glass: sent -> received, when the id is known
    width: int
    height: int


@dataclass
class ClientResult:
    received: list[Received] = field(default_factory=list)
    kept: list[np.ndarray] = field(default_factory=list)  # a copy of every keep_every-th received frame
    messages: list[dict[str, Any]] = field(default_factory=list)  # data-channel messages from the server
    audio_frames: int = 0


class LoopbackClient:
    """One client session against a running server at ``base_url`` (e.g. ``http://127.0.0.1:8080/``)."""

    def __init__(self, base_url: str, frames: Sequence[np.ndarray] | Callable[[int], np.ndarray], fps: float = 25.0,
                 photo: bytes | None = None, consent: bool = True, audio: bool = False, keep_every: int = 0,
                 heartbeat: bool = True, size: int | None = None, http: aiohttp.ClientSession | None = None,
                 low_latency: bool = True, follow_hints: bool = True, audio_send_only: bool = False,
                 points: Sequence[np.ndarray | None] | None = None) -> None:
        self.base = base_url.rstrip("/")
        # points given: face points on the "points" channel instead of video (frames is then unused)
        self.track: ClipTrack | PointsSender = ClipTrack(frames, fps) if points is None else PointsSender(points, fps)
        self.points_channel: Any = None
        self.max_fps = fps
        self.follow_hints = follow_hints  # send fewer frames when the server says it cannot keep up, as the page does
        self.photo, self.consent, self.audio, self.size = photo, consent, audio, size
        self.audio_send_only = audio_send_only  # offer the microphone without asking for it back
        self.keep_every = keep_every
        self.heartbeat = heartbeat
        self.low_latency = low_latency  # release received frames on the RTP marker bit, as browsers do
        self.result = ClientResult()
        self.session_id: str | None = None
        self.token: str | None = None
        self.created: dict[str, Any] = {}
        self.pc: RTCPeerConnection | None = None
        self.channel: Any = None
        self.hello = asyncio.Event()
        self.first_frame = asyncio.Event()
        self.ended = asyncio.Event()  # the server said bye or the connection closed
        self._http = http
        self._own_http = http is None
        self._tasks: list[asyncio.Task[Any]] = []

    # --- HTTP ----------------------------------------------------------------------------------
    async def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def create(self) -> dict[str, Any]:
        """POST /api/sessions. Raises ServerRefused on an error status."""
        http = await self.http()
        if self.photo is not None:
            form = aiohttp.FormData()
            form.add_field("consent", "true" if self.consent else "false")
            if self.size is not None:
                form.add_field("size", str(self.size))
            form.add_field("photo", self.photo, filename="photo", content_type="application/octet-stream")
            ctx = http.post(f"{self.base}/api/sessions", data=form)
        else:
            ctx = http.post(f"{self.base}/api/sessions", json={} if self.size is None else {"size": self.size})
        async with ctx as r:
            body = await _json(r)
            if r.status != 201:
                raise ServerRefused(r.status, body, dict(r.headers))
        self.created = body
        self.session_id, self.token = body["session_id"], body["token"]
        return body

    async def delete(self) -> int:
        http = await self.http()
        async with http.delete(f"{self.base}/api/sessions/{self.session_id}",
                               headers={"Authorization": f"Bearer {self.token}"}) as r:
            return r.status

    # --- WebRTC --------------------------------------------------------------------------------
    async def connect(self, offer_token: str | None = None) -> None:
        """Create the session if needed, then offer/answer; returns once the answer is applied."""
        if self.session_id is None:
            await self.create()
        pc = RTCPeerConnection()
        self.pc = pc
        self.channel = pc.createDataChannel("control")
        self._wire_channel()
        if isinstance(self.track, PointsSender):
            pc.addTransceiver("video", direction="recvonly")
            self.points_channel = pc.createDataChannel("points", ordered=False, maxRetransmits=0)
        else:
            pc.addTrack(self.track)
        if self.audio:
            if self.audio_send_only:
                pc.addTransceiver(ToneTrack(), direction="sendonly")
            else:
                pc.addTrack(ToneTrack())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.low_latency:
                for t in pc.getTransceivers():
                    if t.receiver.track is track:
                        use_low_latency_jitter_buffer(t.receiver)
            self._tasks.append(asyncio.ensure_future(self._receive(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.ended.set()

        await pc.setLocalDescription(await pc.createOffer())
        http = await self.http()
        token = self.token if offer_token is None else offer_token
        async with http.post(f"{self.base}/api/sessions/{self.session_id}/offer",
                             json={"type": "offer", "sdp": pc.localDescription.sdp},
                             headers={"Authorization": f"Bearer {token}"}) as r:
            body = await _json(r)
            if r.status != 200:
                raise ServerRefused(r.status, body, dict(r.headers))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    def _wire_channel(self) -> None:
        ch = self.channel

        @ch.on("open")
        def on_open() -> None:
            ch.send(json.dumps({"type": "hello", "token": self.token}))
            if self.heartbeat:
                self._tasks.append(asyncio.ensure_future(self._ping()))
            if isinstance(self.track, PointsSender):
                self._tasks.append(asyncio.ensure_future(self._send_points()))

        @ch.on("message")
        def on_message(raw: str | bytes) -> None:
            try:
                msg = json.loads(raw)
            except ValueError:
                return
            msg["_t"] = time.monotonic()
            self.result.messages.append(msg)
            if msg.get("type") == "hello":
                self.hello.set()
            elif msg.get("type") == "hint" and self.follow_hints and isinstance(msg.get("max_fps"), (int, float)):
                self.track.fps = max(1.0, min(self.max_fps, float(msg["max_fps"])))
            elif msg.get("type") == "bye":
                self.ended.set()

        @ch.on("close")
        def on_close() -> None:
            self.ended.set()

    def send(self, message: dict[str, Any] | str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def _send_points(self) -> None:
        """Send points once the server said hello (messages before it are not taken)."""
        await self.hello.wait()
        ch = self.points_channel
        while ch.readyState == "connecting":
            await asyncio.sleep(0.02)
        assert isinstance(self.track, PointsSender)
        await self.track.run(ch)

    async def _ping(self) -> None:
        while self.heartbeat and self.channel is not None and self.channel.readyState == "open":
            self.send({"type": "ping", "t": time.monotonic() * 1e3})
            await asyncio.sleep(1.0)

    async def _receive(self, track: MediaStreamTrack) -> None:
        n = 0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "audio":
                self.result.audio_frames += 1
                continue
            fid = read_id(top_luma(frame, ID_BLOCK_PX))
            sent = self.track.sent_s.get(fid) if fid is not None else None
            latency = (now - sent) * 1e3 if sent is not None and now >= sent else None
            self.result.received.append(Received(now, fid, latency, frame.width, frame.height))
            if self.keep_every and n % self.keep_every == 0:
                self.result.kept.append(frame.to_ndarray(format="rgb24"))
            n += 1
            self.first_frame.set()

    async def close(self) -> None:
        """Close the peer connection (the server notices and ends the session) and the HTTP client."""
        self.heartbeat = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        if self._own_http and self._http is not None:
            await self._http.close()

    # --- figures -------------------------------------------------------------------------------
    def fps(self, since_s: float | None = None) -> float:
        """Received frames per second, from ``since_s`` (monotonic) or the first frame, to the last."""
        times = [r.t_s for r in self.result.received if since_s is None or r.t_s >= since_s]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def latencies_ms(self, since_s: float | None = None) -> list[float]:
        return [r.latency_ms for r in self.result.received
                if r.latency_ms is not None and (since_s is None or r.t_s >= since_s)]


async def _json(r: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await r.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}


def noise_frames(width: int = 640, height: int = 480, count: int = 8) -> list[np.ndarray]:
    """Cheap frames with no face (for clients that only need a stream)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]


async def _main(args: argparse.Namespace) -> int:
    if args.face:
        from enliven.fixtures import driving_frames  # renders the clip with MediaPipe: only for --face

        frames: Sequence[np.ndarray] = driving_frames(640, 480, fps=args.fps)
    else:
        frames = noise_frames()
    client = LoopbackClient(args.url, frames, fps=args.fps)
    await client.connect()
    await asyncio.wait_for(client.first_frame.wait(), 30)
    print(f"connected session {client.session_id[:8]}", flush=True)  # type: ignore[index]
    try:
        await asyncio.wait_for(client.ended.wait(), args.seconds)
    except TimeoutError:
        pass
    print(f"received {len(client.result.received)} frames, {client.fps():.1f} fps", flush=True)
    await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m enliven.server.client", description=__doc__.split("\n")[0])
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8080/")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--face", action="store_true", help="send the built-in face clip (else noise)")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
