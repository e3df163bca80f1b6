"""The page's motion controls over the data channel: per-channel gains and the eye mode.

Good changes are applied at once and echoed (settings, then every stats message); bad ones (out of
range, wrong type, unknown name, malformed, too many a second) get an error on the channel, change
nothing and never end the session. Real loopback connection to the real server (worker processes).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from server_harness import Server, run

from enliven.server.client import LoopbackClient

pytestmark = pytest.mark.slow


async def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def test_gains_and_eyes_apply_live_and_bad_ones_are_refused(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    c = LoopbackClient(server.url, clip, fps=15)

    def last(kind: str) -> dict[str, Any]:
        found = [m for m in c.result.messages if m.get("type") == kind]
        return found[-1] if found else {}

    def errors() -> list[dict[str, Any]]:
        return [m for m in c.result.messages if m.get("type") == "error"]

    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int, int, bool]:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            hello = last("hello")
            c.send({"type": "set", "gains": {"mouth": 1.3, "eyes": 0.5}, "eyes": "auto-blink"})
            await _wait_for(lambda: last("stats").get("settings", {}).get("eyes") == "auto-blink")
            applied = last("stats")["settings"]
            bad = [
                {"type": "set", "gains": {"mouth": 2.5}},  # over the limit
                {"type": "set", "gains": {"head_rotation": 1.6}},
                {"type": "set", "gains": {"gaze": -0.1}},
                {"type": "set", "gains": {"nose": 1.0}},  # unknown channel
                {"type": "set", "gains": {"mouth": "1.0"}},  # wrong types
                {"type": "set", "gains": {"mouth": True}},
                {"type": "set", "gains": {"mouth": None}},
                {"type": "set", "gains": {"mouth": [1.0]}},
                {"type": "set", "gains": [1.0, 2.0]},  # not an object
                {"type": "set", "gains": {}},
                {"type": "set", "gains": "loud"},
                {"type": "set", "eyes": "closed"},
                {"type": "set", "eyes": ["open"]},
                {"type": "set", "gains": {"mouth": 0.2}, "eyes": "wink"},  # one bad part: nothing applied
                '{"type": "set", "gains": {"mouth": 1e999}}',  # JSON infinity
                '{"type": "set", "gains": {"mouth": NaN}}',
            ]
            for m in bad:
                c.send(m)
            await _wait_for(lambda: len(errors()) >= len(bad))
            frames_before = len(c.result.received)
            await asyncio.sleep(1.5)  # a stats message after the refusals
            after_bad = last("stats")["settings"]
            await asyncio.sleep(1.1)  # a fresh rate window
            for i in range(40):  # a burst of slider moves, far over the limit
                c.send({"type": "set", "gains": {"brows": round(0.05 * (i % 40), 2)}})
            await _wait_for(lambda: any(e.get("code") == "rate_limited" for e in errors()))
            await asyncio.sleep(0.5)
            return hello, applied, after_bad, frames_before, len(c.result.received), c.ended.is_set()
        finally:
            await c.close()

    hello, applied, after_bad, frames_before, frames_after, ended = run(go())
    assert hello["settings"]["gains"] == {"head_rotation": 1.0, "head_position": 1.0, "eyes": 1.0, "gaze": 1.0,
                                          "brows": 1.0, "mouth": 1.0} and hello["settings"]["eyes"] == "follow"
    assert applied["gains"]["mouth"] == 1.3 and applied["gains"]["eyes"] == 0.5 and applied["gains"]["gaze"] == 1.0
    assert after_bad == applied, "refused messages change nothing"
    codes = [m["code"] for m in c.result.messages if m.get("type") == "error"]
    assert codes.count("bad_value") >= 16 and "rate_limited" in codes, codes
    messages = " | ".join(m["message"] for m in c.result.messages if m.get("type") == "error")
    for expected in ("gain mouth must be from 0 to 2; got 2.5", "gain head_rotation must be from 0 to 1.5",
                     "unknown gain 'nose'", "gain mouth must be a number", "gains must be an object",
                     "eyes must be one of"):
        assert expected in messages, messages
    assert frames_after > frames_before, "the stream goes on"
    assert not ended, "bad settings never end the session"
    server.wait_idle()
