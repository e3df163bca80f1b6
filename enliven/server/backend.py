"""Where sessions live when they do not live in this process: the hook a cluster front door plugs in.

Without ``--cluster`` the server holds every session itself (its peer connection here, its Animator in
a worker process or thread). With ``--cluster ray[:ADDRESS]`` app.py loads enliven.cluster's front door,
which implements this interface: each session's engine then stands for a Ray actor on another machine,
and that actor, not this process, takes the offer and owns the peer connection, the data channel, the
photo and the session's own timeouts.
"""
from __future__ import annotations

from typing import Any, Protocol

from aiortc import RTCSessionDescription

from .engines import SessionEngine
from .session_animator import DebugOptions, EngineSettings
from .sessions import Registry, Session


class SessionBackend(Protocol):
    registry: Registry  # the front door's registry of the sessions it placed elsewhere

    async def start(self) -> None:
        """Connect to the cluster (before the server listens)."""

    async def stop(self) -> None:
        """Disconnect (after every session has ended)."""

    def open_engine(self, sid: str, token: str, settings: EngineSettings, debug: DebugOptions) -> SessionEngine:
        """The engine of a new session; its ``prepare`` places the session (HttpError 503 when no slot is free)."""

    async def answer(self, session: Session, sdp: str) -> RTCSessionDescription:
        """Hand a checked offer to where the session lives and return its answer (HttpError as signalling.answer)."""

    def describe(self, session: Session) -> dict[str, Any]:
        """What the session's status shows besides its state (e.g. the node it runs on)."""

    async def state(self) -> dict[str, Any]:
        """Counters for /debug/state: nodes, placements, photos still alive where the sessions run."""
