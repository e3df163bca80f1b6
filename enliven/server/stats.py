"""A session's frame counters, and the frame-rate hint policy built on them."""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

MIN_HINT_FPS, MAX_HINT_FPS = 12, 30  # never ask for fewer than 12 fps: motion would look jerky


class FrameStats:
    """Per-session counters and a sliding window of per-frame figures for the stats messages."""

    def __init__(self, window: int = 300) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.last_in_s = 0.0  # time.monotonic() of the last webcam frame
        self.errors = 0
        self.dropped_oversized = 0  # webcam frames larger than max_webcam_pixels, dropped before decoding
        self.dropped_undecoded = 0  # encoded webcam frames dropped because the decoder fell behind
        self.server_ms: deque[float] = deque(maxlen=window)  # input arrival -> handed to the encoder
        self.step_ms: deque[float] = deque(maxlen=window)
        self._last = (time.monotonic(), 0, 0)
        self.face_found = False

    def rates(self) -> tuple[float, float]:
        """Input and output frames per second since the last call."""
        now = time.monotonic()
        t, fin, fout = self._last
        dt = max(now - t, 1e-6)
        self._last = (now, self.frames_in, self.frames_out)
        return (self.frames_in - fin) / dt, (self.frames_out - fout) / dt

    def snapshot(self) -> dict[str, float | int | bool]:
        fps_in, fps_out = self.rates()

        def pct(values: deque[float], q: float) -> float:
            return round(float(np.percentile(np.fromiter(values, float), q)), 1) if values else 0.0

        return {"fps_in": round(fps_in, 1), "fps_out": round(fps_out, 1), "frames_in": self.frames_in,
                "frames_out": self.frames_out, "face_found": self.face_found,
                "server_ms_p50": pct(self.server_ms, 50), "server_ms_p95": pct(self.server_ms, 95),
                "step_ms_p50": pct(self.step_ms, 50)}


def median_server_delay_s(stats: FrameStats) -> float:
    """Median time (s) from a webcam frame's arrival to its animated frame going to the encoder."""
    values = list(stats.server_ms)[-30:]
    return float(np.median(values)) / 1e3 if values else 0.0


def fps_hint(current: int | None, fps_in: float, fps_out: float) -> int | None:
    """The frame rate to ask the client for: a little above what the server animates when it drops
    more than a quarter of the webcam frames (decoding frames that are then dropped costs CPU on both
    sides), raised again in steps while it keeps up. None: no limit."""
    if fps_in < 5:  # starting, idle or face-less: no evidence either way
        return current
    if fps_out < 0.75 * fps_in:
        target = max(MIN_HINT_FPS, min(MAX_HINT_FPS, math.ceil(fps_out * 1.25) + 1))
        return target if current is None or target < current else current
    if current is not None and fps_out >= 0.9 * fps_in and fps_in >= 0.8 * current:
        return None if current + 3 >= MAX_HINT_FPS else current + 3
    return current
