"""The front door's side of ``--cluster``: sessions placed on Ray nodes, seen through the usual registry.

The routes, guards, uploads and limits stay as without a cluster (app.py plugs this in as its
SessionBackend). A session's engine is an ActorEngine: ``prepare`` reserves a slot (503 when none is
free in time), starts the session's actor there and hands it the photo; the offer goes to the actor,
whose answer comes back; a watcher long-polls the actor's state, so the front door's registry
follows the session (connected, ended by its own timeouts) and frees it at once when the actor or
its node dies. Ending a session here ends it there (bye on its data channel, photo dropped), then
the actor's placement group is removed: the process that held the photo is gone.

    POST /api/sessions --> reserve a slot --> SessionActor on that node: put_upload ..., open
    POST .../offer     --> checks here (signalling.check_offer_sdp) --> actor.answer --> the answer
    watcher            <-- actor.next_state (long poll): connected / ended (reason) / actor lost
    DELETE, timeouts   --> actor.end(reason) --> remove the placement group (kills the actor)
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import numpy as np
from aiortc import RTCSessionDescription

from enliven.engine.image_io import encode_png
from enliven.server import signalling
from enliven.server.config import ServerConfig
from enliven.server.engines import SessionEngine
from enliven.server.http_guards import HttpError
from enliven.server.session_animator import DebugOptions, EngineSettings
from enliven.server.sessions import Registry, Session, SessionState
from enliven.server.stats import FrameStats
from enliven.server.tracks import InputFrame, OutputFrame

from .messages import CHUNK_BYTES, ActorStatus, Answered, Chunk, Node, Opened, Refused, StateChange
from .placement import ActorDiedError, NoFreeSlot, Placement, RayError, Slot

logger = logging.getLogger(__name__)

POLL_WAIT_S = 10.0  # the actor answers a state long poll after this long at most
LOST_AFTER_S = 10.0  # an actor unreachable for this long (beyond its long poll) is taken as lost
END_TIMEOUT_S = 5.0  # the longest an ending session waits for its actor's goodbye before the actor is killed
RETRY_AFTER_S = "30"  # Retry-After of a 503 when no node has a free slot (as a full single server)
LOST_REASON = "its machine stopped (the cluster node or its actor was lost)"


class ActorLost(Exception):
    """A call to a session's actor failed: the actor or its node died, or it did not answer in time."""


async def call(ref: Any, timeout_s: float) -> Any:
    """The result of the actor call ``ref`` (a Ray ObjectRef). Raises ActorLost."""
    try:
        return await asyncio.wait_for(ref, timeout_s)
    except TimeoutError as e:
        raise ActorLost(f"no answer within {timeout_s:g} s") from e
    except RayError as e:
        raise ActorLost(type(e).__name__) from e


class ActorEngine(SessionEngine):
    """A session whose photo and Animator live in a SessionActor on a cluster node."""

    def __init__(self, door: ClusterFrontDoor, sid: str, token: str, settings: EngineSettings,
                 debug: DebugOptions) -> None:
        super().__init__(sid, settings, debug)
        self.door = door
        self._token = token
        self.slot: Slot | None = None
        self.actor: Any = None  # the actor's handle
        self.node: Node | None = None
        self.remote_state = SessionState.CREATED.value  # the session's state on the actor
        self.end_reason = "ended by the front door"  # what the actor tells the page (set by ClusterRegistry.end)
        self.lost = False  # the actor or its node died
        self.final: ActorStatus | None = None  # the actor's status after it ended the session
        self.stats: FrameStats | None = None  # the front door's counters of this session (filled in at its end)
        self._watcher: asyncio.Task[None] | None = None
        self._reads = itertools.count()

    # --- creation --------------------------------------------------------------------------------
    async def prepare(self, photo: np.ndarray | None) -> int:
        # The photo was decoded by the front door's capped child (server.decoding); it travels to the
        # actor as a lossless PNG of our own making, so the actor never parses the user's file.
        upload = None if photo is None else await asyncio.to_thread(encode_png, photo)
        del photo
        cluster = self.door.config.cluster
        assert cluster is not None
        try:
            self.slot = await self.door.placement.reserve(self.name)
        except NoFreeSlot as e:
            logger.info("session %s: %s", self.name[:8], e)
            raise HttpError(503, "busy", "every machine of the cluster is at its limit of sessions; try again in "
                                         "a minute", {"Retry-After": RETRY_AFTER_S}) from e
        self.actor = self.door.placement.start_actor(self.slot, self.door.config, self.name, self.settings, self.debug)
        try:
            if upload is not None:
                puts = [self.actor.put_upload.remote(Chunk(i, upload[i:i + CHUNK_BYTES], len(upload)))
                        for i in range(0, len(upload), CHUNK_BYTES)]
                await call(asyncio.gather(*puts), cluster.start_timeout_s)
            reply = await call(self.actor.open.remote(self._token, "builtin" if upload is None else "uploaded"),
                               cluster.start_timeout_s)
        except ActorLost as e:
            logger.warning("session %s: its actor on node %s did not start: %s", self.name[:8],
                           self.slot.node_id[:8], e)
            raise HttpError(503, "busy", "the machine chosen for this session failed; try again in a few seconds",
                            {"Retry-After": "5"}) from e
        if isinstance(reply, Refused):
            if reply.status:
                raise HttpError(reply.status, reply.code, reply.message)
            raise reply.engine_error()
        assert isinstance(reply, Opened)
        self.node, self.face_count = reply.node, reply.face_count
        self._watcher = asyncio.ensure_future(self._watch())
        logger.info("session %s placed on node %s (%s, pid %d)", self.name[:8], reply.node.node_id[:8],
                    reply.node.address, reply.node.pid)
        return self.face_count

    # --- signalling ------------------------------------------------------------------------------
    async def answer(self, session: Session, sdp: str) -> RTCSessionDescription:
        """The actor's answer to a checked offer (HttpError as signalling.answer; 503 when the actor is lost)."""
        cluster = self.door.config.cluster
        assert cluster is not None
        signalling.check_offer_unused(session)
        session.state, session.offered_s = SessionState.OFFERED, time.monotonic()  # a second offer gets 409
        try:
            reply = await call(self.actor.answer.remote(sdp), cluster.call_timeout_s)
        except ActorLost as e:
            self.door.registry.end_soon(session, LOST_REASON)
            raise HttpError(503, "busy", "the machine of this session stopped; create a new session",
                            {"Retry-After": "5"}) from e
        if isinstance(reply, Refused):
            if reply.status == 400 and session.state == SessionState.OFFERED:
                session.state = SessionState.CREATED  # a refused offer may be followed by a better one
            raise HttpError(reply.status or 400, reply.code, reply.message)
        assert isinstance(reply, Answered)
        if session.state == SessionState.ENDED:
            raise HttpError(403, "forbidden", "the session ended")
        return RTCSessionDescription(sdp=reply.sdp, type=reply.type)

    # --- watching --------------------------------------------------------------------------------
    async def _watch(self) -> None:
        """Follow the actor's session state until it ends or the actor is lost; then end it here too."""
        cluster = self.door.config.cluster
        assert cluster is not None
        after, failing_since = SessionState.CREATED.value, None
        while True:
            try:
                change: StateChange = await call(self.actor.next_state.remote(after, POLL_WAIT_S),
                                                 POLL_WAIT_S + cluster.call_timeout_s)
            except ActorLost as e:
                now = time.monotonic()
                failing_since = failing_since or now
                if isinstance(e.__cause__, ActorDiedError) or now - failing_since > LOST_AFTER_S:
                    self.lost = True
                    reason = LOST_REASON
                    logger.warning("session %s: its actor on node %s is lost (%s)", self.name[:8],
                                   self.node.node_id[:8] if self.node else "?", e)
                    break
                await asyncio.sleep(0.5)
                continue
            failing_since = None
            after = self.remote_state = change.state
            session = self.door.registry.get(self.name)
            if change.state == SessionState.CONNECTED.value and session is not None \
                    and session.state == SessionState.OFFERED:
                session.state, session.connected_s = SessionState.CONNECTED, time.monotonic()
            if change.state == SessionState.ENDED.value:
                reason = change.reason or "ended on its node"
                break
        session = self.door.registry.get(self.name)
        if session is not None:
            self.door.registry.end_soon(session, reason)

    # --- the photo and the end -------------------------------------------------------------------
    async def photo_png(self) -> bytes | None:
        actor, cluster = self.actor, self.door.config.cluster
        if actor is None or cluster is None:
            return None
        read = next(self._reads)
        try:
            first: Chunk = await call(actor.photo_chunk.remote(read, 0), cluster.call_timeout_s)
            parts, offset = [first.data], len(first.data)
            while 0 < offset < first.total:
                chunk: Chunk = await call(actor.photo_chunk.remote(read, offset), cluster.call_timeout_s)
                parts.append(chunk.data)
                offset += len(chunk.data)
        except ActorLost as e:
            raise RuntimeError("the session's actor is gone") from e
        return b"".join(parts) if first.total else None

    async def _release(self) -> None:
        """End the session on its actor (bye, photo dropped), then kill the actor and free its slot."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        actor, self.actor = self.actor, None
        slot, self.slot = self.slot, None
        cluster = self.door.config.cluster
        if actor is not None and not self.lost and cluster is not None:
            try:
                self.final = await call(actor.end.remote(self.end_reason), min(END_TIMEOUT_S, cluster.call_timeout_s))
                self.door.photos_left_at_end += self.final.photos_alive
                if self.stats is not None:  # for the front door's log line of the session's end
                    self.stats.frames_in, self.stats.frames_out = self.final.frames_in, self.final.frames_out
            except ActorLost as e:
                logger.info("session %s: its actor did not end cleanly (%s); killing it", self.name[:8], e)
        if slot is not None:
            try:
                await self.door.placement.release(slot, actor)
            except Exception as e:  # Ray unreachable: the slot is freed when Ray sees the owner gone
                logger.warning("session %s: freeing its slot failed: %s", self.name[:8], type(e).__name__)

    async def animate(self, item: InputFrame) -> OutputFrame:
        raise RuntimeError("the session's frames go to its actor, not through the front door")


class ClusterRegistry(Registry):
    """The front door's registry: after its offer, a session's actor applies the connect, heartbeat and
    idle timeouts (it sees the data channel); the front door keeps the offer timeout and ends the
    session when the actor reports its end or is lost."""

    def timed_out(self, s: Session, now: float) -> str | None:
        if isinstance(s.engine, ActorEngine) and s.state != SessionState.CREATED:
            return None
        return super().timed_out(s, now)

    async def end(self, session: Session, reason: str) -> None:
        if isinstance(session.engine, ActorEngine) and session.state != SessionState.ENDED:
            session.engine.end_reason = reason  # the actor says it in its bye
            session.engine.stats = session.stats
        await super().end(session, reason)


class ClusterFrontDoor:
    """enliven.server.backend.SessionBackend on a Ray cluster."""

    def __init__(self, config: ServerConfig) -> None:
        assert config.cluster is not None
        self.config = config
        self.placement = Placement(config.cluster, config.max_sessions)
        self.registry: Registry = ClusterRegistry(config)
        self.photos_left_at_end = 0  # photos actors still held after ending their session (0 expected)

    async def start(self) -> None:
        self.placement.connect()  # blocking, before the server listens

    async def stop(self) -> None:
        self.placement.disconnect()

    def open_engine(self, sid: str, token: str, settings: EngineSettings, debug: DebugOptions) -> SessionEngine:
        return ActorEngine(self, sid, token, settings, debug)

    async def answer(self, session: Session, sdp: str) -> RTCSessionDescription:
        engine = session.engine
        if not isinstance(engine, ActorEngine) or engine.actor is None:
            raise HttpError(403, "forbidden", "the session ended")
        return await engine.answer(session, sdp)

    def describe(self, session: Session) -> dict[str, Any]:
        engine = session.engine
        if not isinstance(engine, ActorEngine) or engine.node is None:
            return {}
        return {"node": engine.node.node_id, "node_address": engine.node.address}

    async def state(self) -> dict[str, Any]:
        """Nodes, free slots, and each live session's actor: its node, process, frames and photos."""
        engines = [s.engine for s in self.registry.sessions.values() if isinstance(s.engine, ActorEngine)]
        statuses = await asyncio.gather(*(call(e.actor.status.remote(), 5.0) for e in engines if e.actor is not None),
                                        return_exceptions=True)
        live = [s for s in statuses if isinstance(s, ActorStatus)]
        nodes, free = await asyncio.to_thread(lambda: (self.placement.nodes(), self.placement.free_slots()))
        return {
            "nodes": nodes, "free_slots": free,
            "photos_alive": sum(s.photos_alive for s in live),
            "photos_left_at_end": self.photos_left_at_end,
            "actors": [{"node": s.node.node_id, "pid": s.node.pid, "state": s.state, "frames_in": s.frames_in,
                        "frames_out": s.frames_out, "photos_alive": s.photos_alive} for s in live],
            "unreachable_actors": len(statuses) - len(live),
        }
