"""
The in-memory transport: the stream protocol over an in-process byte pipe,
for tests and the single-process mode.  Frames go through the same codec as
on TCP; delivery is asynchronous, scheduled on the injected clock, so tests
drive it with C{Clock.advance(0)} and a real reactor runs it as it runs
everything else.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from .stream import ReceiverFactory, StreamTransportClient, StreamTransportServer


@implementer(IAddress)
class InMemoryAddress:
    """
    The address of one end of an in-memory pipe.
    """

    def __init__(self, name: str, side: str) -> None:
        self.name = name
        self.side = side

    def __str__(self) -> str:
        return f"inmemory:{self.name}/{self.side}"


@implementer(ITransport)
class _PipeTransport:
    """
    One end of a byte pipe.  Writes are delivered to the other end on the
    next clock turn; closing delivers C{connectionLost} to both ends after
    the bytes already written.
    """

    disconnecting = False

    def __init__(self, clock: IReactorTime, host: InMemoryAddress, peer: InMemoryAddress):
        self._clock = clock
        self._host = host
        self._peer_address = peer
        self.protocol: Optional[IProtocol] = None
        self.other: Optional[_PipeTransport] = None
        self._outgoing: List[bytes] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._lost = False

    def write(self, data: bytes) -> None:
        if self.disconnecting or self._lost:
            return
        self._outgoing.append(data)
        self._schedule()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._schedule()

    def abortConnection(self) -> None:
        self._outgoing.clear()
        self.loseConnection()

    def getPeer(self) -> InMemoryAddress:
        return self._peer_address

    def getHost(self) -> InMemoryAddress:
        return self._host

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        other = self.other
        assert other is not None
        if self._outgoing and not other._lost:
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            assert other.protocol is not None
            other.protocol.dataReceived(data)
        if self.disconnecting:
            self._lose(ConnectionDone("closed by this side"))
            other._lose(ConnectionDone("closed by the peer"))

    def _lose(self, why: Exception) -> None:
        if self._lost:
            return
        self._lost = True
        self.disconnecting = True
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        assert self.protocol is not None
        self.protocol.connectionLost(Failure(why))


class InMemoryNetwork:
    """
    A namespace of in-memory listening addresses, shared by the gateway and
    the microservices of one process (or one test).
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: schedules every delivery.
        """
        self.clock = clock
        self._listeners: Dict[str, IProtocolFactory] = {}
        self._pipes: List[_PipeTransport] = []

    def listen(self, name: str, factory: IProtocolFactory) -> "InMemoryPort":
        if name in self._listeners:
            raise ValueError(f"in-memory address {name!r} is already in use")
        self._listeners[name] = factory
        factory.doStart()
        return InMemoryPort(self, name, factory)

    def connect(self, name: str, client_factory: IProtocolFactory) -> Deferred[IProtocol]:
        server_factory = self._listeners.get(name)
        if server_factory is None:
            return fail(ConnectionRefusedError(f"nothing listens on inmemory:{name}"))
        server_address = InMemoryAddress(name, "server")
        client_address = InMemoryAddress(name, "client")
        client_protocol = client_factory.buildProtocol(server_address)
        server_protocol = server_factory.buildProtocol(client_address)
        if client_protocol is None or server_protocol is None:
            return fail(ConnectionRefusedError("a factory refused the in-memory connection"))
        client_end = _PipeTransport(self.clock, client_address, server_address)
        server_end = _PipeTransport(self.clock, server_address, client_address)
        client_end.other, server_end.other = server_end, client_end
        client_end.protocol, server_end.protocol = client_protocol, server_protocol
        server_protocol.makeConnection(server_end)
        client_protocol.makeConnection(client_end)
        return succeed(client_protocol)

    def _stop(self, name: str) -> None:
        factory = self._listeners.pop(name, None)
        if factory is not None:
            factory.doStop()

    def sever_all(self) -> None:
        """
        Break every pipe at once, as a network failure would (no goodbye).
        """
        for factory in list(self._listeners.values()):
            for proto in list(getattr(factory, "protocols", ())):
                transport = proto.transport
                transport._lose(ConnectionLost("in-memory network severed"))
                transport.other._lose(ConnectionLost("in-memory network severed"))


@implementer(IListeningPort)
class InMemoryPort:
    """
    A listening in-memory address.
    """

    def __init__(self, network: InMemoryNetwork, name: str, factory: IProtocolFactory):
        self._network = network
        self._name = name
        self.factory = factory

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self._network._stop(self._name)
        return succeed(None)

    def getHost(self) -> InMemoryAddress:
        return InMemoryAddress(self._name, "server")


@implementer(IStreamServerEndpoint)
class InMemoryServerEndpoint:
    """
    Listen on a name in an L{InMemoryNetwork}.
    """

    def __init__(self, network: InMemoryNetwork, name: str) -> None:
        self._network = network
        self._name = name

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        try:
            return succeed(self._network.listen(self._name, factory))
        except ValueError as e:
            return fail(e)


@implementer(IStreamClientEndpoint)
class InMemoryClientEndpoint:
    """
    Connect to a name in an L{InMemoryNetwork}.
    """

    def __init__(self, network: InMemoryNetwork, name: str) -> None:
        self._network = network
        self._name = name

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._network.connect(self._name, factory)


def inmemory_server(
    network: InMemoryNetwork,
    name: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> StreamTransportServer:
    """
    An in-memory L{ITransportServer} listening on C{name}.
    """
    return StreamTransportServer(
        InMemoryServerEndpoint(network, name),
        receiver_factory,
        TransportType.INMEMORY,
        max_frame_bytes,
    )


def inmemory_client(
    network: InMemoryNetwork,
    name: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    **backoff: object,
) -> StreamTransportClient:
    """
    An in-memory L{ITransportClient} connecting to C{name}, reconnecting
    with backoff on the network's clock.
    """
    return StreamTransportClient(
        InMemoryClientEndpoint(network, name),
        receiver_factory,
        network.clock,
        TransportType.INMEMORY,
        max_frame_bytes,
        **backoff,  # type: ignore[arg-type]
    )
