"""Which addresses a session's ICE may use: the local ones announced in the answer, the peers it may talk to.

Without a policy, aiortc announces every interface of the machine (even when the server listens on
127.0.0.1) and sends STUN checks to any address an offer names: a client could make the server send
UDP to arbitrary hosts. ``IcePolicy`` (from ServerConfig) decides:

* local addresses: ``ice_addresses``, or by default the listening address when it is a specific one
  (127.0.0.1 when listening on loopback), every interface when it is 0.0.0.0 or ::;
* peer networks: ``ice_peer_networks``, or by default this host's own addresses (and loopback) when
  listening on loopback, else the private, link-local and loopback networks and this host's addresses.

``refuse_candidate`` drops offered candidates outside the peer networks (and every mDNS ``.local``
name: resolving it would query the LAN, and the browser's checks reach the server anyway, learned
as peer-reflexive). ``apply`` restricts a peer connection's gathering to the local addresses and
wraps each of its sockets so that no packet is sent to, or taken from, an address outside the peer
networks (peer-reflexive ones included). It reaches into aioice's Connection (checked against
aioice 0.13 by ``supported``).
"""
from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aioice.ice import Connection, get_host_addresses

from .config import ServerConfig

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10", *LOOPBACK)
_CACHE_MAX = 1024  # peer addresses remembered as allowed or not


class IcePolicyError(RuntimeError):
    """aioice is not as this module expects: ICE cannot be restricted, so the offer is not served."""


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


@dataclass
class IceCounters:
    """Server-wide counts of what the policy refused (/debug/state)."""

    refused_candidates: int = 0  # offered candidates dropped (outside the peer networks, or mDNS names)
    dropped_sends: int = 0  # packets not sent: their destination is outside the peer networks
    dropped_receives: int = 0  # packets ignored: their source is outside the peer networks


@dataclass
class IcePolicy:
    local_addresses: tuple[str, ...] | None  # addresses to gather on; None: every interface (aioice's choice)
    peer_networks: tuple[Network, ...]
    counters: IceCounters = field(default_factory=IceCounters)
    _allowed: dict[str, bool] = field(default_factory=dict, repr=False)

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def for_config(config: ServerConfig) -> IcePolicy:
        """The policy of a server (one per config, so its counters are the server's)."""
        own = tuple(get_host_addresses(use_ipv4=True, use_ipv6=True))
        if config.ice_addresses:
            local: tuple[str, ...] | None = config.ice_addresses
        elif _is_wildcard(config.host) or not (_is_loopback_host(config.host) or _is_ip(config.host)):
            local = None
        else:
            local = ("127.0.0.1",) if config.host == "localhost" else (config.host,)
        if config.ice_peer_networks:
            nets = config.ice_peer_networks
        elif _is_loopback_host(config.host):
            nets = (*LOOPBACK, *own)
        else:
            nets = (*PRIVATE, *own)
        return IcePolicy(local, tuple(ipaddress.ip_network(n, strict=False) for n in nets))

    def peer_allowed(self, host: str) -> bool:
        """Whether ICE may exchange packets with ``host`` (an IP address as a string)."""
        known = self._allowed.get(host)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            allowed = False
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            allowed = any(ip.version == net.version and ip in net for net in self.peer_networks)
        if len(self._allowed) >= _CACHE_MAX:
            self._allowed.clear()
        self._allowed[host] = allowed
        return allowed

    def refuse_candidate(self, host: str) -> bool:
        """Whether an offered candidate at ``host`` (an address or an mDNS name) is dropped."""
        refused = host.endswith(".local") or not self.peer_allowed(host)
        if refused:
            self.counters.refused_candidates += 1
        return refused

    # --- a peer connection's ICE ---------------------------------------------------------------
    def apply(self, pc: Any) -> None:
        """Restrict the ICE connections of ``pc`` (after setRemoteDescription, before setLocalDescription).
        Raises IcePolicyError if aioice is not as expected (the offer is then not served)."""
        for connection in _ice_connections(pc):
            self._restrict(connection)

    def _restrict(self, connection: Any) -> None:
        if not supported(connection):
            raise IcePolicyError("aioice's Connection is not as expected: ICE cannot be restricted")
        if getattr(connection, "_enliven_policy", None) is self:
            return
        connection._enliven_policy = self
        gather = connection.gather_candidates

        async def gather_candidates() -> None:
            if connection._local_candidates_start:
                return
            if self.local_addresses is None:
                await gather()
            else:
                connection._local_candidates_start = True
                for component in sorted(connection._components):
                    connection._local_candidates += await connection.get_component_candidates(
                        component=component, addresses=list(self.local_addresses))
                connection._local_candidates_end = True
            for protocol in connection._protocols:
                self._guard(protocol)

        connection.gather_candidates = gather_candidates

    def _guard(self, protocol: Any) -> None:
        """Wrap one socket's protocol: packets to or from outside the peer networks are dropped."""
        received: Callable[[bytes, tuple[Any, ...]], None] = protocol.datagram_received
        send_stun: Callable[[Any, tuple[str, int]], None] = protocol.send_stun
        send_data: Callable[[bytes, tuple[str, int]], Awaitable[None]] = protocol.send_data
        counters = self.counters

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if self.peer_allowed(addr[0]):
                received(data, addr)
            else:
                counters.dropped_receives += 1

        def guarded_send_stun(message: Any, addr: tuple[str, int]) -> None:
            if self.peer_allowed(addr[0]):
                send_stun(message, addr)
            else:
                counters.dropped_sends += 1

        async def guarded_send_data(data: bytes, addr: tuple[str, int]) -> None:
            if self.peer_allowed(addr[0]):
                await send_data(data, addr)
            else:
                counters.dropped_sends += 1

        protocol.datagram_received = datagram_received
        protocol.send_stun = guarded_send_stun
        protocol.send_data = guarded_send_data


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ice_connections(pc: Any) -> list[Any]:
    """The aioice Connections of a peer connection's ICE transports (one each, BUNDLE shares them)."""
    transports = [t.receiver.transport.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport.transport)
    seen: dict[int, Any] = {}
    for ice in transports:
        connection = getattr(ice.iceGatherer, "_connection", None)
        seen.setdefault(id(connection), connection)
    return list(seen.values())


_EXPECTED = ("_local_candidates_start", "_local_candidates_end", "_local_candidates", "_components", "_protocols")


def supported(connection: Any) -> bool:
    """Whether ``connection`` is an aioice Connection with the attributes ``IcePolicy.apply`` relies on."""
    return isinstance(connection, Connection) and all(hasattr(connection, a) for a in _EXPECTED) and callable(
        getattr(connection, "get_component_candidates", None))
