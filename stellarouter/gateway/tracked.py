"""
The gateway's side of each microservice connection's bookkeeping: the
connection subclass the transport listeners build (L{TrackedConnection}),
which keeps L{GatewayService.connections} and the per-peer-address counts
current, refuses a peer address over
C{registration.max_connections_per_peer_address} (logged by
L{RefusalLog}, at most once per address per interval), and counts the
connection's frames while metrics are on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..common.interfaces import IFrameSender
from .connection import GatewayConnection
from .metrics import GatewayMetrics
from .registration import Registrar

if TYPE_CHECKING:
    from .service import GatewayService


class TrackedConnection(GatewayConnection):
    """
    A connection that keeps L{GatewayService.connections} current, and is
    closed at once when its peer host already has
    C{registration.max_connections_per_peer_address} open.
    """

    def __init__(self, owner: "GatewayService", registrar: Registrar,
                 max_frame_bytes: int) -> None:
        config = owner.config
        super().__init__(
            registrar, owner.reactor, max_frame_bytes, config.health, owner.aggregate,
            response_budget=owner.response_budget,
            max_unsent_bytes=config.buffers.max_unsent_bytes_per_connection,
            stalled_close_after=config.buffers.stalled_close_after,
        )
        self._owner = owner
        self._peer_address: Optional[str] = None

    def connectionOpened(self, sender: IFrameSender) -> None:
        owner = self._owner
        address = peer_address(sender.peer)
        cap = owner.config.registration.max_connections_per_peer_address
        if owner.per_peer_address.get(address, 0) >= cap:
            self.sender = sender
            self._closed = True
            owner.refusals.refused(address, cap)
            sender.close(f"{address} has {cap} connections open already "
                         "(registration.max_connections_per_peer_address)")
            return
        self._peer_address = address
        owner.per_peer_address[address] = owner.per_peer_address.get(address, 0) + 1
        owner.connections.append(self)
        super().connectionOpened(sender)
        if owner.metrics.enabled:
            self.count_traffic(owner.metrics)

    def count_traffic(self, metrics: Optional[GatewayMetrics]) -> None:
        """
        Count this connection's frames in C{metrics} (by its transport), or
        stop counting them (C{None}: C{metrics.enabled} turned off by a
        reload).
        """
        transport = getattr(self.sender, "transport_type", None)
        if metrics is None or transport is None:
            self.traffic = None
        else:
            self.traffic = metrics.traffic_for(transport.value)

    def connectionClosed(self, reason: str) -> None:
        owner = self._owner
        address, self._peer_address = self._peer_address, None
        if address is not None:
            left = owner.per_peer_address.get(address, 1) - 1
            if left > 0:
                owner.per_peer_address[address] = left
            else:
                owner.per_peer_address.pop(address, None)
        if self in owner.connections:
            owner.connections.remove(self)
        super().connectionClosed(reason)
        owner.figures.retire(self)  # (telemetry: keep its CANCEL counts)


def peer_address(peer: str) -> str:
    """
    The host part of a C{host:port} or C{[host]:port} peer description
    (the whole string when it has no port).
    """
    host, colon, port = peer.rpartition(":")
    if not (colon and port.isdigit()):
        return peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class RefusalLog:
    """
    Logs connections refused for their peer address at most once per
    C{interval} per address, with how many were refused meanwhile.
    """

    log = Logger()
    interval = 10.0

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._last: Dict[str, Tuple[float, int]] = {}

    def refused(self, address: str, cap: int) -> None:
        now = self.clock.seconds()
        last, count = self._last.get(address, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[address] = (last, count + 1)
            return
        if len(self._last) > 4096:
            self._last.clear()
        self._last[address] = (now, 0)
        self.log.warn("refused a connection from {address}: {cap} connections from it are "
                      "open already (registration.max_connections_per_peer_address)"
                      + ("; {more} more refused since the last line" if count else ""),
                      address=address, cap=cap, more=count)


__all__ = ["RefusalLog", "TrackedConnection", "peer_address"]
