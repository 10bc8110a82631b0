"""
What the gateway side of the connectionless transports (UDP, RabbitMQ)
shares: the table of peers that stands in for connections, and the cheap
counting of what they drop.

Neither transport has a connection whose end tells the gateway a
microservice is gone, so each keeps a L{PeerTable}: a peer is opened by a
HELLO from an address (a UDP address, a microservice's queue), kept while it
is heard from, and closed when it says goodbye, when its transport says it
is gone, or when it has been silent for C{idle_timeout} (L{PeerTable.sweep},
run by a timer the table owns).  Closing a peer tells its receiver (the
gateway's connection) once, whichever of these comes first.

L{DropCounting} is the other shared piece: a message dropped (malformed,
oversize, from an unknown peer, forged...) costs a counter increment, and at
most one log line per C{drop_log_interval} says how many were dropped and
why (a debug line per dropped datagram once took the gateway down).
"""

from __future__ import annotations

from typing import Any, Dict, Generic, Hashable, Iterator, List, Optional, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..common.interfaces import IFrameReceiver

Address = TypeVar("Address", bound=Hashable)


class Peer(Generic[Address]):
    """
    The gateway's pseudo-connection to one microservice: what the table
    needs of it.

    @ivar address: where the microservice is (its key in the table).
    @ivar receiver: the gateway's connection object for it.
    @ivar last_seen: when a frame last came from it.
    @ivar closed: whether the table has closed it.
    """

    def __init__(self, address: Address, receiver: IFrameReceiver, now: float) -> None:
        self.address = address
        self.receiver = receiver
        self.last_seen = now
        self.closed = False


PeerType = TypeVar("PeerType", bound="Peer[Any]")


class PeerTable(Generic[Address, PeerType]):
    """
    The open peers of one gateway transport, by address.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, idle_timeout: float) -> None:
        """
        @param idle_timeout: a peer silent this long is closed.
        """
        self.clock = clock
        self.idle_timeout = idle_timeout
        self._peers: Dict[Address, PeerType] = {}
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def __contains__(self, address: object) -> bool:
        return address in self._peers

    def __getitem__(self, address: Address) -> PeerType:
        return self._peers[address]

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[Address]:
        return iter(self._peers)

    def get(self, address: Address) -> Optional[PeerType]:
        """
        The open peer at C{address}, if any.
        """
        return self._peers.get(address)

    def values(self) -> List[PeerType]:
        """
        The open peers (a copy: closing one while iterating is safe).
        """
        return list(self._peers.values())

    def add(self, peer: PeerType) -> None:
        """
        Open C{peer} (the caller then tells its receiver).
        """
        self._peers[peer.address] = peer

    def forget(self, peer: PeerType, reason: str) -> None:
        """
        Close C{peer} and tell its receiver why; a no-op for a closed peer.
        """
        if peer.closed:
            return
        peer.closed = True
        if self._peers.get(peer.address) is peer:
            del self._peers[peer.address]
        peer.receiver.connectionClosed(reason)

    def close_all(self, reason: str) -> None:
        """
        Close every peer.
        """
        for peer in self.values():
            self.forget(peer, reason)

    def sweep(self) -> None:
        """
        Close the peers silent for C{idle_timeout}.
        """
        now = self.clock.seconds()
        for peer in self.values():
            silence = now - peer.last_seen
            if silence >= self.idle_timeout:
                self.forget(peer, f"silent for {silence:.1f}s")

    def start(self) -> None:
        """
        Sweep four times per C{idle_timeout} from now on.
        """
        if not self._sweeper.running:
            self._sweeper.start(max(self.idle_timeout / 4, 0.05), now=False)

    def stop(self, reason: str) -> None:
        """
        Stop sweeping and close every peer.
        """
        if self._sweeper.running:
            self._sweeper.stop()
        self.close_all(reason)


class DropCounting:
    """
    Counts dropped messages by reason and logs them at most once per
    C{drop_log_interval} (a mixin: the class provides C{clock} and C{log}).

    @ivar drops: dropped messages by reason since start.
    """

    #: Seconds between two log lines about dropped messages.
    drop_log_interval = 10.0
    #: What the log line calls the dropped things.
    dropped_noun = "message(s)"
    clock: IReactorTime
    log: Logger

    def __init__(self) -> None:
        self.drops: Dict[str, int] = {}
        self._drops_logged: Dict[str, int] = {}
        self._last_dropped: object = None
        self._drop_report: Optional[IDelayedCall] = None

    def drop(self, reason: str, source: object, detail: str = "") -> None:
        """
        Count one dropped message from C{source} (C{detail} is not logged:
        building log lines per message is what a flood must not cost).
        """
        drops = self.drops
        drops[reason] = drops.get(reason, 0) + 1
        self._last_dropped = source
        if self._drop_report is None:
            self._drop_report = self.clock.callLater(self.drop_log_interval, self.report_drops)

    def report_drops(self) -> None:
        """
        Log the messages dropped since the last report, by reason (called
        by the timer the first drop of an interval arms, and on stop).
        """
        if self._drop_report is not None and self._drop_report.active():
            self._drop_report.cancel()
        self._drop_report = None
        new = {reason: count - self._drops_logged.get(reason, 0)
               for reason, count in self.drops.items()}
        total = sum(new.values())
        if not total:
            return
        self._drops_logged = dict(self.drops)
        self.log.warn(
            "dropped {count} {noun} in the last {interval:g}s ({reasons}); last from "
            "{address}", count=total, noun=self.dropped_noun, interval=self.drop_log_interval,
            reasons=", ".join(f"{r} {n}" for r, n in sorted(new.items()) if n),
            address=self._last_dropped)


__all__ = ["DropCounting", "Peer", "PeerTable"]
