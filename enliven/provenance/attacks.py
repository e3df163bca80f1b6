"""Edits a watermark must survive: re-encoding, scaling, cropping, brightness (tests and benchmarks).

Each takes and returns frames as (H, W, 3) uint8 RGB arrays.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import cv2
import numpy as np

CODECS = {"vp8": ("libvpx", "webm"), "h264": ("libx264", "mp4")}  # name -> (PyAV encoder, container)


def reencode(frames: Sequence[np.ndarray], codec: str, bit_rate: int, fps: int = 25) -> list[np.ndarray]:
    """The frames after a round trip through ``codec`` ("vp8" or "h264") at ``bit_rate`` bits/s, yuv420p.

    The encoders run in their bit-rate mode (as a WebRTC sender or a re-upload would), in memory.
    """
    encoder, container_format = CODECS[codec]
    h, w = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.time_base = Fraction(1, fps)
        if codec == "vp8":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        else:
            stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def scale(frame: np.ndarray, factor: float) -> np.ndarray:
    """The frame resized by ``factor`` (area averaging down, bilinear up)."""
    h, w = frame.shape[:2]
    size = (max(int(round(w * factor)), 1), max(int(round(h * factor)), 1))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def crop(frame: np.ndarray, keep: float = 0.75, shift: tuple[float, float] = (0.37, 0.61)) -> np.ndarray:
    """A ``keep`` x ``keep`` fraction window of the frame, placed at ``shift`` (0..1, y and x) of the slack.

    The defaults keep 75 % of each side, at an offset unrelated to any tile grid:
    the face of an enliven crop stays in it.
    """
    h, w = frame.shape[:2]
    ch, cw = int(round(h * keep)), int(round(w * keep))
    y0, x0 = int((h - ch) * shift[0]), int((w - cw) * shift[1])
    return np.ascontiguousarray(frame[y0:y0 + ch, x0:x0 + cw])


def brightness(frame: np.ndarray, gain: float = 1.1, offset: float = 8.0) -> np.ndarray:
    """gain * frame + offset, clipped: a mild exposure change."""
    return np.clip(frame.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)

