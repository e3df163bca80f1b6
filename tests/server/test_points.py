"""The face points stream on its own: the wire format, its checks, the per-session intake (order, rate
limit), the stall watch, and which upstream an offer asks for."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from enliven.server.config import ServerConfig
from enliven.server.http_guards import HttpError
from enliven.server.points import (
    FACE_BYTES,
    HEADER,
    NUM_POINTS,
    PointsError,
    PointsIntake,
    PointsUpstream,
    decode_points,
    encode_points,
    is_newer,
)
from enliven.server.upstream import check_upstream, offered_upstream


def _face(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A plausible face: 478 points in a 200 px box in the middle of the frame (z in width units)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([220, 140, -30], [420, 340, 30], (NUM_POINTS, 3))
    return (pts * [width / 640, height / 480, 1]).astype(np.float32)


def test_round_trip_keeps_the_pixels_within_the_format_resolution() -> None:
    pts = _face()
    data = encode_points(7, 1.7e12, 640, 480, pts)
    assert len(data) == FACE_BYTES == 2888
    msg = decode_points(data)
    assert (msg.frame_id, msg.width, msg.height, msg.capture_ms) == (7, 640, 480, 1.7e12)
    assert msg.points is not None and msg.points.dtype == np.float32 and msg.points.shape == (NUM_POINTS, 3)
    step = 640 / 2**14  # one int16 unit, in pixels
    assert np.abs(msg.points - pts).max() <= step / 2 + 1e-4
    none = decode_points(encode_points(8, 1.0, 640, 480, None))
    assert none.points is None and len(encode_points(8, 1.0, 640, 480, None)) == HEADER.size == 20


def test_pixel_convention_is_mediapipes_normalised_times_the_frame() -> None:
    """x, y normalised to width and height, z to the width: what landmarks._to_pixels does."""
    norm = np.zeros((NUM_POINTS, 3))
    norm[:, 0] = np.linspace(0.3, 0.7, NUM_POINTS)
    norm[:, 1] = np.linspace(0.2, 0.8, NUM_POINTS)
    norm[:, 2] = -0.05
    q = np.rint(norm * 2**14).astype("<i2")
    data = HEADER.pack(1, 1, NUM_POINTS, 1, 0.0, 1280, 720) + q.tobytes()
    pts = decode_points(data).points
    np.testing.assert_allclose(pts, q / 2**14 * [1280, 720, 1280], rtol=1e-6)


def _corrupt(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("make, code", [
    (lambda d: d[:10], "bad_size"),
    (lambda d: d[:-2], "bad_size"),
    (lambda d: d + b"\0\0", "bad_size"),
    (lambda d: _corrupt(d, 0, "<B", 2), "bad_version"),
    (lambda d: _corrupt(d, 1, "<B", 3), "bad_header"),
    (lambda d: _corrupt(d, 2, "<H", 468), "bad_header"),
    (lambda d: _corrupt(d, 8, "<d", float("nan")), "bad_time"),
    (lambda d: _corrupt(d, 8, "<d", float("inf")), "bad_time"),
    (lambda d: _corrupt(d, 8, "<d", -5.0), "bad_time"),
    (lambda d: _corrupt(d, 16, "<H", 0), "bad_header"),
    (lambda d: _corrupt(d, 18, "<H", 5000), "bad_header"),
    (lambda d: _corrupt(d, HEADER.size, "<h", 32000), "out_of_frame"),  # x of point 0: almost 2 frames right
    (lambda d: _corrupt(d, HEADER.size + 4, "<h", -20000), "out_of_frame"),  # z of point 0
    (lambda d: d[:HEADER.size] + bytes(NUM_POINTS * 6), "degenerate"),  # all points at the origin
    (lambda d: b"", "bad_size"),
    (lambda d: b"\x01" * FACE_BYTES, "bad_header"),
])
def test_bad_messages_are_refused_with_their_reason(make, code: str) -> None:
    with pytest.raises(PointsError) as e:
        decode_points(make(encode_points(3, 1000.0, 640, 480, _face())))
    assert e.value.code == code


@pytest.mark.parametrize("column, value, taken", [
    (0, -8192, True), (0, -8193, False),  # x: half a frame left of the frame, and one unit more
    (1, 24576, True), (1, 24577, False),  # y: half a frame below
    (2, -16384, True), (2, -16385, False), (2, 16384, True), (2, 16385, False),  # z: one frame width
    (2, -32768, False),  # the int16 whose absolute value does not fit an int16
])
def test_the_frames_limits_hold_to_the_unit(column: int, value: int, taken: bool) -> None:
    q = np.rint(_face() / [640, 480, 640] * 2**14).astype("<i2")
    q[5, column] = value
    data = HEADER.pack(1, 1, NUM_POINTS, 1, 0.0, 640, 480) + q.tobytes()
    if taken:
        pts = decode_points(data).points
        assert pts is not None
        np.testing.assert_array_equal(pts, (q / 2**14 * [640, 480, 640]).astype(np.float32))
    else:
        with pytest.raises(PointsError) as e:
            decode_points(data)
        assert e.value.code == "out_of_frame"


def test_a_face_just_under_the_smallest_size_is_no_face() -> None:
    q = np.zeros((NUM_POINTS, 3), "<i2")
    q[:, :2] = 8192
    q[1, :2] = 8192 + 205  # 205 units of a 640 x 640 frame: 8.0 px; 204 units: 7.97 px
    data = HEADER.pack(1, 1, NUM_POINTS, 1, 0.0, 640, 640) + q.tobytes()
    assert decode_points(data).points is not None
    q[1, 0] = 8192 + 204
    with pytest.raises(PointsError) as e:
        decode_points(HEADER.pack(1, 1, NUM_POINTS, 1, 0.0, 640, 640) + q.tobytes())
    assert e.value.code == "degenerate"


def test_encoder_refuses_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_points(0, 0.0, 640, 480, np.full((NUM_POINTS, 3), np.nan))
    with pytest.raises(ValueError):
        encode_points(0, 0.0, 640, 480, np.zeros((468, 3)))
    with pytest.raises(ValueError):
        encode_points(0, 0.0, 640, 480, _face() + [2000, 0, 0])


def test_frame_ids_compare_as_serial_numbers() -> None:
    assert is_newer(5, 4) and not is_newer(4, 5) and not is_newer(4, 4)
    assert is_newer(2, 2**32 - 3), "an id that wrapped is newer"


def test_intake_drops_invalid_stale_and_flooding_messages() -> None:
    intake = PointsIntake(max_per_s=30, burst=5)
    face = encode_points(10, 1.0, 640, 480, _face())
    t = 100.0
    assert intake.take(face, t) is not None
    assert intake.take(encode_points(9, 1.0, 640, 480, _face()), t + 0.1) is None  # older: the channel is unordered
    assert intake.take(encode_points(10, 1.0, 640, 480, _face()), t + 0.2) is None  # the same frame again
    assert intake.take(b"garbage", t + 0.3) is None
    assert intake.take(encode_points(11, 1.0, 640, 480, None), t + 0.4).points is None  # "no face" is taken
    flood = [intake.take(encode_points(100 + i, 1.0, 640, 480, _face()), t + 0.5) for i in range(50)]
    taken = sum(m is not None for m in flood)
    assert 1 <= taken <= 6, f"a burst of 50 at once: only the bucket's worth passes, got {taken}"
    later = intake.take(encode_points(1000, 1.0, 640, 480, _face()), t + 1.5)
    assert later is not None, "the rate limit lets a normal stream through again"
    state = intake.state()
    assert state["stale"] == 2 and state["invalid"] == {"bad_size": 1} and state["rate_limited"] == 50 - taken
    assert state["received"] == 56 and state["accepted"] == 3 + taken


def test_upstream_puts_the_newest_and_ticks_no_face_when_the_stream_stops() -> None:
    up = PointsUpstream(max_per_s=60)
    t = up.last_s
    assert up.receive(encode_points(1, 1.0, 640, 480, _face()), t + 0.01) is not None
    assert up.receive(encode_points(2, 1.0, 640, 480, _face()), t + 0.02) is not None
    assert up.inbox.depth == 1 and up.inbox.dropped == 1, "newest wins: the unread older message is replaced"
    assert up.stalled_tick(t + 0.3, stall_s=0.5, ease_for_s=1.0) is None, "the stream is alive"
    tick = up.stalled_tick(t + 0.6, stall_s=0.5, ease_for_s=1.0)
    assert tick is not None and tick.message.points is None and tick.message.frame_id == 2
    assert up.stalled_tick(t + 1.6, stall_s=0.5, ease_for_s=1.0) is None, "eased: the last frame is held"


def _offer(direction: str) -> str:
    return ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n"
            f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na={direction}\r\n"
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n")


def test_the_offer_says_whether_video_or_face_points_come() -> None:
    assert offered_upstream(_offer("recvonly")) == "landmarks"
    assert offered_upstream(_offer("sendrecv")) == "video"
    assert offered_upstream(_offer("sendonly")) == "video"
    assert offered_upstream(_offer("sendrecv").replace("a=sendrecv\r\nm=application", "m=application")) == "video"
    assert offered_upstream(_offer("inactive")) == "none"
    data_only = _offer("sendrecv").split("m=video")[0] + "m=application" + _offer("sendrecv").split("m=application")[1]
    assert offered_upstream(data_only) == "none"
    check_upstream("none", ServerConfig(landmarks_only=True))
    check_upstream("video", ServerConfig())
    check_upstream("landmarks", ServerConfig(landmarks_only=True))
    with pytest.raises(HttpError) as e:
        check_upstream("video", ServerConfig(landmarks_only=True))
    assert e.value.status == 422 and e.value.code == "landmarks_only"


def test_the_pages_encoder_writes_what_the_server_reads(tmp_path) -> None:
    """landmarks.js's encode(), run by Node on MediaPipe-style normalised landmarks, gives the bytes
    encode_points gives for the same points in pixels."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    js = Path(__file__).resolve().parents[2] / "enliven" / "web" / "landmarks.js"
    rng = np.random.default_rng(3)
    norm = rng.uniform([0.3, 0.25, -0.05], [0.7, 0.75, 0.05], (NUM_POINTS, 3))
    (tmp_path / "points.json").write_text(json.dumps([{"x": x, "y": y, "z": z} for x, y, z in norm.tolist()]))
    script = (f"globalThis.window = {{}}; require({json.dumps(str(js))});"
              f"const pts = require({json.dumps(str(tmp_path / 'points.json'))});"
              "const enc = window.enlivenLandmarks.encode;"
              "process.stdout.write(Buffer.from(enc(77, 1234.5, 640, 480, pts)).toString('hex') + ' ' +"
              "  Buffer.from(enc(78, 1.0, 640, 480, null)).toString('hex') + ' ' +"
              "  Buffer.from(enc(79, 1.0, 640, 480, pts.map((p, i) => (i ? p : {x: NaN, y: 0, z: 0})))).toString('hex'));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    face, none, nan = (bytes.fromhex(h) for h in out)
    assert face == encode_points(77, 1234.5, 640, 480, norm * [640, 480, 640])
    assert none == encode_points(78, 1.0, 640, 480, None)
    assert nan == encode_points(79, 1.0, 640, 480, None), "non-finite points are sent as no face"
