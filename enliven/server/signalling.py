"""WebRTC signalling of a session: the offer's checks, the answer, and the peer connection's wiring.

    POST /api/sessions/{id}/offer {"type": "offer", "sdp"} --> parse_offer --> check_offer_sdp
        --> answer: RTCPeerConnection (video: VP8 only), setRemoteDescription of the checked SDP
            --> ICE restricted (ice_policy.py), data-channel reassembly capped (_aiortc_guards.py)
            --> the animated video's VP8 encoder: aiortc's, cheaper for rendered frames (_vp8.py)
            --> on "track": the webcam is drained into the session's inbox (its decoder queue bounded) and
                animated (engines.animate_newest) into the AnimatedTrack sent back; the microphone is
                drained into a DelayedAudioTrack sent back; on "datachannel": channel.py
        --> the answer's SDP (announcing the data channel's max-message-size)

The offer is parsed by aiortc's own parser (aiortc.sdp.SessionDescription.parse) on the raw text before
anything is built, so the checks count exactly the sections aiortc will set up (its parser splits lines
on any line break, lone CR included). aiortc is then given those same lines, less the refused ICE
candidates: what was checked is what is used.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription, candidate_from_sdp

from . import channel, upstream
from ._aiortc_guards import bound_decoder_queue, cap_sctp_reassembly
from ._jitter import use_low_latency_jitter_buffer
from ._vp8 import use_lean_vp8_encoder
from .config import ServerConfig
from .engines import animate_newest
from .http_guards import HttpError
from .ice_policy import IcePolicy, IcePolicyError
from .sessions import Registry, Session, SessionState
from .stats import median_server_delay_s
from .tracks import AnimatedTrack, DelayedAudioTrack, NewestSlot, drain

logger = logging.getLogger(__name__)

SDP_SETUP_TIMEOUT_S = 10.0  # setRemoteDescription + createAnswer (host candidates only: well under 1 s)
MAX_CHANNEL_STREAMS = 16  # SCTP streams (data channels) a client may open
MEDIA_KINDS = ("video", "audio", "application")
VIDEO_CODECS = ("video/VP8", "video/rtx")  # what the server decodes: VP8 key frames declare their size
FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}  # DTLS certificate hashes accepted
_HEX_PAIRS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*$")
_CANDIDATE = "a=candidate:"
_OFFER_SHAPE = 'expected JSON {"type": "offer", "sdp": "..."}'


def parse_offer(raw: bytes) -> str:
    """The SDP of an offer's JSON body. Raises HttpError(400)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise HttpError(400, "bad_offer", _OFFER_SHAPE) from e
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise HttpError(400, "bad_offer", _OFFER_SHAPE)
    return str(body["sdp"])


@dataclass(frozen=True)
class CheckedOffer:
    """An offer that passed ``check_offer_sdp``."""

    sdp: str  # what aiortc is given: the offer's lines as aiortc splits them, refused candidates left out
    kinds: tuple[str, ...]  # the media sections' kinds, in order
    candidates: int  # ICE candidates kept
    refused_candidates: int  # ICE candidates left out (outside the peer networks, or mDNS names)


def _bad(message: str) -> HttpError:
    return HttpError(400, "bad_offer", message)


def check_offer_sdp(sdp: str, config: ServerConfig, policy: IcePolicy | None = None) -> CheckedOffer:
    """Parse the offer with aiortc's parser and check what it would set up: at most ``max_offer_video``
    video and ``max_offer_audio`` audio sections plus one data channel (m=application), each with a mid,
    ICE credentials, a DTLS role and sha-256/384/512 fingerprints; at most ``max_sdp_candidates``
    candidates. Raises HttpError(400). Candidates ``policy`` refuses are left out of the returned SDP."""
    policy = policy or IcePolicy.for_config(config)
    if not sdp.startswith("v=0"):
        raise _bad("expected an SDP offer starting with v=0")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc's parser raises many kinds (and asserts) on malformed input
        raise _bad(f"malformed SDP ({type(e).__name__})") from e
    kinds = tuple(m.kind for m in parsed.media)
    if any(k not in MEDIA_KINDS for k in kinds):
        raise _bad("expected only video, audio and application media sections")
    if kinds.count("video") > config.max_offer_video or kinds.count("audio") > config.max_offer_audio:
        raise _bad(f"expected at most {config.max_offer_video} video and {config.max_offer_audio} audio "
                   f"sections; got {kinds.count('video')} and {kinds.count('audio')}")
    if kinds.count("application") != 1:
        raise _bad("expected exactly one data channel section (m=application)")
    mids = [m.rtp.muxId for m in parsed.media]
    if any(not mid for mid in mids) or len(set(mids)) != len(mids):
        raise _bad("every media section needs its own a=mid line")
    for group in parsed.group:
        if group.semantic == "BUNDLE" and any(str(item) not in mids for item in group.items):
            raise _bad("a=group:BUNDLE names a media section the offer does not have")
    for media in parsed.media:
        _check_transport(media)
    offered = sum(len(m.ice_candidates) for m in parsed.media)
    if offered > config.max_sdp_candidates:
        raise _bad(f"expected at most {config.max_sdp_candidates} ICE candidates; got {offered}")
    kept, refused = _without_refused_candidates(sdp, policy)
    return CheckedOffer("\r\n".join(kept) + "\r\n", kinds, offered - refused, refused)


def _check_transport(media: Any) -> None:
    if not media.ice.usernameFragment or not media.ice.password:
        raise _bad("the offer has no ice-ufrag or ice-pwd")
    if media.dtls is None:
        raise _bad("the offer has no setup (DTLS role)")
    if not media.dtls.fingerprints:
        raise _bad("the offer has no fingerprint")
    for fp in media.dtls.fingerprints:
        size = FINGERPRINT_BYTES.get(fp.algorithm.lower())
        if size is None or not _HEX_PAIRS.match(fp.value) or len(fp.value) != 3 * size - 1:
            raise _bad("expected a=fingerprint:sha-256 (or sha-384/512) followed by its colon-separated hex bytes")


def _without_refused_candidates(sdp: str, policy: IcePolicy) -> tuple[list[str], int]:
    """The offer's lines, split as aiortc splits them, less the candidate lines the policy refuses (and
    candidate lines before the first media section, which aiortc ignores). Returns (lines, refused)."""
    kept, refused, in_media = [], 0, False
    for line in sdp.splitlines():
        in_media = in_media or line.startswith("m=")
        if line.startswith(_CANDIDATE):
            if not in_media:
                continue
            host = candidate_from_sdp(line[len(_CANDIDATE):]).ip  # parsed once already: aiortc accepted it
            if policy.refuse_candidate(host):
                refused += 1
                continue
        kept.append(line)
    return kept, refused


def check_offer_unused(session: Session) -> None:
    """Raises HttpError(409) when the session already took an offer (offers are single use)."""
    if session.state != SessionState.CREATED or session.pc is not None:
        raise HttpError(409, "offer_used", "this session has already received its offer; create a new session")


async def answer(session: Session, offer: CheckedOffer, registry: Registry,
                 config: ServerConfig) -> RTCSessionDescription:
    """Take a checked offer: a peer connection wired to the session, and its answer. Raises HttpError
    (400 when aiortc cannot use the offer, 403 when the session ended meanwhile, 409 when another offer
    won)."""
    check_offer_unused(session)  # a concurrent offer may have won while the body was read
    kind = upstream.offered_upstream(offer.sdp)  # "landmarks": the page sends face points, no video
    upstream.check_upstream(kind, config)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session.pc = pc
    _wire(session, pc, registry, config)
    try:
        if "video" in offer.kinds:  # VP8 only: its key frames declare their size before decoding
            codecs = RTCRtpSender.getCapabilities("video").codecs
            pc.addTransceiver("video", direction="sendrecv").setCodecPreferences(
                [c for c in codecs if c.mimeType in VIDEO_CODECS])
        await asyncio.wait_for(pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer")),
                               SDP_SETUP_TIMEOUT_S)
        IcePolicy.for_config(config).apply(pc)
        _cap_channel(session, pc, registry, config)
        if kind == "landmarks":
            upstream.start_landmarks(session, pc, registry, config)
        elif not any(t.kind == "video" for t in session.remote_tracks):
            raise ValueError("no usable video track in the offer")
        local = await asyncio.wait_for(pc.createAnswer(), SDP_SETUP_TIMEOUT_S)
        await asyncio.wait_for(pc.setLocalDescription(local), SDP_SETUP_TIMEOUT_S)
        if not any(t.sender.track is not None and t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("no video codec in common")
        for t in pc.getTransceivers():
            if t.kind == "video" and t.sender.track is not None and not use_lean_vp8_encoder(t):
                _warn_once("the VP8 encoder cannot be replaced (aiortc's settings: more CPU per frame)")
    except asyncio.CancelledError:
        raise
    except IcePolicyError as e:
        await _drop_pc(session)
        logger.warning("session %s: %s", session.short, e)
        raise HttpError(503, "server_misconfigured", "the server cannot restrict its network use with this "
                                                     "aiortc version; try again later", {"Retry-After": "60"}) from e
    except Exception as e:  # aiortc raises many kinds on bad SDP; all are the client's fault here
        await _drop_pc(session)
        logger.info("session %s: offer refused: %s", session.short, type(e).__name__)
        detail = str(e)[:200] if isinstance(e, ValueError) and str(e) else f"malformed SDP ({type(e).__name__})"
        raise HttpError(400, "bad_offer", f"the offer could not be used: {detail}") from e
    if session.state == SessionState.ENDED:
        raise HttpError(403, "forbidden", "the session ended")
    session.state = SessionState.OFFERED
    session.offered_s = time.monotonic()
    local = pc.localDescription
    sdp = re.sub(r"(?m)^a=max-message-size:\d+", f"a=max-message-size:{config.max_channel_message_bytes}",
                 local.sdp)
    return RTCSessionDescription(sdp=sdp, type=local.type)


_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning("aiortc is not as expected: %s (keeping aiortc's behaviour)", what)


def _cap_channel(session: Session, pc: RTCPeerConnection, registry: Registry, config: ServerConfig) -> None:
    """A client that sends a data-channel message larger than the answer announced is ended."""
    if pc.sctp is None:
        return

    def violated(reason: str) -> None:
        if session.pc is pc:
            registry.end_soon(session, "data-channel limit broken")

    if not cap_sctp_reassembly(pc.sctp, config.max_channel_message_bytes, MAX_CHANNEL_STREAMS, violated):
        _warn_once("the data channel's reassembly cannot be capped")


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
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    _guard_video_receiver(session, t.receiver, config)
            pc.addTrack(AnimatedTrack(session.outbox, session.stats))
            session.spawn(_drain_then_end(session, track, registry), "drain")
            session.spawn(_animate_then_end(session, registry), "process")
        elif track.kind == "audio":  # the microphone comes back, delayed to stay in sync with the video
            audio = DelayedAudioTrack(track, lambda: median_server_delay_s(session.stats))
            pc.addTrack(audio)
            session.spawn(audio.drain(), "audio")  # even when the client does not take it back

    @pc.on("datachannel")
    def on_datachannel(ch: Any) -> None:
        if ch.label == upstream.POINTS_CHANNEL:
            upstream.wire_points_channel(session, pc, ch)
            return
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


def _guard_video_receiver(session: Session, receiver: Any, config: ServerConfig) -> None:
    """The webcam's receiver: frames released on their marker bit; at most a few encoded frames waiting
    for the decoder; frames larger than max_webcam_pixels dropped before decoding."""
    if config.low_latency_jitter_buffer and not use_low_latency_jitter_buffer(receiver):
        _warn_once("the jitter buffer cannot be replaced (+1 frame latency)")

    def dropped(why: str) -> None:
        if why == "oversized":
            session.stats.dropped_oversized += 1
        else:
            session.stats.dropped_undecoded += 1

    if not bound_decoder_queue(receiver, config.max_webcam_pixels, dropped):
        _warn_once("the decoder queue cannot be bounded")


async def _drain_then_end(session: Session, track: MediaStreamTrack, registry: Registry) -> None:
    await drain(track, session.inbox, session.stats)
    registry.end_soon(session, "webcam track ended")


async def _animate_then_end(session: Session, registry: Registry) -> None:
    await animate_newest(session.engine, session.inbox, session.outbox, session.stats,
                         lambda found: session.send({"type": "face", "found": found}))
    registry.end_soon(session, "inference worker failed")  # a no-op when the session is already ending
