"""WebRTC signalling of a session: the offer's checks, the answer, and the peer connection's wiring.

    POST /api/sessions/{id}/offer {"type": "offer", "sdp"} --> parse_offer --> check_offer_sdp
        --> answer: RTCPeerConnection, setRemoteDescription --> on "track": the webcam is drained into
            the session's inbox and animated (engines.animate_newest) into the AnimatedTrack sent back;
            the microphone comes back as a DelayedAudioTrack; on "datachannel": channel.py
        --> the answer's SDP
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from . import channel
from ._jitter import use_low_latency_jitter_buffer
from .config import ServerConfig
from .engines import animate_newest
from .http_guards import HttpError
from .sessions import Registry, Session, SessionState
from .stats import median_server_delay_s
from .tracks import AnimatedTrack, DelayedAudioTrack, NewestSlot, drain

logger = logging.getLogger(__name__)

SDP_SETUP_TIMEOUT_S = 10.0  # setRemoteDescription + createAnswer (host candidates only: well under 1 s)

_MEDIA_RE = re.compile(r"^m=(\w+) ", re.M)
_FINGERPRINT_RE = re.compile(
    r"^a=fingerprint:(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$")
_OFFER_SHAPE = 'expected JSON {"type": "offer", "sdp": "..."}'


def parse_offer(raw: bytes) -> str:
    """The SDP of an offer's JSON body. Raises HttpError(400)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HttpError(400, "bad_offer", _OFFER_SHAPE) from e
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise HttpError(400, "bad_offer", _OFFER_SHAPE)
    return str(body["sdp"])


def check_offer_sdp(sdp: str, config: ServerConfig) -> None:
    """Cheap structural checks before aiortc parses the offer. Raises HttpError(400)."""
    def bad(message: str) -> HttpError:
        return HttpError(400, "bad_offer", message)

    if not sdp.startswith("v=0"):
        raise bad("expected an SDP offer starting with v=0")
    kinds = _MEDIA_RE.findall(sdp)
    if len(kinds) > config.max_sdp_media:
        raise bad(f"expected at most {config.max_sdp_media} media sections; got {len(kinds)}")
    if kinds.count("video") != 1:
        raise bad(f"expected exactly one video section (the webcam); got {kinds.count('video')}")
    if kinds.count("audio") > 1 or kinds.count("application") != 1:
        raise bad("expected at most one audio section and exactly one data channel (m=application)")
    if any(k not in ("video", "audio", "application") for k in kinds):
        raise bad("expected only video, audio and application media sections")
    if sdp.count("a=candidate:") > config.max_sdp_candidates:
        raise bad(f"expected at most {config.max_sdp_candidates} ICE candidates")
    for needed in ("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:", "a=setup:"):
        if needed not in sdp:
            raise bad(f"the offer has no {needed[2:-1]}")
    for line in re.findall(r"^a=fingerprint:.*$", sdp, re.M):
        if not _FINGERPRINT_RE.match(line.rstrip("\r")):
            raise bad("expected a=fingerprint:sha-256 (or sha-384/512) followed by colon-separated hex bytes")
    sections = _MEDIA_RE.split(sdp)[1:]  # aiortc 1.16 breaks on a media section without a=mid
    if any("a=mid:" not in body for body in sections[1::2]):
        raise bad("every media section needs an a=mid line")


def check_offer_unused(session: Session) -> None:
    """Raises HttpError(409) when the session already took an offer (offers are single use)."""
    if session.state != SessionState.CREATED or session.pc is not None:
        raise HttpError(409, "offer_used", "this session has already received its offer; create a new session")


async def answer(session: Session, sdp: str, registry: Registry, config: ServerConfig) -> RTCSessionDescription:
    """Take a checked offer: a peer connection wired to the session, and its answer. Raises HttpError
    (400 when aiortc cannot use the offer, 403 when the session ended meanwhile, 409 when another offer
    won)."""
    check_offer_unused(session)  # a concurrent offer may have won while the body was read
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session.pc = pc
    _wire(session, pc, registry, config)
    try:
        await asyncio.wait_for(pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer")),
                               SDP_SETUP_TIMEOUT_S)
        if not any(t.kind == "video" for t in session.remote_tracks):
            raise ValueError("no usable video track in the offer")
        local = await asyncio.wait_for(pc.createAnswer(), SDP_SETUP_TIMEOUT_S)
        await asyncio.wait_for(pc.setLocalDescription(local), SDP_SETUP_TIMEOUT_S)
        if not any(t.sender.track is not None and t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("no video codec in common")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # aiortc raises many kinds on bad SDP; all are the client's fault here
        await _drop_pc(session)
        logger.info("session %s: offer refused: %s", session.short, type(e).__name__)
        detail = str(e)[:200] if isinstance(e, ValueError) and str(e) else f"malformed SDP ({type(e).__name__})"
        raise HttpError(400, "bad_offer", f"the offer could not be used: {detail}") from e
    if session.state == SessionState.ENDED:
        raise HttpError(403, "forbidden", "the session ended")
    session.state = SessionState.OFFERED
    session.offered_s = time.monotonic()
    return pc.localDescription


async def _drop_pc(session: Session) -> None:
    """Undo a failed offer: the session may try again with a new one."""
    pc, session.pc = session.pc, None
    for task in list(session.tasks):
        task.cancel()
    session.remote_tracks.clear()
    session.inbox.close()
    session.outbox.close()
    if pc is not None:
        try:
            await pc.close()
        except Exception as e:  # aiortc may fail to close a connection it could not set up
            logger.info("session %s: closing a refused peer connection: %s", session.short, type(e).__name__)
    session.inbox, session.outbox = NewestSlot(), NewestSlot()


def _wire(session: Session, pc: RTCPeerConnection, registry: Registry, config: ServerConfig) -> None:
    """The peer connection's callbacks: tracks, the data channel, connection state."""

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if session.pc is not pc:
            return
        session.remote_tracks.append(track)
        if track.kind == "video":
            if config.low_latency_jitter_buffer:
                for t in pc.getTransceivers():
                    if t.receiver.track is track and not use_low_latency_jitter_buffer(t.receiver):
                        logger.warning("aiortc's jitter buffer is not as expected; keeping it (+1 frame latency)")
            pc.addTrack(AnimatedTrack(session.outbox, session.stats))
            session.spawn(_drain_then_end(session, track, registry), "drain")
            session.spawn(_animate_then_end(session, registry), "process")
        elif track.kind == "audio":  # the microphone comes back, delayed to stay in sync with the video
            pc.addTrack(DelayedAudioTrack(track, lambda: median_server_delay_s(session.stats)))

    @pc.on("datachannel")
    def on_datachannel(ch: Any) -> None:
        if session.pc is not pc or session.channel is not None:
            ch.close()
            return
        session.channel = ch

        @ch.on("message")
        def on_message(message: str | bytes) -> None:
            channel.handle_message(session, registry, config, message)

        @ch.on("close")
        def on_close() -> None:
            if session.pc is pc:
                registry.end_soon(session, "data channel closed")

        session.spawn(channel.send_stats(session, config), "stats")

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if session.pc is pc and pc.connectionState in ("failed", "closed"):
            registry.end_soon(session, f"connection {pc.connectionState}")


async def _drain_then_end(session: Session, track: MediaStreamTrack, registry: Registry) -> None:
    await drain(track, session.inbox, session.stats)
    registry.end_soon(session, "webcam track ended")


async def _animate_then_end(session: Session, registry: Registry) -> None:
    await animate_newest(session.engine, session.inbox, session.outbox, session.stats,
                         lambda found: session.send({"type": "face", "found": found}))
    registry.end_soon(session, "inference worker failed")  # a no-op when the session is already ending
