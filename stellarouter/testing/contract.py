"""
The transport contract: one test suite that every transport must pass.

A test case mixes in L{TransportContractTests} with a trial C{TestCase} and
provides:

 - C{transport_type}: the L{TransportType} under test;
 - C{max_frame_bytes}: the cap both ends use;
 - C{async startServer(receiver_factory) -> (server, address)};
 - C{makeClient(address, receiver_factory) -> ITransportClient} that
   reconnects quickly (tests wait for a reconnect);
 - C{async settle(deferred) -> result}: wait for a Deferred (advance a Clock,
   or wait on the real reactor with a timeout);
 - C{writeRaw(sender, data)}: put raw bytes on the wire under a sender.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Dict, List, Protocol, Tuple, TypeVar, cast

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from ..common.enums import FrameType, TransportType
from ..common.frames import FRAME_OVERHEAD, encode_datagram
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameSender, ITransportClient, ITransportServer
from ..common.models import Frame
from ..transports.peers import DropCounting
from .fakes import RecordingReceiver


_T = TypeVar("_T")


class Settle(Protocol):
    """
    How a contract test case waits for a Deferred: C{await settle(d)} gives
    C{d}'s result (advancing a Clock, or waiting on the real reactor with a
    timeout).
    """

    def __call__(self, d: Deferred[_T]) -> Awaitable[_T]: ...


class _ContractCase(Protocol):
    """
    What L{_start_pair} needs of a contract test case.
    """

    startServer: Callable[[ReceiverLog], Awaitable[Tuple[ITransportServer, str]]]
    makeClient: Callable[[str, ReceiverLog], ITransportClient]
    settle: Settle
    addCleanup: Callable[..., None]

class ReceiverLog:
    """
    Builds L{RecordingReceiver}s and lets a test wait for the n-th one to
    open.
    """

    def __init__(self) -> None:
        self.receivers: List[RecordingReceiver] = []
        self._waiting: List[Tuple[int, Deferred[RecordingReceiver]]] = []

    def __call__(self) -> RecordingReceiver:
        receiver = RecordingReceiver()
        self.receivers.append(receiver)
        receiver.opened.addCallback(self._opened)
        return receiver

    def _opened(self, sender: IFrameSender) -> IFrameSender:
        opened = sum(1 for r in self.receivers if r.opened.called)
        still = []
        for count, d in self._waiting:
            if opened >= count:
                d.callback(self.receivers[count - 1])
            else:
                still.append((count, d))
        self._waiting = still
        return sender

    def opened(self, count: int) -> Deferred[RecordingReceiver]:
        """
        Fires with the C{count}-th receiver once it has opened.
        """
        d: Deferred[RecordingReceiver] = Deferred()
        if sum(1 for r in self.receivers if r.opened.called) >= count:
            d.callback([r for r in self.receivers if r.opened.called][count - 1])
        else:
            self._waiting.append((count, d))
        return d


def observe(d: Deferred[_T]) -> Deferred[_T]:
    """
    A new Deferred that fires with C{d}'s result without consuming it, so
    C{d} can be waited on again.
    """
    waiter: Deferred[_T] = Deferred()

    def relay(result: _T) -> _T:
        waiter.callback(result)
        return result

    d.addBoth(relay)
    return waiter


def _frame(kind: FrameType, payload: bytes, cid: CorrelationId | None = None) -> Frame:
    return Frame(kind, new_correlation_id() if cid is None else cid, payload)


async def _start_pair(case: _ContractCase, hello: bool,
                      ) -> Tuple[ITransportServer, ITransportClient, ReceiverLog, ReceiverLog]:
    """
    Start a server and a client of the case's transport (both stopped at
    cleanup) and wait until each side has opened; a message transport opens
    the server's side on the client's HELLO.

    @return: C{(server, client, server receivers, client receivers)}.
    """
    servers, clients = ReceiverLog(), ReceiverLog()
    server, address = await case.startServer(servers)
    client = case.makeClient(address, clients)
    case.addCleanup(_stop_pair, case, server, client)
    client.start()
    session = await case.settle(clients.opened(1))
    if hello:
        session.connection.sendFrame(_frame(FrameType.HELLO, b"{}"))
    await case.settle(servers.opened(1))
    return server, client, servers, clients


async def _stop_pair(case: _ContractCase, server: ITransportServer,
                     client: ITransportClient) -> None:
    await case.settle(client.stop())
    await case.settle(server.stop())


class TransportContractTests:
    """
    What every transport guarantees to the layers above it.
    """

    transport_type: TransportType
    max_frame_bytes: int = 64 * 1024

    # Provided by the concrete test case:
    startServer: Callable[[ReceiverLog], Awaitable[Tuple[ITransportServer, str]]]
    makeClient: Callable[[str, ReceiverLog], ITransportClient]
    settle: Settle
    writeRaw: Callable[[IFrameSender, bytes], None]
    assertEqual: Callable[..., None]
    assertIn: Callable[..., None]
    assertTrue: Callable[..., None]
    addCleanup: Callable[..., None]

    async def _connected(self) -> Tuple[ITransportServer, ITransportClient, ReceiverLog,
                                        ReceiverLog]:
        return await _start_pair(self, hello=False)

    async def test_interfaces(self) -> None:
        """
        Server, client and both connection ends provide their interfaces.
        """
        server, client, servers, clients = await self._connected()
        verifyObject(ITransportServer, server)
        verifyObject(ITransportClient, client)
        for receiver in (servers.receivers[0], clients.receivers[0]):
            verifyObject(IFrameSender, receiver.connection)
            self.assertEqual(receiver.connection.transport_type, self.transport_type)
        self.assertEqual(server.transport_type, self.transport_type)
        self.assertEqual(client.transport_type, self.transport_type)

    async def test_frames_both_ways_in_order(self) -> None:
        """
        Frames of every type and many sizes arrive intact and in order, in
        both directions.
        """
        _, _, servers, clients = await self._connected()
        up = [
            _frame(kind, bytes([i % 256]) * (i * 97 % 3000))
            for i, kind in enumerate(list(FrameType) * 6)
        ]
        client_end = clients.receivers[0]
        server_end = servers.receivers[0]
        for frame in up:
            client_end.connection.sendFrame(frame)
        received = await self.settle(server_end.received(len(up)))
        self.assertEqual(received, up)
        down = [_frame(FrameType.RESPONSE, b"x" * n) for n in (0, 1, 17, 5000)]
        for frame in down:
            server_end.connection.sendFrame(frame)
        self.assertEqual(await self.settle(client_end.received(len(down))), down)

    async def test_largest_frame(self) -> None:
        """
        A frame exactly at C{max_frame_bytes} passes.
        """
        _, _, servers, clients = await self._connected()
        frame = _frame(FrameType.REQUEST, b"\xab" * (self.max_frame_bytes - FRAME_OVERHEAD))
        clients.receivers[0].connection.sendFrame(frame)
        self.assertEqual(await self.settle(servers.receivers[0].received(1)), [frame])

    async def test_oversized_frame_closes_only_that_connection(self) -> None:
        """
        A length prefix over the cap closes the connection with a protocol
        error; the server keeps accepting and the client reconnects.
        """
        _, _, servers, clients = await self._connected()
        length = self.max_frame_bytes + 1
        self.writeRaw(clients.receivers[0].connection,
                      length.to_bytes(4, "big") + b"\x04" + b"\0" * 16)
        reason = await self.settle(servers.receivers[0].closed)
        self.assertIn("exceeds max_frame_bytes", reason)
        await self.settle(clients.receivers[0].closed)
        await self.settle(servers.opened(2))
        again = await self.settle(clients.opened(2))
        frame = _frame(FrameType.HEARTBEAT, b"{}")
        again.connection.sendFrame(frame)
        self.assertEqual(await self.settle(servers.receivers[1].received(1)), [frame])

    async def test_garbage_closes_with_reason(self) -> None:
        """
        An unknown frame type closes the connection with a logged protocol
        error, never an exception.
        """
        _, _, servers, clients = await self._connected()
        self.writeRaw(clients.receivers[0].connection, (17).to_bytes(4, "big") + b"\x63" + b"\0" * 16)
        reason = await self.settle(servers.receivers[0].closed)
        self.assertIn("unknown frame type 99", reason)

    async def test_server_close_and_reconnect(self) -> None:
        """
        When the gateway side closes, both ends are told once, and the client
        reconnects with a fresh receiver.
        """
        _, _, servers, clients = await self._connected()
        servers.receivers[0].connection.close("go away")
        self.assertEqual(await self.settle(servers.receivers[0].closed), "go away")
        await self.settle(clients.receivers[0].closed)
        await self.settle(clients.opened(2))
        await self.settle(servers.opened(2))
        self.assertEqual(servers.receivers[0].reasons, ["go away"])
        self.assertEqual(len(clients.receivers[0].reasons), 1)

    async def test_client_close(self) -> None:
        """
        When the microservice side closes, the gateway side is told.
        """
        _, _, servers, clients = await self._connected()
        clients.receivers[0].connection.close("bye")
        await self.settle(servers.receivers[0].closed)
        self.assertEqual(await self.settle(clients.receivers[0].closed), "bye")

    async def test_send_after_close_is_dropped(self) -> None:
        """
        Sending on a closed connection neither raises nor delivers.
        """
        _, _, servers, clients = await self._connected()
        sender = clients.receivers[0].connection
        sender.close("done")
        sender.sendFrame(_frame(FrameType.HEARTBEAT, b"{}"))
        await self.settle(servers.receivers[0].closed)
        self.assertEqual(servers.receivers[0].frames, [])

    async def test_server_stop_closes_connections(self) -> None:
        """
        Stopping the server closes its open connections.
        """
        server, _, servers, clients = await self._connected()
        await self.settle(server.stop())
        await self.settle(servers.receivers[0].closed)
        await self.settle(clients.receivers[0].closed)


class MessageContractTests:
    """
    What a message transport (UDP, RabbitMQ) guarantees to the layers above
    it: the parts of L{TransportContractTests} that apply without a
    connection.  A peer is opened by its HELLO, bad messages are dropped and
    counted (there is no connection to close), and stopping the server closes
    its peers.

    The concrete test case provides C{transport_type}, C{max_frame_bytes},
    C{startServer(receiver_factory) -> (server, client_address)},
    C{makeClient(address, receiver_factory)}, C{settle(deferred)},
    C{roundTrip()} (a Deferred that fires once messages already sent have
    been delivered) and three ways to put a message on the wire around the
    client: C{injectStranger(server, frame)} (a well-formed frame from a
    source that never sent HELLO), C{injectMalformed(server)} and
    C{injectOversized(server, frame)}.
    """

    transport_type: TransportType
    max_frame_bytes: int
    startServer: Callable[[ReceiverLog], Awaitable[Tuple[ITransportServer, str]]]
    makeClient: Callable[[str, ReceiverLog], ITransportClient]
    settle: Settle
    roundTrip: Callable[[], Deferred[None]]
    injectStranger: Callable[..., None]
    injectMalformed: Callable[..., None]
    injectOversized: Callable[..., None]
    assertEqual: Callable[..., None]
    assertIn: Callable[..., None]
    assertNotIn: Callable[..., None]
    addCleanup: Callable[..., None]

    async def _pair(self) -> Tuple[ITransportServer, ITransportClient, ReceiverLog, ReceiverLog]:
        return await _start_pair(self, hello=True)

    async def test_interfaces(self) -> None:
        """
        Server, client and the server's peer provide their interfaces.
        """
        server, client, servers, clients = await self._pair()
        verifyObject(ITransportServer, server)
        verifyObject(ITransportClient, client)
        self.assertEqual(server.transport_type, self.transport_type)
        self.assertEqual(client.transport_type, self.transport_type)
        for receiver in (servers.receivers[0], clients.receivers[0]):
            verifyObject(IFrameSender, receiver.connection)
            self.assertEqual(receiver.connection.transport_type, self.transport_type)

    async def test_hello_opens_and_frames_flow(self) -> None:
        """
        A HELLO opens the peer; frames of every message-able type then go
        both ways intact and in order.
        """
        _, _, servers, clients = await self._pair()
        server_end, client_end = servers.receivers[0], clients.receivers[0]
        up = [_frame(kind, bytes([i]) * (i * 300)) for i, kind in enumerate(
            [FrameType.HEARTBEAT, FrameType.RESPONSE, FrameType.ENDPOINTS_UPDATE], start=1)]
        for frame in up:
            client_end.connection.sendFrame(frame)
        received = await self.settle(server_end.received(1 + len(up)))
        self.assertEqual(received[1:], up)
        down = [_frame(FrameType.REQUEST, b"r" * 1000), _frame(FrameType.CANCEL, b"{}")]
        for frame in down:
            server_end.connection.sendFrame(frame)
        self.assertEqual(await self.settle(client_end.received(len(down))), down)

    async def test_largest_frame(self) -> None:
        """
        A frame exactly at C{max_frame_bytes} passes, both ways.
        """
        _, _, servers, clients = await self._pair()
        size = self.max_frame_bytes - FRAME_OVERHEAD
        up = _frame(FrameType.RESPONSE, b"\xab" * size)
        clients.receivers[0].connection.sendFrame(up)
        self.assertEqual((await self.settle(servers.receivers[0].received(2)))[1], up)
        down = _frame(FrameType.REQUEST, b"\xcd" * size)
        servers.receivers[0].connection.sendFrame(down)
        self.assertEqual(await self.settle(clients.receivers[0].received(1)), [down])

    async def test_unknown_and_malformed_dropped(self) -> None:
        """
        Messages from a source that never sent HELLO, and malformed ones, are
        dropped and counted; nothing is opened and the peer keeps working.
        """
        server, _, servers, clients = await self._pair()
        self.injectStranger(server, _frame(FrameType.RESPONSE, b"x"))
        self.injectMalformed(server)
        await self.settle(_later(self))
        self.assertEqual(len(servers.receivers), 1)
        self.assertEqual(self.drops(server).get("unknown_peer"), 1)
        self.assertEqual(self.drops(server).get("malformed"), 1)
        await self._still_open(servers, clients)

    async def test_oversized_dropped(self) -> None:
        """
        A message over C{max_frame_bytes} is dropped and counted, never
        delivered; the peer stays open and later frames pass.
        """
        server, _, servers, clients = await self._pair()
        big = _frame(FrameType.RESPONSE, b"o" * (self.max_frame_bytes - FRAME_OVERHEAD + 1))
        self.injectOversized(server, big)
        await self.settle(_later(self))
        self.assertEqual(self.drops(server).get("oversize"), 1)
        await self._still_open(servers, clients)
        self.assertNotIn(big, servers.receivers[0].frames)
        self.assertEqual(servers.receivers[0].reasons, [])

    async def _still_open(self, servers: ReceiverLog, clients: ReceiverLog) -> None:
        """
        The first peer still carries frames and nothing new was opened.
        """
        frame = _frame(FrameType.HEARTBEAT, b"{}")
        before = len(servers.receivers[0].frames)
        clients.receivers[0].connection.sendFrame(frame)
        received = await self.settle(servers.receivers[0].received(before + 1))
        self.assertEqual(received[-1], frame)
        self.assertEqual(len(servers.receivers), 1)

    async def test_server_stop_closes_peers(self) -> None:
        """
        Stopping the server closes its peers.
        """
        server, _, servers, _ = await self._pair()
        await self.settle(server.stop())
        await self.settle(servers.receivers[0].closed)

    def drops(self, server: ITransportServer) -> Dict[str, int]:
        """
        The server's drop counters by reason.
        """
        counting = cast(DropCounting, getattr(server, "protocol", server))
        return dict(counting.drops)


class DatagramContractTests(MessageContractTests):
    """
    L{MessageContractTests} plus what a datagram transport adds: the network
    may duplicate, so duplicates are dropped.
    """

    transport_type = TransportType.UDP

    def sendRaw(self, data: bytes) -> None:
        """
        Deliver one datagram to the server under test from a source that
        never sent HELLO.  Subclasses provide it (real socket or fake
        network); the injections below are made of it.
        """
        raise NotImplementedError

    def injectStranger(self, server: ITransportServer, frame: Frame) -> None:
        self.sendRaw(encode_datagram(frame))

    def injectMalformed(self, server: ITransportServer) -> None:
        self.sendRaw(b"\x01\x02")

    def injectOversized(self, server: ITransportServer, frame: Frame) -> None:
        self.sendRaw(encode_datagram(frame))

    async def test_duplicates_dropped(self) -> None:
        """
        The same frame (type and id) delivered twice reaches the receiver
        once.
        """
        _, _, servers, clients = await self._pair()
        frame = _frame(FrameType.HEARTBEAT, b"{}")
        clients.receivers[0].connection.sendFrame(frame)
        clients.receivers[0].connection.sendFrame(frame)
        clients.receivers[0].connection.sendFrame(_frame(FrameType.HEARTBEAT, b"{}"))
        frames = await self.settle(servers.receivers[0].received(3))
        self.assertEqual(frames[1], frame)
        self.assertEqual(len(servers.receivers[0].frames), 3)


def _later(case: MessageContractTests) -> Deferred[None]:
    """
    A Deferred that fires after a round of deliveries.
    """
    return case.roundTrip()
