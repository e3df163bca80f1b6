"""Scale-out on Ray: each live session is a Ray actor on a node with a free session slot.

``enliven serve --cluster ray[:ADDRESS]``: the front door (the page, the sessions API, signalling checks,
limits) runs as without a cluster; each session's peer connection, photo and Animator live in one actor
(actor.py) that Ray places on a node declaring the ``enliven_session`` resource (placement.py). The
front door (frontdoor.py) forwards the offer and returns the actor's answer; media flows between the
browser and that node directly. Needs the ``cluster`` extra (Ray); nothing here is imported without
``--cluster``.
"""
from __future__ import annotations

from enliven.engine.errors import EnlivenError

EXTRA_HINT = "pip install 'enliven[cluster]'"


def missing_ray(error: ImportError) -> EnlivenError:
    """The one-line error when Ray is not installed."""
    return EnlivenError(f"--cluster needs Ray, which is not installed ({error.name or error}); {EXTRA_HINT}")
