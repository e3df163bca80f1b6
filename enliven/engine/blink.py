"""Automatic blinks: a natural blink rhythm for when the driver's own lids are not copied (eyes "auto-blink").

People blink every few seconds, irregularly, each blink lasting a fifth of a second or so: the lids
close quickly, stay shut for an instant and open more slowly. ``BlinkClock`` draws that rhythm from
a seeded generator, so the same seed gives the same blinks (tests), and a fresh one differs per stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlinkTiming:
    interval_s: tuple[float, float] = (2.0, 6.0)  # from one blink's start to the next, drawn uniformly
    duration_s: tuple[float, float] = (0.15, 0.25)  # of one blink, closing to open again, drawn uniformly
    closing: float = 0.35  # fraction of a blink spent closing
    closed: float = 0.15  # fraction spent shut; the rest opens

    def __post_init__(self) -> None:
        lo, hi = self.interval_s
        dlo, dhi = self.duration_s
        if not 0 < dlo <= dhi < lo <= hi:
            raise ValueError(f"expected 0 < durations <= ... < intervals; got intervals {self.interval_s} s, "
                             f"durations {self.duration_s} s")
        if not (0 < self.closing and 0 <= self.closed and self.closing + self.closed < 1):
            raise ValueError(f"closing and closed are fractions of a blink with closing + closed < 1; got "
                             f"{self.closing}, {self.closed}")


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


class BlinkClock:
    """How closed the eyes are at time t, 0 (open) .. 1 (shut), blinking at a random natural rhythm.

    The first blink comes one drawn interval after the first time asked for. Times are expected to
    increase; a time earlier than the last one (a restarted stream) starts the rhythm afresh from there,
    and so does a jump forward of more than a minute.
    """

    def __init__(self, seed: int | None = None, timing: BlinkTiming = BlinkTiming()) -> None:
        self.timing = timing
        self._rng = np.random.default_rng(seed)
        self._start: float | None = None  # the current or next blink: start, seconds
        self._duration = 0.0
        self._last_t = -np.inf

    def _draw(self, after: float) -> None:
        lo, hi = self.timing.interval_s
        self._start = after + float(self._rng.uniform(lo, hi))
        self._duration = float(self._rng.uniform(*self.timing.duration_s))

    def amount(self, t: float) -> float:
        """How closed the eyes are at ``t`` seconds: 0 open .. 1 shut."""
        t = float(t)
        if self._start is None or t < self._last_t or t - self._last_t > 60.0:
            self._draw(t)
        self._last_t = t
        assert self._start is not None
        while t >= self._start + self._duration:
            self._draw(self._start)
        u = (t - self._start) / self._duration
        if u < 0:
            return 0.0
        closing, closed = self.timing.closing, self.timing.closed
        if u < closing:
            return _smoothstep(u / closing)
        if u < closing + closed:
            return 1.0
        return 1.0 - _smoothstep((u - closing - closed) / (1 - closing - closed))
