"""What the front door and a session's actor say to each other: one frozen dataclass per message.

Calls go front door -> actor (actor.py's methods); each returns one of these. Errors the page should
see come back as ``Refused`` (an HTTP status and code, or an engine error's code), never as a Ray
exception whose pickled type the front door would have to rebuild. Bytes travel in chunks of at most
CHUNK_BYTES: Ray passes them inline in the call, so a photo never enters an object store, which could
spill it to disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from enliven.engine.errors import EnlivenError, error_from_code

CHUNK_BYTES = 64 * 1024  # under Ray's inline limit for call arguments and results (100 KiB)


@dataclass(frozen=True)
class Node:
    """Where an actor runs."""

    node_id: str  # Ray's node id (hex)
    address: str  # the node's IP address as Ray knows it
    announced: str | None  # ENLIVEN_ANNOUNCED_ADDRESS on that node: the address put into the answer's candidates
    pid: int  # the actor's process id


@dataclass(frozen=True)
class Opened:
    """The photo is prepared; the session waits for its offer."""

    node: Node
    face_count: int  # faces the detector saw in the photo (the largest is animated)


@dataclass(frozen=True)
class Answered:
    sdp: str  # the answer, with the announced address among its candidates when one is set
    type: str = "answer"


@dataclass(frozen=True)
class Refused:
    """The actor refused a call: an HTTP error for the page (status > 0) or an engine error by its code."""

    status: int  # HTTP status; 0: an engine error (the front door maps it as for local sessions)
    code: str  # HttpError code or EnlivenError.code
    message: str

    @classmethod
    def of(cls, error: EnlivenError) -> Refused:
        return cls(0, error.code, str(error))

    def engine_error(self) -> EnlivenError:
        return error_from_code(self.code, self.message)


@dataclass(frozen=True)
class StateChange:
    """The session's state on the actor: created, offered, connected or ended (with why)."""

    state: str  # sessions.SessionState's value
    reason: str = ""  # why it ended


@dataclass(frozen=True)
class ActorStatus:
    node: Node
    state: str  # sessions.SessionState's value
    frames_in: int
    frames_out: int
    photos_alive: int  # photos this actor still holds, after a garbage collection


@dataclass(frozen=True)
class Chunk:
    offset: int
    data: bytes = field(repr=False)
    total: int  # length of the whole; 0 with empty data: nothing there (e.g. the photo is gone)
