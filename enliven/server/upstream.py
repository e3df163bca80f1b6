"""What drives a session: its page's camera video, or the face points the page measures itself.

The offer says which. A page that runs the face landmarker in the browser offers its video section
receive-only (it sends no camera video, it receives the animated video) and opens a second data channel,
``points``, for the points (points.py):

    offer m=video sendrecv / sendonly --> "video": the webcam track is drained and animated (signalling.py)
    offer m=video recvonly            --> "landmarks": no video comes in;
        data channel "points" --> PointsUpstream (validate, order, rate limit) --> newest-points slot
            --> engines.animate_newest (SessionAnimator.points) --> AnimatedTrack, as for video
        stall watch: no points for STALL_S --> "no face" for EASE_FOR_S (the output eases to the photo's pose)

``enliven serve --landmarks-only`` refuses offers that carry video (422 ``landmarks_only``): the camera's
pictures then never leave the user's device.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Literal

from aiortc import RTCPeerConnection

from .config import ServerConfig
from .engines import animate_newest
from .http_guards import HttpError
from .points import PointsUpstream
from .sessions import Registry, Session, SessionState
from .tracks import AnimatedTrack

logger = logging.getLogger(__name__)

Upstream = Literal["video", "landmarks", "none"]
POINTS_CHANNEL = "points"  # label of the data channel that carries the face points
STALL_S = 0.5  # no points for this long: the page stopped sending; the output eases as on a lost face
EASE_FOR_S = 1.0  # how long "no face" is animated after a stall (the ease is ~95 % done in 0.45 s), then held
EASE_TICK_S = 1 / 15  # the rate of those frames
ERROR_INTERVAL_S = 1.0  # the page is told about refused points at most this often

_VIDEO_SECTION_RE = re.compile(r"^m=video .*?(?=^m=|\Z)", re.M | re.S)
_DIRECTION_RE = re.compile(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", re.M)


def offered_upstream(sdp: str) -> Upstream:
    """What the offer's video section says: "landmarks" when it only receives (the page sends face points, no
    camera video), "video" when it sends (sendrecv, sendonly, or no direction: sendrecv), "none" when there
    is no video section or it is inactive."""
    section = _VIDEO_SECTION_RE.search(sdp)
    if section is None:
        return "none"
    found = _DIRECTION_RE.search(section.group(0))
    direction = "sendrecv" if found is None else found.group(1)
    return {"recvonly": "landmarks", "inactive": "none"}.get(direction, "video")  # type: ignore[return-value]


def check_upstream(upstream: Upstream, config: ServerConfig) -> None:
    """Raises HttpError(422, "landmarks_only") for a video offer to a server that takes face points only."""
    if config.landmarks_only and upstream == "video":
        raise HttpError(422, "landmarks_only",
                        "this server takes face points only (enliven serve --landmarks-only): the page must run "
                        "the face landmarker in the browser and send no camera video")


def start_landmarks(session: Session, pc: RTCPeerConnection, registry: Registry, config: ServerConfig) -> None:
    """Wire a session driven by face points: the animated track on the offered (receive-only) video section,
    the animation task and the stall watch. Call after setRemoteDescription, before createAnswer."""
    up = PointsUpstream(config.max_points_per_s)
    session.points = up
    pc.addTrack(AnimatedTrack(session.outbox, session.stats))
    session.spawn(_animate_then_end(session, up, registry), "process")
    session.spawn(_watch_stalls(up), "stall")


def wire_points_channel(session: Session, pc: RTCPeerConnection, ch: Any) -> None:
    """The ``points`` data channel of a session driven by face points (closed for any other session)."""
    up = session.points
    if session.pc is not pc or up is None:
        ch.close()
        return

    @ch.on("message")
    def on_message(data: str | bytes) -> None:
        if session.state != SessionState.CONNECTED:  # before the hello nothing is taken
            return
        now = time.monotonic()
        message = up.receive(data if isinstance(data, bytes) else b"", now)
        if message is not None:
            session.stats.frames_in += 1
            session.stats.last_in_s = now
        elif up.intake.last_error is not None and now - up.errors_sent_s >= ERROR_INTERVAL_S:
            up.errors_sent_s = now
            error, up.intake.last_error = up.intake.last_error, None
            session.send({"type": "error", "code": "bad_points", "message": f"points dropped: {error}"})


async def _animate_then_end(session: Session, up: PointsUpstream, registry: Registry) -> None:
    await animate_newest(session.engine, up.inbox, session.outbox, session.stats,
                         lambda found: session.send({"type": "face", "found": found}))
    registry.end_soon(session, "inference worker failed")  # a no-op when the session is already ending


async def _watch_stalls(up: PointsUpstream) -> None:
    while True:
        await asyncio.sleep(EASE_TICK_S)
        tick = up.stalled_tick(time.monotonic(), STALL_S, EASE_FOR_S)
        if tick is not None and up.inbox.depth == 0:
            up.inbox.put(tick)


async def stats_fields(session: Session) -> dict[str, Any]:
    """The stats message's upstream part: which upstream, the video RTP packets received (none when the
    page sends face points) and the points counters."""
    packets = 0
    pc = session.pc
    if pc is not None:
        for t in pc.getTransceivers():
            if t.kind != "video":
                continue
            report = await t.receiver.getStats()
            packets += sum(int(getattr(s, "packetsReceived", 0) or 0) for s in report.values()
                           if getattr(s, "type", "") == "inbound-rtp")
    fields: dict[str, Any] = {"upstream": "video" if session.points is None else "landmarks",
                              "video_packets_in": packets}
    if session.points is not None:
        fields["points"] = session.points.state()
    return fields
