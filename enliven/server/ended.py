"""Sessions that ended recently, so a page can ask why its session went quiet (GET /api/sessions/{id}).

The page learns most endings on the data channel (``bye``). When the machine that held its peer
connection is gone (a cluster node lost, a server killed), nothing is said: the page notices the
heartbeat's silence and asks the front door, which remembers the reason for a while. Only a digest of
the token is kept, never the token.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Ending:
    token_digest: bytes  # sha256 of the session's token
    reason: str  # why it ended, as the registry logged it
    ended_s: float  # time.monotonic() when it ended


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class EndedSessions:
    """The last ``capacity`` endings, each kept for ``keep_s`` seconds."""

    def __init__(self, capacity: int = 1000, keep_s: float = 600.0) -> None:
        self.capacity, self.keep_s = capacity, keep_s
        self._endings: OrderedDict[str, Ending] = OrderedDict()

    def add(self, sid: str, token: str, reason: str) -> None:
        self._endings[sid] = Ending(_digest(token), reason, time.monotonic())
        self._endings.move_to_end(sid)
        while len(self._endings) > self.capacity:
            self._endings.popitem(last=False)

    def reason(self, sid: str, token: str) -> str | None:
        """Why session ``sid`` ended, if it did recently and ``token`` was its token; else None."""
        ending = self._endings.get(sid)
        if ending is None or time.monotonic() - ending.ended_s > self.keep_s:
            return None
        return ending.reason if hmac.compare_digest(ending.token_digest, _digest(token)) else None
