"""F1 and D1 of the reliability plan: the upload ingest fuzzed (hypothesis, in place of atheris: mutated tiny
JPEG/PNG/WebP seeds, inputs over 100 KB skipped), and the dependency versions the plan requires, with the
aiortc/aioice internals the server's guards rely on (ice_policy.py, _aiortc_guards.py, _jitter.py)."""
from __future__ import annotations

import asyncio
import io
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enliven.engine.errors import EnlivenError
from enliven.engine.image_io import load_photo
from enliven.server.decoding import DecodeLimits, decode_blocking

SCALE = float(os.environ.get("ENLIVEN_FUZZ_EXAMPLES", "1"))
MAX_INPUT_BYTES = 100 * 1024  # the libvips lesson: large inputs make a fuzzer slow, not thorough


def _seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    out = []
    for fmt, kw in [("JPEG", {"quality": 80}), ("JPEG", {"progressive": True}), ("PNG", {}), ("WEBP", {}),
                    ("WEBP", {"lossless": True})]:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        out.append(buf.getvalue())
    rgba = io.BytesIO()
    image.convert("RGBA").save(rgba, format="PNG")
    return [*out, rgba.getvalue()]


SEEDS = _seeds()


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "repeat"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(max_size=32))
        elif op == "repeat":
            data[i:i] = data[i:i + draw(st.integers(1, 256))]
    return bytes(data[:MAX_INPUT_BYTES])


@settings(max_examples=int(400 * SCALE), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_image())
def test_f1_ingest_never_fails_otherwise_than_by_its_errors(data: bytes) -> None:
    try:
        photo = load_photo(data)
    except EnlivenError:
        return
    assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8 and photo.flags.c_contiguous


LIMITS = DecodeLimits(max_bytes=10 * 2**20, max_pixels=25_000_000, memory_bytes=512 * 2**20, cpu_s=3)


@settings(max_examples=int(15 * SCALE), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_image())
def test_f1_decoding_child_agrees_with_the_ingest(data: bytes) -> None:
    """The same inputs through the server's decoding child: the same pixels, or the same kind of refusal."""
    try:
        expected: np.ndarray | type[EnlivenError] = load_photo(data)
    except EnlivenError as e:
        expected = type(e)
    try:
        got: np.ndarray | type[EnlivenError] = decode_blocking(data, LIMITS)
    except EnlivenError as e:
        got = type(e)
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and np.array_equal(got, expected)
    else:
        assert got is expected


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def test_d1_dependency_versions() -> None:
    from PIL import features

    assert _version(metadata.version("pillow")) >= (12, 2, 0), "Pillow >= 12.2.0 (CVE-2026-40192 class, FITS)"
    webp = features.version("webp")
    assert webp is not None and _version(webp) >= (1, 3, 2), f"libwebp >= 1.3.2 (CVE-2023-4863); got {webp}"
    # the server's guards reach into these two (checked against aiortc 1.16 and aioice 0.13)
    assert _version(metadata.version("aiortc"))[:2] == (1, 16)
    assert _version(metadata.version("aioice"))[:2] == (0, 13)


def test_d1_no_known_vulnerabilities_where_pip_audit_runs() -> None:
    import shutil
    import subprocess
    import sys

    audit = shutil.which("pip-audit") or str(Path(sys.executable).with_name("pip-audit"))
    if not Path(audit).exists():
        pytest.skip("pip-audit is not installed (it needs the vulnerability database online)")
    result = subprocess.run([audit, "--progress-spinner", "off"], capture_output=True, text=True, timeout=300)
    if "Connection" in result.stderr or "resolve" in result.stderr.lower():
        pytest.skip("pip-audit cannot reach its database here")
    assert result.returncode == 0, result.stdout + result.stderr


def test_aiortc_internals_are_as_the_guards_expect() -> None:
    """On a real peer connection: ICE restricted, decoder queue bounded, SCTP capped, jitter buffer and VP8
    encoder swapped. A new aiortc/aioice that changes these fails here, not silently in production."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from enliven.server._aiortc_guards import BoundedDecoderQueue, bound_decoder_queue, cap_sctp_reassembly
    from enliven.server._jitter import use_low_latency_jitter_buffer
    from enliven.server._vp8 import LeanVp8Encoder, use_lean_vp8_encoder
    from enliven.server.config import ServerConfig
    from enliven.server.ice_policy import IcePolicy, _ice_connections
    from enliven.server.signalling import check_offer_sdp

    offer = (Path(__file__).resolve().parents[1] / "corpora" / "valid.sdp").read_bytes().decode()
    config = ServerConfig()

    async def go() -> None:
        pc = RTCPeerConnection()
        receivers = []
        pc.on("track", lambda track: receivers.extend(
            t.receiver for t in pc.getTransceivers() if t.receiver.track is track and track.kind == "video"))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=check_offer_sdp(offer, config).sdp, type="offer"))
            policy = IcePolicy.for_config(config)
            policy.apply(pc)
            assert receivers and use_low_latency_jitter_buffer(receivers[0])
            assert bound_decoder_queue(receivers[0], config.max_webcam_pixels, lambda why: None)
            assert isinstance(receivers[0]._RTCRtpReceiver__decoder_queue, BoundedDecoderQueue)
            assert cap_sctp_reassembly(pc.sctp, config.max_channel_message_bytes, 16, lambda why: None)
            await pc.setLocalDescription(await pc.createAnswer())
            video = [t for t in pc.getTransceivers() if t.kind == "video"]
            assert video and use_lean_vp8_encoder(video[0])
            assert isinstance(video[0].sender._RTCRtpSender__encoder, LeanVp8Encoder)
            hosts = {c.host for conn in _ice_connections(pc) for c in conn.local_candidates}
            assert hosts == {"127.0.0.1"}, hosts
            protocols = [p for conn in _ice_connections(pc) for p in conn._protocols]
            assert protocols and all("datagram_received" in vars(p) and "send_stun" in vars(p) for p in protocols)
        finally:
            await pc.close()

    asyncio.run(go())
