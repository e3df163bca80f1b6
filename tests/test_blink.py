import numpy as np
import pytest

from enliven.engine.blink import BlinkClock, BlinkTiming


def _blinks(clock: BlinkClock, seconds: float, dt: float = 0.001) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Amounts sampled every dt, and the (start, end) of each stretch where the eyes are not fully open."""
    t = np.arange(0.0, seconds, dt)
    a = np.array([clock.amount(x) for x in t])
    closed = np.concatenate([[False], a > 0, [False]])
    edges = np.flatnonzero(np.diff(closed.astype(int)))
    return a, [(t[i], t[j - 1] + dt) for i, j in zip(edges[::2], edges[1::2], strict=True)]


def test_blinks_come_every_two_to_six_seconds_and_last_150_to_250_ms():
    amounts, blinks = _blinks(BlinkClock(seed=3), 120.0)
    assert 20 <= len(blinks) <= 60  # 120 s at one blink per 2-6 s
    starts = np.array([s for s, _ in blinks])
    durations = np.array([e - s for s, e in blinks])
    assert np.diff(starts).min() >= 2.0 - 0.002 and np.diff(starts).max() <= 6.0 + 0.002
    assert durations.min() >= 0.15 - 0.002 and durations.max() <= 0.25 + 0.002
    assert np.ptp(np.diff(starts)) > 2.0 and np.ptp(durations) > 0.04  # random, not a metronome
    assert amounts.max() == 1.0 and amounts.min() == 0.0  # each blink shuts the eyes
    peaks = [int(np.argmax(amounts[int(s * 1000):int(e * 1000)])) / 1000 / (e - s) for s, e in blinks]
    assert max(peaks) < 0.5  # closing is quicker than opening


def test_the_same_seed_gives_the_same_blinks():
    t = np.arange(0.0, 30.0, 1 / 30)
    clock_a, clock_b, clock_c = BlinkClock(seed=7), BlinkClock(seed=7), BlinkClock(seed=8)
    a = np.array([clock_a.amount(x) for x in t])
    b = np.array([clock_b.amount(x) for x in t])
    c = np.array([clock_c.amount(x) for x in t])
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.max() > 0.5


def test_time_going_back_restarts_the_rhythm():
    clock = BlinkClock(seed=1)
    for x in np.arange(0.0, 20.0, 0.01):
        clock.amount(x)
    assert clock.amount(0.0) == 0.0  # a new stream: the first blink comes a whole interval later
    assert max(clock.amount(x) for x in np.arange(0.0, 1.9, 0.01)) == 0.0


def test_timing_is_checked():
    with pytest.raises(ValueError):
        BlinkTiming(interval_s=(0.1, 0.2))
    with pytest.raises(ValueError):
        BlinkTiming(closing=0.9, closed=0.2)
