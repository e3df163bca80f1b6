"""The server's parts on their own: newest-frame slot, jitter buffer, rate limiter, frame ids, offer checks,
config, CLI, frame-rate hints, the delayed microphone."""
from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from enliven.engine.choices import CROP_SIZES_PX, ENGINES
from enliven.server import app
from enliven.server._jitter import MarkerJitterBuffer
from enliven.server.cli import add_serve_parser, config_from_args
from enliven.server.client import read_id, stamp_id, top_luma
from enliven.server.config import ServerConfig
from enliven.server.http_guards import HttpError, RateLimiter
from enliven.server.session_animator import InferenceOptions
from enliven.server.signalling import check_offer_sdp
from enliven.server.tracks import NewestSlot, SlotClosed


def test_newest_slot_keeps_only_the_newest() -> None:
    async def go() -> tuple[list[int], int, int]:
        slot: NewestSlot[int] = NewestSlot()
        for i in range(10):
            slot.put(i)
        first = await slot.get()
        waiter = asyncio.ensure_future(slot.get())
        await asyncio.sleep(0)
        slot.put(42)
        second = await waiter
        slot.close()
        try:
            await slot.get()
            closed = 0
        except SlotClosed:
            closed = 1
        return [first, second], slot.dropped, closed

    got, dropped, closed = asyncio.run(go())
    assert got == [9, 42] and dropped == 9 and closed == 1


def test_a_session_waiting_for_its_shared_worker_animates_the_newest_points() -> None:
    """Two sessions share a worker: while one waits for the other's frame, its page's next points arrive. The
    request is made once the worker is free, from those newer points (the older ones count as dropped)."""
    import threading

    from enliven.server.engines import ProcessEngine
    from enliven.server.points import InputPoints, PointsMessage
    from enliven.server.protocol import FrameReply, PointsRequest
    from enliven.server.session_animator import EngineSettings

    def points(frame_id: int) -> InputPoints:
        return InputPoints(PointsMessage(frame_id, 0.0, 640, 480, None), arrived_s=float(frame_id))

    sent: list[PointsRequest] = []

    class BusyWorker:  # the other session's frame is running: a newer message comes before this one can start
        def __init__(self, slot: NewestSlot[InputPoints]) -> None:
            self.slot = slot

        def call(self, request: object) -> FrameReply:
            done = threading.Event()
            loop.call_soon_threadsafe(lambda: (self.slot.put(points(8)), done.set()))
            done.wait(5)
            made = request() if callable(request) else request
            sent.append(made)
            i420 = bytes(256 * 256 * 3 // 2)
            return FrameReply(256, False, 1.0, EngineSettings(), i420)

    async def go() -> None:
        slot: NewestSlot[InputPoints] = NewestSlot()
        engine = ProcessEngine("s", EngineSettings(), pool=None)  # type: ignore[arg-type]
        engine._worker = BusyWorker(slot)  # type: ignore[assignment]
        slot.put(points(7))
        first = await slot.get()
        out = await engine.animate(first, slot.take_newer)
        assert out.arrived_s == 8.0 and slot.dropped == 1 and slot.depth == 0
        assert slot.take_newer() is None and slot.dropped == 1
        engine._worker = None
        await engine.close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(go())
    finally:
        loop.close()
    assert [r.frame_id for r in sent] == [8]


def _packet(seq: int, ts: int, marker: bool, data: bytes = b"x") -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]
    return p


def test_marker_jitter_buffer_releases_a_frame_on_its_last_packet() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(10, 1000, False, b"a"))[1] is None
    _, frame = jb.add(_packet(11, 1000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 1000  # no wait for the next frame
    # a lost marker: the next frame's first packet completes it (aiortc's behaviour)
    jb.add(_packet(12, 2000, False, b"c"))
    _, frame = jb.add(_packet(13, 3000, False, b"d"))
    assert frame is not None and frame.data == b"c" and frame.timestamp == 2000
    # padding-only packets are dropped, not handed to the decoder
    _, frame = jb.add(_packet(14, 3000, True, b""))
    assert frame is not None and frame.data == b"d"
    _, frame = jb.add(_packet(15, 3000, True, b""))
    assert frame is None


def test_rate_limiter_bucket() -> None:
    rl = RateLimiter(rate_per_min=60, burst=2)
    assert rl.take("a") == 0 and rl.take("a") == 0
    wait = rl.take("a")
    assert 0 < wait <= 1.0
    assert rl.take("b") == 0  # per address
    with pytest.raises(HttpError) as e:
        rl.check("a", "sessions created")
    assert e.value.status == 429 and int(e.value.headers["Retry-After"]) >= 1


def test_frame_id_barcode_round_trip_survives_noise() -> None:
    rng = np.random.default_rng(0)
    for fid in (0, 1, 1234, 4095):
        img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        stamp_id(img, fid)
        noisy = np.clip(img.astype(np.int16) + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
        assert read_id(noisy) == fid
    assert read_id(np.full((256, 256, 3), 128, np.uint8)) is None
    assert read_id(np.zeros((8, 8, 3), np.uint8)) is None
    assert read_id(np.full((256, 256), 128, np.uint8)) is None


def test_frame_id_is_read_from_the_decoded_luma_as_from_rgb() -> None:
    """The client reads ids from the Y plane of decoded VP8 frames (top_luma): the same ids as from RGB."""
    import fractions

    import av
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    for i, planes in enumerate(_moving_frames(12)):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vp8_depayload(p) for p in payloads)
        (out,) = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
        assert out.format.name == "yuv420p"
        luma = top_luma(out, 16)
        assert luma.shape == (16, 256)
        assert read_id(luma) == read_id(out.to_ndarray(format="rgb24")) == i
    rgb = av.VideoFrame.from_ndarray(_moving_frames(1)[0], format="yuv420p").reformat(format="rgb24")
    assert read_id(top_luma(rgb, 16)) == 0  # other formats: converted to grey first


FINGERPRINT = ":".join(["AB"] * 32)
GOOD_OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
              f"a=fingerprint:sha-256 {FINGERPRINT}\r\na=ice-ufrag:abcd\r\na=ice-pwd:{'p' * 22}\r\n"
              "a=setup:actpass\r\n"
              "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\n"
              "a=rtpmap:96 VP8/90000\r\n"
              "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
              "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
              "a=sctp-port:5000\r\n")


def _refused(sdp: str, config: ServerConfig | None = None) -> str:
    with pytest.raises(HttpError) as e:
        check_offer_sdp(sdp, config or ServerConfig())
    assert e.value.status == 400
    return e.value.message


def test_offer_check_parses_as_aiortc_does() -> None:
    checked = check_offer_sdp(GOOD_OFFER, ServerConfig())
    assert checked.kinds == ("video", "application") and checked.candidates == 1
    audio = GOOD_OFFER.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111").replace(
        "a=rtpmap:96 VP8/90000", "a=rtpmap:111 opus/48000/2")
    assert check_offer_sdp(audio, ServerConfig()).kinds == ("audio", "application"), (
        "a data channel and a microphone without a webcam (landmarks mode) pass the structural check")
    extra_video = "m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:2\r\na=rtcp-mux\r\na=rtpmap:97 VP8/90000\r\n"
    for name, bad in [
        ("empty", ""), ("not sdp", "hello"),
        ("no data channel", GOOD_OFFER[:GOOD_OFFER.index("m=application")]),
        ("two data channels", GOOD_OFFER + GOOD_OFFER[GOOD_OFFER.index("m=application"):].replace(
            "a=mid:1", "a=mid:2")),
        ("two videos", GOOD_OFFER + extra_video),
        # hidden from a line regex: aiortc's parser also splits on a lone CR, form feed, NEL, U+2028...
        ("video after a lone CR", GOOD_OFFER.replace("a=sctp-port:5000\r\n", "a=sctp-port:5000\r" +
                                                      extra_video.replace("\r\n", "\r"))),
        ("video after U+2028", GOOD_OFFER + "a=x-note:hi\u2028" + extra_video),
        ("video after a form feed", GOOD_OFFER + "a=x-note:hi\x0c" + extra_video),
        ("unknown kind", GOOD_OFFER + "m=text 9 RTP/AVP 0\r\na=mid:3\r\n"),
        ("no mid", GOOD_OFFER.replace("a=mid:1\r\n", "")),
        ("duplicate mid", GOOD_OFFER.replace("a=mid:1", "a=mid:0")),
        ("no ice-ufrag", GOOD_OFFER.replace("a=ice-ufrag:abcd\r\n", "")),
        ("no setup", GOOD_OFFER.replace("a=setup:actpass\r\n", "")),
        ("no fingerprint", GOOD_OFFER.replace(f"a=fingerprint:sha-256 {FINGERPRINT}\r\n", "")),
        ("sha-1 fingerprint", GOOD_OFFER.replace("sha-256 " + FINGERPRINT, "sha-1 " + ":".join(["AB"] * 20))),
        ("sha-224 fingerprint", GOOD_OFFER.replace("sha-256 " + FINGERPRINT, "sha-224 " + ":".join(["AB"] * 28))),
        ("short fingerprint", GOOD_OFFER.replace(FINGERPRINT, "AB:CD")),
        ("not hex", GOOD_OFFER.replace(FINGERPRINT, "ZZ" + FINGERPRINT[2:])),
        ("bad candidate", GOOD_OFFER.replace("typ host", "typ")),
        ("bad port", GOOD_OFFER.replace("m=video 9", "m=video banana")),
        ("too many candidates", GOOD_OFFER.replace(
            "a=candidate:1", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\na=candidate:1" * 40)),
    ]:
        message = _refused(bad)
        assert message, name
    assert "sha-256" in _refused(GOOD_OFFER.replace("sha-256 " + FINGERPRINT, "sha-1 " + ":".join(["AB"] * 20)))
    assert check_offer_sdp(GOOD_OFFER, ServerConfig(max_offer_video=1)).kinds[0] == "video"
    _refused(GOOD_OFFER, ServerConfig(max_offer_video=0))


def test_offer_check_drops_candidates_outside_the_peer_networks() -> None:
    from aiortc.sdp import SessionDescription

    from enliven.server.ice_policy import IcePolicy

    config = ServerConfig(ice_peer_networks=("127.0.0.0/8",))
    policy = IcePolicy.for_config(config)
    before = policy.counters.refused_candidates
    offer = GOOD_OFFER.replace("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n", "".join(
        f"a=candidate:{i} 1 udp 2130706431 {host} 5000 typ host\r\n"
        for i, host in enumerate(["127.0.0.1", "8.8.8.8", "192.168.1.9", "2001:db8::1", "abcd-1234.local"])))
    checked = check_offer_sdp(offer, config)
    assert (checked.candidates, checked.refused_candidates) == (1, 4)
    hosts = [c.ip for m in SessionDescription.parse(checked.sdp).media for c in m.ice_candidates]
    assert hosts == ["127.0.0.1"], "aiortc is only given the allowed candidates"
    assert policy.counters.refused_candidates == before + 4
    assert checked.sdp.count("m=") == 2 and "a=fingerprint:sha-256" in checked.sdp


def test_ice_policy_defaults_follow_the_listening_address() -> None:
    from enliven.server.ice_policy import IcePolicy

    loop = IcePolicy.for_config(ServerConfig(host="127.0.0.1"))
    assert loop.local_addresses == ("127.0.0.1",)
    assert loop.peer_allowed("127.0.0.1") and not loop.peer_allowed("8.8.8.8")
    assert not loop.peer_allowed("192.0.2.7") and not loop.peer_allowed("not an address")
    lan = IcePolicy.for_config(ServerConfig(host="0.0.0.0"))
    assert lan.local_addresses is None  # every interface
    assert lan.peer_allowed("192.168.1.9") and lan.peer_allowed("10.1.2.3") and not lan.peer_allowed("8.8.8.8")
    assert lan.refuse_candidate("abcd.local"), "mDNS names are never resolved"
    anywhere = IcePolicy.for_config(ServerConfig(host="0.0.0.0", ice_peer_networks=("0.0.0.0/0", "::/0"),
                                                 ice_addresses=("192.168.1.2",)))
    assert anywhere.peer_allowed("8.8.8.8") and anywhere.local_addresses == ("192.168.1.2",)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ServerConfig(crop_size_px=300)
    with pytest.raises(ValueError):
        ServerConfig(heartbeat_interval_s=5, heartbeat_timeout_s=5)
    with pytest.raises(ValueError):
        ServerConfig(max_sessions=0)
    with pytest.raises(ValueError):
        ServerConfig(engine="gan")
    for bad in ({"trusted_proxies": ("not-a-network",)}, {"ice_peer_networks": ("10.0.0.0/33",)},
                {"ice_addresses": ("localhost",)}, {"max_session_s": 0}, {"body_timeout_s": -1},
                {"max_sessions_per_client": 0}, {"max_offer_video": -1}, {"precision": "fp16"}):
        with pytest.raises(ValueError):
            ServerConfig(**bad)  # type: ignore[arg-type]
    for size in CROP_SIZES_PX:  # the sizes and engines users may choose are the engine's choices
        assert ServerConfig(crop_size_px=size).crop_size_px == size
    for engine in ENGINES:
        assert ServerConfig(engine=engine).engine == engine


def test_serve_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="enliven")
    sub = parser.add_subparsers(dest="command")
    add_serve_parser(sub)
    args = parser.parse_args(["serve"])
    config = config_from_args(args)
    assert (config.host, config.port, config.crop_size_px) == ("127.0.0.1", 8080, 256)
    assert not config.debug_endpoints and not config.echo_frame_ids
    assert callable(args.func)
    assert (config.max_sessions_per_client, config.max_session_s) == (2, 1800.0)
    assert config.allowed_hosts == config.trusted_proxies == config.ice_addresses == config.ice_peer_networks == ()
    args = parser.parse_args(["serve", "--port", "9000", "--max-sessions", "2", "--size", "512",
                              "--allow-origin", "https://example.org", "--allow-host", "enliven.example.org",
                              "--trusted-proxy", "10.0.0.1", "--max-sessions-per-client", "3",
                              "--max-session-length", "600", "--ice-address", "192.168.1.2",
                              "--ice-peer-network", "192.168.1.0/24"])
    config = config_from_args(args)
    assert (config.port, config.max_sessions, config.crop_size_px) == (9000, 2, 512)
    assert config.allowed_origins == ("https://example.org",)
    assert config.allowed_hosts == ("enliven.example.org",) and config.trusted_proxies == ("10.0.0.1",)
    assert (config.max_sessions_per_client, config.max_session_s) == (3, 600.0)
    assert config.ice_addresses == ("192.168.1.2",) and config.ice_peer_networks == ("192.168.1.0/24",)
    assert config_from_args(parser.parse_args(["serve", "--engine", "analytic"])).engine == "analytic"
    assert config_from_args(parser.parse_args(["serve"])).precision == "int8"
    assert config_from_args(parser.parse_args(["serve", "--precision", "fp32"])).precision == "fp32"
    assert config_from_args(parser.parse_args(["serve"])).refiner == "refiner128s"  # the distilled one: density
    assert config_from_args(parser.parse_args(["serve", "--refiner", "refiner128"])).refiner == "refiner128"
    for bad in (["--size", "300"], ["--engine", "gan"], ["--precision", "fp16"], ["--refiner", "refiner64"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", *bad])


def test_workers_share_the_cores_among_their_refiners(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker per core runs its refiner on one thread (two would oversubscribe the cores); fewer workers
    than cores split them; sessions in threads of the server keep the runtime's default."""
    monkeypatch.setattr(app, "usable_cores", lambda: 4)
    config = ServerConfig(precision="fp32")
    fast = "refiner128s"  # the server's refiner unless --refiner says otherwise
    assert app.inference_options(config, 4) == InferenceOptions("fp32", threads=1, generator=fast)
    assert app.inference_options(config, 2) == InferenceOptions("fp32", threads=2, generator=fast)
    assert app.inference_options(config, 8) == InferenceOptions("fp32", threads=1, generator=fast)
    assert app.inference_options(ServerConfig(), 0) == InferenceOptions("int8", threads=None, generator=fast)
    full = ServerConfig(refiner="refiner128")
    assert app.inference_options(full, 2) == InferenceOptions("int8", threads=2, generator="refiner128")
    with pytest.raises(ValueError):
        ServerConfig(refiner="refiner64")
    with pytest.raises(ValueError):
        InferenceOptions(generator="refiner64")
    with pytest.raises(ValueError):
        InferenceOptions("fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        InferenceOptions(threads=0)


def test_fps_hint_steps_down_under_overload_and_back_up() -> None:
    from enliven.server.stats import MIN_HINT_FPS, fps_hint

    assert fps_hint(None, 30, 29) is None  # keeping up: no limit
    assert fps_hint(None, 2, 0) is None  # no evidence
    down = fps_hint(None, 30, 10)
    assert down is not None and MIN_HINT_FPS <= down < 30
    assert fps_hint(None, 30, 1) == MIN_HINT_FPS  # never below the floor
    assert fps_hint(down, down, down) == down + 3  # keeping up at the limit: allow more
    assert fps_hint(28, 28, 27) is None  # back to no limit
    assert fps_hint(20, 12, 12) == 20  # the camera gives less than allowed: no change


def test_microphone_is_held_back_as_long_as_the_video_path() -> None:
    from fractions import Fraction

    import av
    from aiortc.mediastreams import MediaStreamTrack

    from enliven.server.tracks import DelayedAudioTrack

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        async def recv(self) -> av.AudioFrame:
            await asyncio.sleep(0.02)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, self.n * 960, Fraction(1, 48000)
            self.n += 1
            return frame

    delay = {"s": 0.12}

    async def go() -> tuple[float, list[int], int]:
        track = DelayedAudioTrack(Tone(), lambda: delay["s"])
        drain = asyncio.ensure_future(track.drain())
        t0 = loop_time()
        first = await track.recv()
        waited = loop_time() - t0
        pts = [first.pts]
        for _ in range(10):
            pts.append((await track.recv()).pts)
        delay["s"] = 0.0  # the video path got fast: the held frames go out at once
        t1 = loop_time()
        burst = 0
        while loop_time() - t1 < 0.01:
            await track.recv()
            burst += 1
        drain.cancel()
        return waited, pts, burst

    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    waited, pts, burst = asyncio.run(go())
    assert waited >= 0.12  # the first sound waited as long as the video does
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # order kept, nothing repeated
    assert burst >= 3


def _moving_frames(count: int, side: int = 256) -> list[np.ndarray]:
    """A rendered-looking test clip: smooth gradients, a moving disc, a frame-id barcode. (side, side) I420."""
    import av

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    frames = []
    for i in range(count):
        img = np.stack([xx / side * 200 + 20, yy / side * 180 + 30, (xx + yy) / (2 * side) * 150 + 50], -1)
        disc = (xx - 80 - 3 * i) ** 2 + (yy - 128 - 2 * i) ** 2 < 40 ** 2
        img[disc] = (230, 180, 150)
        rgb = np.ascontiguousarray(img.astype(np.uint8))
        stamp_id(rgb, i)
        frames.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray())
    return frames


def _vp8_round_trip(encoder: object, frames: list[np.ndarray]) -> float:
    """Mean PSNR (dB) of ``frames`` encoded by ``encoder`` (an aiortc Encoder) and decoded by aiortc's decoder."""
    import fractions

    import av
    from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    decoder = Vp8Decoder()
    psnr = []
    for i, planes in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
        payloads, timestamp = encoder.encode(frame, i == 0)  # type: ignore[attr-defined]
        data = b"".join(vp8_depayload(p) for p in payloads)
        for out in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            mse = float(((out.to_ndarray().astype(np.float64) - planes) ** 2).mean())
            psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-6)))
    assert len(psnr) == len(frames)
    return float(np.mean(psnr[5:]))


class _Recorded:
    """A libvpx codec context that remembers the options it was given (they are consumed when it opens)."""

    def __init__(self, codec: object, seen: list[dict[str, str]]) -> None:
        object.__setattr__(self, "_codec", codec)
        object.__setattr__(self, "_seen", seen)

    def __getattr__(self, name: str) -> object:
        return getattr(self._codec, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "options":
            self._seen.append(dict(value))  # type: ignore[call-overload]
        setattr(self._codec, name, value)


def test_lean_vp8_encoder_is_aiortcs_with_two_options_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """LeanVp8Encoder opens libvpx as aiortc does but without the denoiser and at cpu-used -12, also after
    a bit-rate change; its stream decodes with aiortc's decoder at least as well as aiortc's own does."""
    import av
    from aiortc.codecs import vpx

    from enliven.server import _vp8
    from enliven.server._vp8 import CPU_USED, NOISE_SENSITIVITY, LeanVp8Encoder

    seen: list[dict[str, str]] = []
    create = av.CodecContext.create

    class Av:  # the av module as aiortc's vpx.py and _vp8.py see it: codec contexts that remember their options
        class CodecContext:
            @staticmethod
            def create(*args: object) -> object:
                return _Recorded(create(*args), seen)

        def __getattr__(self, name: str) -> object:
            return getattr(av, name)

    monkeypatch.setattr(vpx, "av", Av())
    monkeypatch.setattr(_vp8, "av", Av())
    frames = _moving_frames(30)
    stock_db = _vp8_round_trip(vpx.Vp8Encoder(), frames)
    lean = LeanVp8Encoder()
    lean_db = _vp8_round_trip(lean, frames)
    assert len(seen) == 2  # one each: aiortc's encode did not open another for the lean encoder
    stock, ours = seen
    assert stock["cpu-used"] == "-6" and stock["noise-sensitivity"] == "4"  # aiortc 1.16's
    assert ours == {**stock, "cpu-used": str(CPU_USED), "noise-sensitivity": str(NOISE_SENSITIVITY)}
    assert lean_db >= stock_db - 0.5, (lean_db, stock_db)
    lean.target_bitrate = 1_000_000  # the receiver's REMB: a new encoder is opened, ours again
    _vp8_round_trip(lean, frames[:6])
    assert len(seen) == 3 and seen[2]["cpu-used"] == str(CPU_USED) and lean.codec.bit_rate == 1_000_000


@pytest.mark.parametrize("side", [256, 512, 250])
def test_i420_frame_is_from_ndarrays_frame(side: int) -> None:
    """The worker's I420 planes as a frame: the same pixels as VideoFrame.from_ndarray (250: padded rows)."""
    import av

    from enliven.server.engines import i420_frame

    raw = np.random.default_rng(side).integers(0, 256, side * side * 3 // 2, dtype=np.uint8).tobytes()
    expected = av.VideoFrame.from_ndarray(np.frombuffer(raw, np.uint8).reshape(side * 3 // 2, side), format="yuv420p")
    got = i420_frame(raw, side)
    assert got.format.name == "yuv420p" and (got.width, got.height) == (side, side)
    np.testing.assert_array_equal(got.to_ndarray(), expected.to_ndarray())
    with pytest.raises(ValueError):
        i420_frame(raw + b"\0", side)
