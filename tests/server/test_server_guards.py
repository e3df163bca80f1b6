"""The server's guards on their own (in this process, seconds): Host names, client addresses behind a proxy,
rate limiter pruning, the bounded decoder queue and the VP8 size check, the SCTP reassembly cap, the
microphone drain, and the photo's decoding child with its memory and time limits."""
from __future__ import annotations

import asyncio
import io
import resource
import struct
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import make_mocked_request

from enliven.engine.errors import BadImageError, ImageTooLargeError, UnsupportedFormatError
from enliven.server._aiortc_guards import BoundedDecoderQueue, cap_sctp_reassembly, vp8_key_frame_size
from enliven.server.config import ServerConfig
from enliven.server.decoding import DecodeLimits, decode_blocking
from enliven.server.http_guards import ClientAddresses, RateLimiter, host_allowed

MiB = 2**20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int) -> bytes:
    """A small PNG whose header claims side x side pixels (its first rows only: zeros)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1) * 64, 9)) + _chunk(b"IEND", b""))


def test_host_names_that_are_served() -> None:
    """DNS rebinding: a foreign name pointed at this server is refused; IP addresses and localhost are not."""
    config = ServerConfig(allowed_hosts=("Enliven.Example.org",))
    for host in ("127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "localhost:8080", "LOCALHOST", "app.localhost:1",
                 "192.168.1.5:8080", "enliven.example.org", "enliven.example.org.:443"):
        assert host_allowed(host, config), host
    for host in (None, "", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example",
                 "enliven.example.org.evil.example", "[::1"):
        assert not host_allowed(host, config), host


def _request(remote: str, forwarded: list[str] | None = None) -> Any:
    headers = [("X-Forwarded-For", f) for f in forwarded or []]
    from multidict import CIMultiDict

    return make_mocked_request("GET", "/", headers=CIMultiDict(headers), transport=SimpleNamespace(
        get_extra_info=lambda name, default=None: (remote, 1234) if name == "peername" else default))


def test_client_address_behind_a_trusted_proxy_only() -> None:
    direct = ClientAddresses(())
    assert direct.key(_request("203.0.113.9", ["1.2.3.4"])) == "203.0.113.9", "X-Forwarded-For is ignored"
    proxied = ClientAddresses(("10.0.0.1", "10.0.1.0/24"))
    assert proxied.key(_request("203.0.113.9", ["1.2.3.4"])) == "203.0.113.9", "only from the trusted proxy"
    assert proxied.key(_request("10.0.0.1", ["1.2.3.4"])) == "1.2.3.4"
    assert proxied.key(_request("10.0.0.1", ["6.6.6.6, 1.2.3.4"])) == "1.2.3.4", "the client's own entry is not believed"
    assert proxied.key(_request("10.0.0.1", ["6.6.6.6", "1.2.3.4, 10.0.1.7"])) == "1.2.3.4", "proxies chained"
    assert proxied.key(_request("10.0.0.1", ["garbage"])) == "10.0.0.1"
    assert proxied.key(_request("10.0.0.1")) == "10.0.0.1"
    v6 = direct.key(_request("2001:db8:1:2:3:4:5:6"))
    assert v6 == "2001:db8:1:2::/64" == direct.key(_request("2001:db8:1:2:ffff::1")), "IPv6 counts per /64"
    assert direct.key(_request("::ffff:192.0.2.1")) == "192.0.2.1"


def test_rate_limiter_forgets_idle_addresses_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import enliven.server.http_guards as guards

    now = [1000.0]
    monkeypatch.setattr(guards.time, "monotonic", lambda: now[0])
    rl = RateLimiter(rate_per_min=60, burst=2, max_keys=100)
    for i in range(50):
        rl.take(f"10.0.0.{i}")
    assert len(rl) == 50
    now[0] += 1.0
    rl.prune()
    assert len(rl) == 50, "buckets not yet full again are kept"
    now[0] += 10.0
    rl.prune()
    assert len(rl) == 0, "idle addresses are forgotten"
    for i in range(1000):  # a flood of fresh addresses: the table never exceeds max_keys
        rl.take(f"addr-{i}")
        assert len(rl) <= 100
    rl.prune(min_interval_s=60.0)
    assert len(rl) > 0, "pruning waits for its interval"


def _vp8_key_frame(width: int, height: int) -> bytes:
    return bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(20)


def test_vp8_key_frame_size_is_read_from_its_header() -> None:
    assert vp8_key_frame_size(_vp8_key_frame(640, 480)) == (640, 480)
    assert vp8_key_frame_size(_vp8_key_frame(16383, 16383)) == (16383, 16383)
    assert vp8_key_frame_size(b"\x01" + bytes(20)) is None  # an inter frame
    assert vp8_key_frame_size(b"\x10\x02\x00nope" + bytes(20)) is None
    assert vp8_key_frame_size(b"") is None


def test_decoder_queue_is_bounded_and_drops_oversized_frames() -> None:
    vp8 = SimpleNamespace(name="VP8")
    drops: list[str] = []
    q = BoundedDecoderQueue(max_frames=4, max_pixels=1920 * 1080, on_drop=drops.append)
    inter = SimpleNamespace(data=b"\x01" + bytes(30))
    for _ in range(20):  # a decoder that fell behind: at most 4 wait
        q.put((vp8, inter))
    assert q.qsize() == 4 and drops.count("behind") == 16
    q.put(None)  # the stop signal always gets in
    assert q.qsize() == 5
    q = BoundedDecoderQueue(max_frames=4, max_pixels=1920 * 1080, on_drop=drops.append)
    drops.clear()
    q.put((vp8, SimpleNamespace(data=_vp8_key_frame(4096, 4096))))
    q.put((vp8, inter))  # depends on the oversized key frame: dropped too
    assert q.qsize() == 0 and drops == ["oversized", "oversized"]
    q.put((vp8, SimpleNamespace(data=_vp8_key_frame(640, 480))))
    q.put((vp8, inter))
    assert q.qsize() == 2, "a key frame of an acceptable size resumes decoding"


def test_sctp_reassembly_is_capped() -> None:
    from aiortc.rtcsctptransport import InboundStream

    received: list[Any] = []
    violations: list[str] = []

    class Sctp:
        def __init__(self) -> None:
            self._inbound_streams: dict[int, InboundStream] = {}

        async def _receive_data_chunk(self, chunk: Any) -> None:
            self._inbound_streams.setdefault(chunk.stream_id, InboundStream()).reassembly.append(chunk)
            received.append(chunk)

    sctp = Sctp()
    assert cap_sctp_reassembly(sctp, max_message_bytes=3000, max_streams=2, on_violation=violations.append)

    def chunk(stream: int, size: int) -> Any:
        return SimpleNamespace(stream_id=stream, user_data=bytes(size), tsn=len(received))

    async def go() -> None:
        await sctp._receive_data_chunk(chunk(0, 1200))
        await sctp._receive_data_chunk(chunk(0, 1200))
        await sctp._receive_data_chunk(chunk(0, 1200))  # 3600 > 3000: refused
        await sctp._receive_data_chunk(chunk(1, 100))
        await sctp._receive_data_chunk(chunk(2, 100))  # a third stream: refused

    asyncio.run(go())
    assert len(received) == 3 and len(violations) == 1, "refused chunks are not reassembled; reported once"
    assert cap_sctp_reassembly(object(), 1, 1, violations.append) is False, "an unknown transport is left alone"


def test_microphone_is_drained_even_when_nobody_sends_it_back() -> None:
    from fractions import Fraction

    import av
    from aiortc.mediastreams import MediaStreamTrack

    from enliven.server.tracks import DelayedAudioTrack

    class Burst(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        async def recv(self) -> av.AudioFrame:
            await asyncio.sleep(0.002)  # ten times faster than real time: 0.2 s of sound per 20 ms
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, self.n * 960, Fraction(1, 48000)
            self.n += 1
            return frame

    async def go() -> tuple[int, int, int]:
        source = Burst()
        track = DelayedAudioTrack(source, lambda: 0.1, max_delay_s=0.1, max_held_s=0.2)
        task = asyncio.ensure_future(track.drain())
        await asyncio.sleep(0.5)  # nobody calls recv(): the sender never started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return source.n, len(track._held), track.dropped

    read, held, dropped = asyncio.run(go())
    assert read > 50, "the source is read as fast as it gives sound"
    assert held <= 10 and dropped >= read - 10, f"held {held} of {read}: at most 0.2 s of sound is held"


# --- decoding child ----------------------------------------------------------------------------
LIMITS = DecodeLimits(max_bytes=10 * MiB, max_pixels=25_000_000, memory_bytes=1024 * MiB, cpu_s=3)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def test_decoding_child_returns_pixels_or_the_refusal(astronaut: np.ndarray) -> None:
    out = decode_blocking(_png(astronaut), LIMITS)
    assert out.shape == astronaut.shape and out.dtype == np.uint8 and np.array_equal(out, astronaut)
    with pytest.raises(UnsupportedFormatError):
        decode_blocking(b"hello, this is not a photo\n" * 10, LIMITS)
    with pytest.raises(BadImageError):
        decode_blocking(_png(astronaut)[:2000], LIMITS)
    with pytest.raises(ImageTooLargeError):
        decode_blocking(png_bomb(14000), LIMITS)


def test_decoding_child_is_stopped_by_its_memory_limit() -> None:
    """A 16-bit RGBA PNG of 12 MP passes the byte and pixel limits, but its decoding needs several hundred MB:
    with 64 MB allowed, the child runs out and the upload is refused; this process allocates nothing."""
    side = 3500
    ramp = np.tile(np.arange(side, dtype=np.uint16)[None, :] * 18, (side, 1))
    rgba16 = np.stack([ramp, ramp.T, ramp, np.full_like(ramp, 40000)], axis=2)
    import cv2  # Pillow does not write 16-bit RGBA PNGs

    ok, encoded = cv2.imencode(".png", rgba16, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    data = encoded.tobytes()
    assert len(data) < LIMITS.max_bytes
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError) as e:
        decode_blocking(data, DecodeLimits(LIMITS.max_bytes, LIMITS.max_pixels, memory_bytes=64 * MiB, cpu_s=10))
    assert "MB" in str(e.value) or "CPU" in str(e.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000, "decoded elsewhere (KB)"
    out = decode_blocking(data, LIMITS)  # with the default limit it decodes
    assert out.shape == (side, side, 3)


def test_model_file_error_is_the_servers_fault_without_details() -> None:
    from enliven.engine.errors import ModelFileError, NoFaceError
    from enliven.server.http_guards import HttpError

    e = HttpError.from_engine(ModelFileError("/opt/secret/path/refiner128.pt: sha256 mismatch"))
    assert (e.status, e.code) == (503, "server_misconfigured") and "/opt" not in e.message and e.headers["Retry-After"]
    assert HttpError.from_engine(NoFaceError("no face")).status == 422


def test_sessions_end_at_their_maximum_length() -> None:
    from enliven.server.sessions import Registry, Session, SessionState

    registry = Registry(ServerConfig(max_session_s=5.0, idle_timeout_s=600, heartbeat_timeout_s=600))
    s = Session(id="x" * 22, token="t" * 43, engine=None, photo_kind="builtin")  # type: ignore[arg-type]
    s.state, s.connected_s = SessionState.CONNECTED, s.created_s
    s.last_message_s = s.stats.last_in_s = s.created_s + 5.5  # active to the end: the length alone ends it
    assert registry.timed_out(s, s.created_s + 4.9) is None
    assert registry.timed_out(s, s.created_s + 5.1) == "maximum session length"
