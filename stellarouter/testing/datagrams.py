"""
A fake datagram network on a Clock, for testing the UDP transport's loss,
duplication and reordering handling deterministically.

L{FakeDatagramReactor} is a C{Clock} that also provides C{listenUDP}; every
datagram written is queued and delivered on the next clock turn, unless a
test tells the network to drop, duplicate or hold (then release in reverse
order) the next datagrams.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorUDP, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from zope.interface import implementer

Address = Tuple[str, int]


@implementer(IListeningPort, IUDPTransport)
class FakeUDPPort:
    """
    One bound fake UDP socket (also its protocol's transport).
    """

    def __init__(self, reactor: "FakeDatagramReactor", protocol: DatagramProtocol,
                 address: Address) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.address = address
        self.connected: Optional[Address] = None
        self.broadcast = False

    def write(self, datagram: bytes, addr: Optional[Address] = None) -> None:
        target = addr or self.connected
        assert target is not None, "write without an address on an unconnected socket"
        self.reactor.send(self.address, target, datagram)

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *self.address)

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self.reactor.ports.pop(self.address, None)
        self.protocol.doStop()
        return succeed(None)

    def loseConnection(self) -> None:
        self.stopListening()

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self.broadcast = enabled

    def getBroadcastAllowed(self) -> bool:
        return self.broadcast


@implementer(IReactorUDP)
class FakeDatagramReactor(Clock):
    """
    A Clock with a datagram network between fake UDP sockets.

    @ivar sent: every datagram written, as C{(source, target, bytes)}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: Dict[Address, FakeUDPPort] = {}
        self.sent: List[Tuple[Address, Address, bytes]] = []
        self._next_port = 40000
        self._drop = 0
        self._drop_types: List[int] = []
        self._duplicate = 0
        self._holding = False
        self._held: List[Tuple[Address, Address, bytes]] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        if port == 0:
            self._next_port += 1
            port = self._next_port
        address = (interface or "127.0.0.1", port)
        if address in self.ports:
            raise OSError(f"address {address} in use")
        bound = FakeUDPPort(self, protocol, address)
        self.ports[address] = bound
        protocol.makeConnection(bound)
        return bound

    # the network

    def drop_next(self, count: int = 1) -> None:
        """
        Lose the next C{count} datagrams.
        """
        self._drop += count

    def drop_next_of_type(self, frame_type: int) -> None:
        """
        Lose the next datagram carrying a frame of C{frame_type}.
        """
        self._drop_types.append(int(frame_type))

    def duplicate_next(self, count: int = 1) -> None:
        """
        Deliver each of the next C{count} datagrams twice.
        """
        self._duplicate += count

    def hold(self) -> None:
        """
        Keep datagrams back until L{release}.
        """
        self._holding = True

    def release(self, reverse: bool = True) -> None:
        """
        Deliver the held datagrams, in reverse order by default.
        """
        self._holding = False
        held, self._held = self._held, []
        for item in (reversed(held) if reverse else held):
            self.callLater(0, self._deliver, *item)

    def send(self, source: Address, target: Address, datagram: bytes) -> None:
        self.sent.append((source, target, datagram))
        if self._drop:
            self._drop -= 1
            return
        if datagram and datagram[0] in self._drop_types:
            self._drop_types.remove(datagram[0])
            return
        copies = 1
        if self._duplicate:
            self._duplicate -= 1
            copies = 2
        for _ in range(copies):
            if self._holding:
                self._held.append((source, target, datagram))
            else:
                self.callLater(0, self._deliver, source, target, datagram)

    def _deliver(self, source: Address, target: Address, datagram: bytes) -> None:
        port = self.ports.get(target)
        if port is None:
            port = self.ports.get(("127.0.0.1", target[1]))
        if port is not None:
            port.protocol.datagramReceived(datagram, source)

    def settle(self, turns: int = 20) -> None:
        """
        Run the calls due now, C{turns} times.
        """
        for _ in range(turns):
            self.advance(0)
