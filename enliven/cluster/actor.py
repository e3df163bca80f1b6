"""A live session as a Ray actor: its peer connection, its photo and its Animator, on the node Ray chose.

The actor runs the single-machine server's own session code in its event loop (a Ray async actor's
loop): a Registry holding this one Session (the same timeouts: offer, connect, heartbeat, idle),
``signalling.answer`` (the same peer connection, drain task, newest-frame slots, animated and audio
tracks), channel.py's data-channel protocol, and a ThreadEngine (SessionAnimator in the session's
thread; this process holds one session, so no other session competes for its GIL). So a session
behaves here exactly as on one machine; only where it runs differs.

The front door (frontdoor.py) calls, in this order:

    put_upload(Chunk) ...        the uploaded photo, in chunks (never through an object store)
    open(token, photo_kind)      -> Opened | Refused    decode the photo, find the face, build the Animator
    answer(sdp)                  -> Answered | Refused  the answer (the node's announced address added)
    next_state(after, wait_s)    -> StateChange         long poll: the session's state once it differs
    photo_chunk(read, offset)    -> Chunk               GET /api/sessions/{id}/photo, in chunks
    end(reason)                  -> ActorStatus         end now: bye on the data channel, photo dropped
    status()                     -> ActorStatus         node, state, frames, photos still alive here

then removes the session's placement group, which ends this process: nothing of the photo outlives it.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from typing import Any

from enliven.engine.defaults import builtin_photo
from enliven.engine.errors import BadImageError, EnlivenError
from enliven.engine.image_io import load_photo
from enliven.server import signalling
from enliven.server.config import ServerConfig
from enliven.server.engines import ThreadEngine
from enliven.server.http_guards import HttpError
from enliven.server.photos import PhotoCounter
from enliven.server.session_animator import DebugOptions, EngineSettings, InferenceOptions, warm_up
from enliven.server.sessions import Registry, Session, SessionState
from enliven.server.stats import FrameStats

from .announce import announce, announced_address
from .messages import CHUNK_BYTES, ActorStatus, Answered, Chunk, Node, Opened, Refused, StateChange

logger = logging.getLogger(__name__)

PNG_MAX_BYTES = 256 << 20  # the front door's lossless PNG of a decoded photo (at most max_photo_pixels)
STATE_POLL_S = 0.2  # how often next_state looks at the session's state (it changes in aiortc's callbacks)


def this_node() -> Node:
    """The node this process runs on, as Ray knows it, and its announced address (announce.py)."""
    import ray  # only ever called inside a Ray actor

    context = ray.get_runtime_context()
    return Node(context.get_node_id(), ray.util.get_node_ip_address(), announced_address(), os.getpid())


class NodeStats(FrameStats):
    """A session's frame counters; its stats messages also say which node animates it."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def snapshot(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().snapshot(), "node": self.node_id}


class SessionActor:
    """One session, created by the front door on the node of its placement group (placement.py).

    ``node`` is given in tests that run the actor in-process; under Ray it is read from the runtime.
    """

    def __init__(self, config: ServerConfig, sid: str, settings: EngineSettings, debug: DebugOptions,
                 node: Node | None = None) -> None:
        if not logging.getLogger().handlers:  # Ray passes this process's stderr on to the front door's log
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("enliven.server").setLevel(logging.INFO)
        self.config = replace(config, max_sessions=1)
        self.sid = sid
        self.settings = settings
        self.debug = debug
        self.node = node if node is not None else this_node()
        self.registry = Registry(self.config)
        self.registry.on_end.append(lambda _: self._ended.set())
        self.photos = PhotoCounter()
        self.session: Session | None = None
        self._ended = asyncio.Event()
        self._upload: bytearray | None = None
        self._photo_reads: dict[int, bytes | None] = {}  # read id -> the PNG being read in chunks

    # --- creation --------------------------------------------------------------------------------
    async def put_upload(self, chunk: Chunk) -> None:
        """Take one chunk of the photo (the front door's PNG of the decoded upload; chunks in any order)."""
        if not 0 < chunk.total <= PNG_MAX_BYTES:
            raise ValueError(f"a photo of 1..{PNG_MAX_BYTES} bytes; got {chunk.total}")
        if self._upload is None or len(self._upload) != chunk.total:
            self._upload = bytearray(chunk.total)
        self._upload[chunk.offset:chunk.offset + len(chunk.data)] = chunk.data

    async def open(self, token: str, photo_kind: str) -> Opened | Refused:
        """Prepare the photo (the chunks put so far, or the built-in photo for ``"builtin"``)."""
        upload: bytes | None = None
        if photo_kind != "builtin":
            if self._upload is None:
                return Refused.of(BadImageError("the photo is empty"))
            upload, self._upload = bytes(self._upload), None
        # MediaPipe's first run in a process imports it, and mediapipe.tasks' audio_record keeps the OSError
        # of its failed `import sounddevice`, whose traceback holds every frame of the importing stack and
        # so the image being processed: let that be the built-in photo, never the user's. (The analytic
        # engine runs all of MediaPipe; the trained one's generator adds no such import.)
        await asyncio.to_thread(warm_up, builtin_photo(), ("analytic",))
        inference = InferenceOptions(self.config.precision, generator=self.config.refiner)
        engine = ThreadEngine(self.sid, self.settings, self.photos, self.debug, inference)
        try:
            # the front door decoded the user's file in its capped child and sent a PNG of its own making
            photo = None if upload is None else await asyncio.to_thread(
                load_photo, upload, max_pixels=self.config.max_photo_pixels, max_bytes=PNG_MAX_BYTES)
            upload = None
            faces = await engine.prepare(photo)
        except EnlivenError as e:
            await engine.close()
            return Refused.of(e)
        finally:
            upload = photo = None  # only the engine holds the decoded pixels
        self.session = Session(id=self.sid, token=token, engine=engine, photo_kind=photo_kind,
                               stats=NodeStats(self.node.node_id))
        self.registry.add(self.session)
        self.registry.start()
        return Opened(self.node, faces)

    # --- signalling ------------------------------------------------------------------------------
    async def answer(self, sdp: str) -> Answered | Refused:
        """The answer to a checked offer: the session's peer connection is made here, in this loop."""
        session = self.session
        if session is None or session.state == SessionState.ENDED:
            return Refused(403, "forbidden", "the session ended")
        try:
            checked = signalling.check_offer_sdp(sdp, self.config)  # as the front door did, on this node
            local = await signalling.answer(session, checked, self.registry, self.config)
        except HttpError as e:
            return Refused(e.status, e.code, e.message)
        answer_sdp = local.sdp if self.node.announced is None else announce(local.sdp, self.node.announced)
        return Answered(answer_sdp, local.type)

    # --- watching --------------------------------------------------------------------------------
    def _state(self) -> StateChange:
        session = self.session
        if session is None:
            return StateChange(SessionState.CREATED.value)
        return StateChange(session.state.value, session.end_reason)

    async def next_state(self, after: str, wait_s: float) -> StateChange:
        """The session's state as soon as it is not ``after``, or after ``wait_s`` seconds (a long poll
        that is also the front door's liveness probe of this actor)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (change := self._state()).state == after and loop.time() < deadline:
            try:
                await asyncio.wait_for(self._ended.wait(), STATE_POLL_S)
            except TimeoutError:
                pass
        return change

    async def status(self) -> ActorStatus:
        session = self.session
        state = self._state().state
        return ActorStatus(self.node, state, session.stats.frames_in if session else 0,
                           session.stats.frames_out if session else 0, self.photos.collected())

    # --- the photo -------------------------------------------------------------------------------
    async def photo_chunk(self, read: int, offset: int) -> Chunk:
        """Chunk ``offset`` of the photo as PNG (read ``read`` encodes it once; its last chunk drops it)."""
        if read not in self._photo_reads:
            session, png = self.session, None
            if session is not None and session.state != SessionState.ENDED:
                png = await session.engine.photo_png()
            self._photo_reads[read] = png
        png = self._photo_reads[read]
        if png is None:
            self._photo_reads.pop(read, None)
            return Chunk(0, b"", 0)
        data = png[offset:offset + CHUNK_BYTES]
        if offset + len(data) >= len(png):
            self._photo_reads.pop(read, None)
        return Chunk(offset, data, len(png))

    # --- ending ----------------------------------------------------------------------------------
    async def end(self, reason: str) -> ActorStatus:
        """End the session now (idempotent): bye on the data channel, peer connection closed, photo and
        Animator dropped. Returns the status after, with the photos still alive here (0 expected)."""
        self._upload = None
        self._photo_reads.clear()
        if self.session is not None:
            await self.registry.end(self.session, reason)
        await self.registry.stop()
        return await self.status()
