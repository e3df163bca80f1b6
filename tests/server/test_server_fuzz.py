"""P2: property-based fuzzing of signalling (hypothesis). Valid offers are mutated line by line (removed,
repeated, swapped, cut, joined by other line breaks, filled with junk) and wrapped in fuzzed JSON.

In this process (hundreds of examples, seconds): ``parse_offer`` + ``check_offer_sdp`` answer every input
with a CheckedOffer or HttpError(400), and what they pass is exactly what aiortc's parser sees in the SDP
handed to it. Against the real server (a few dozen examples): never a 5xx, memory bounded, a good
session still served afterwards. Example counts are kept small so the suite runs in seconds; raise
them with ENLIVEN_FUZZ_EXAMPLES (a factor) for a longer run. Nothing is written into the checkout (no
example database): a failing example is printed, and belongs in the corpus of test_server_corpus.py.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import urllib.error
import urllib.request
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import Server, run, valid_offer

from enliven.server.client import LoopbackClient, noise_frames
from enliven.server.config import ServerConfig
from enliven.server.http_guards import HttpError
from enliven.server.signalling import check_offer_sdp, parse_offer

SCALE = float(os.environ.get("ENLIVEN_FUZZ_EXAMPLES", "1"))
LINE_BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@functools.lru_cache(maxsize=1)
def valid_offers() -> tuple[str, str]:
    """A video + data channel offer and a video + audio + data channel offer, made by aiortc."""
    return asyncio.run(valid_offer()), asyncio.run(valid_offer(audio=True))


junk_line = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=application 9 x y",
                     "a=mid:0", "a=mid:", "a=group:BUNDLE 0 1 2", "a=candidate:1 1 udp 1 8.8.8.8 9 typ host",
                     "a=candidate:x", "a=fingerprint:sha-1 AB:CD", "a=setup:", "a=rtpmap:96 VP8/90000",
                     "a=fmtp:96 apt=97", "a=ssrc:1 cname:x", "a=rtcp:9 IN IP4 0.0.0.0", "c=IN IP4 x",
                     "a=max-message-size:99999999999", "a=sctp-port:-1", "v=0", "m=", "a=end-of-candidates"]),
)


@st.composite
def mutated_offer(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(valid_offers())).split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["remove", "repeat", "replace", "insert", "swap", "cut"]))
        if op == "remove" and lines:
            del lines[i]
        elif op == "repeat" and lines:
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i:i + 1] = [draw(junk_line)]
        elif op == "insert":
            lines.insert(i, draw(junk_line))
        elif op == "swap" and lines:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut" and lines:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    sep = draw(st.sampled_from(LINE_BREAKS))
    return sep.join(lines)


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4),
                           max_leaves=10)


@st.composite
def offer_body(draw: st.DrawFn) -> bytes:
    """A request body: mostly a JSON envelope around a mutated offer, sometimes anything."""
    kind = draw(st.sampled_from(["offer", "offer", "offer", "envelope", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "envelope":
        body: Any = draw(json_values)
        if isinstance(body, dict) and draw(st.booleans()):
            body["sdp"] = draw(mutated_offer())
        return json.dumps(body).encode()
    return json.dumps({"type": draw(st.sampled_from(["offer", "offer", "answer", ""])),
                       "sdp": draw(mutated_offer())}).encode()


@settings(max_examples=int(300 * SCALE), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=offer_body())
def test_offer_checks_answer_every_input_with_400_or_a_checked_offer(body: bytes) -> None:
    from aiortc.sdp import SessionDescription

    config = ServerConfig()
    try:
        checked = check_offer_sdp(parse_offer(body), config)
    except HttpError as e:
        assert e.status == 400 and e.message
        return
    parsed = SessionDescription.parse(checked.sdp)  # what aiortc will be given parses...
    kinds = tuple(m.kind for m in parsed.media)
    assert kinds == checked.kinds, "...into exactly the sections that were checked"
    assert kinds.count("video") <= config.max_offer_video and kinds.count("audio") <= config.max_offer_audio
    assert kinds.count("application") == 1
    assert sum(len(m.ice_candidates) for m in parsed.media) == checked.candidates <= config.max_sdp_candidates


def _post(url: str, body: bytes, token: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _session(server: Server) -> tuple[str, str]:
    request = urllib.request.Request(f"{server.base}/api/sessions", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as r:
        body = json.loads(r.read())
    return body["session_id"], body["token"]


def _delete(server: Server, sid: str, token: str) -> None:
    request = urllib.request.Request(f"{server.base}/api/sessions/{sid}", method="DELETE",
                                     headers={"Authorization": f"Bearer {token}"})
    urllib.request.urlopen(request, timeout=30).close()


@pytest.mark.slow
def test_signalling_fuzz_against_the_server_never_5xx(server: Server) -> None:
    server.wait_idle()
    proc = psutil.Process(server.proc.pid)
    rss0 = proc.memory_info().rss
    current = list(_session(server))
    statuses: list[int] = []

    @settings(max_examples=int(40 * SCALE), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(body=offer_body())
    def fuzz(body: bytes) -> None:
        status = _post(f"{server.base}/api/sessions/{current[0]}/offer", body, current[1])
        statuses.append(status)
        assert status < 500, f"{status} for {body[:300]!r}"
        if status in (200, 403):  # the offer was taken (or its session failed at once): a fresh session
            _delete(server, *current)
            current[:] = _session(server)

    try:
        fuzz()
    finally:
        _delete(server, *current)
    growth_mb = (proc.memory_info().rss - rss0) / 2**20
    print(f"fuzz: {len(statuses)} offers, statuses {sorted(set(statuses))}, RSS +{growth_mb:.1f} MB")
    assert growth_mb <= 20, f"server RSS grew {growth_mb:.1f} MB over the fuzz"
    server.wait_idle()
    client = LoopbackClient(server.url, noise_frames())

    async def still_serves() -> None:
        try:
            await client.connect()
            await asyncio.wait_for(client.first_frame.wait(), 60)
        finally:
            await client.close()

    run(still_serves())
