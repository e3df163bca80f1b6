"""The address a node announces to browsers: its public address behind a 1:1 NAT (cloud VMs, hostNetwork pods).

aiortc offers the node's own interface addresses as ICE host candidates. Behind a NAT that maps a
public address to the node port for port (a cloud VM's external IP, a Kubernetes node with
``hostNetwork``), a browser outside cannot reach those; given ``ENLIVEN_ANNOUNCED_ADDRESS`` on the node,
the answer carries a copy of each UDP host candidate with that address and the same port, so ICE
can succeed through the NAT (like mediasoup's ``announcedIp``). The original candidates stay for
clients on the same network.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re

from enliven.engine.errors import EnlivenError

ANNOUNCED_ADDRESS_ENV = "ENLIVEN_ANNOUNCED_ADDRESS"

# a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
_CANDIDATE_RE = re.compile(r"^a=candidate:(\S+) (\d+) (udp|UDP) (\d+) (\S+) (\d+) typ host(.*)$")


def announced_address(environ: dict[str, str] | None = None) -> str | None:
    """The node's announced address from ``ENLIVEN_ANNOUNCED_ADDRESS`` (None when unset or empty).

    Raises EnlivenError when it is not an IPv4 or IPv6 address (browsers take no host names here).
    """
    value = (os.environ if environ is None else environ).get(ANNOUNCED_ADDRESS_ENV, "").strip()
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as e:
        raise EnlivenError(f"{ANNOUNCED_ADDRESS_ENV} must be an IPv4 or IPv6 address; got {value!r}") from e


def announce(sdp: str, address: str) -> str:
    """``sdp`` with a copy of each UDP host candidate at ``address`` (same port), right after it.

    Candidates already at ``address`` are not copied. The copy gets its own foundation (a different
    address is a different base; at most 32 characters, as ICE allows) and a priority one less, so a
    browser that can reach the node's own address still prefers it.
    """
    newline = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    for line in sdp.split(newline):
        out.append(line)
        m = _CANDIDATE_RE.match(line)
        if m is None or m.group(5) == address:
            continue
        foundation, component, transport, priority, _, port, rest = m.groups()
        copy = hashlib.sha256(f"{foundation} {address}".encode()).hexdigest()[:32]
        out.append(f"a=candidate:{copy} {component} {transport} {max(int(priority) - 1, 0)} "
                   f"{address} {port} typ host{rest}")
    return newline.join(out)
