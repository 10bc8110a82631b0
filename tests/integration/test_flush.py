"""
L{stellarouter.transports.flush} on real TCP connections over loopback:
buffered bytes leave at once (C{flush}), a write is offered to the socket
at once (C{write_now}), and whatever the reactor must act on (a closing
connection, a paused producer, a failed write) is left to it.
"""

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from stellarouter.transports.flush import flush, write_now


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.connected_ = Deferred()
        self.lost = Deferred()
        self.waiting: List[Any] = []

    def connectionMade(self) -> None:
        self.connected_.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for size, d in list(self.waiting):
            if len(self.data) >= size:
                self.waiting.remove((size, d))
                d.callback(self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(self.data)

    def received(self, size: int) -> Deferred:
        d: Deferred = Deferred()
        if len(self.data) >= size:
            d.callback(self.data)
        else:
            self.waiting.append((size, d))
        return d


@implementer(IPushProducer)
class _Producer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class FlushTests(TestCase):
    timeout = 10

    async def connect(self) -> Any:
        """
        A connected pair over 127.0.0.1: (server side, client side).
        """
        servers: List[_Collect] = []

        def build() -> _Collect:
            servers.append(_Collect())
            return servers[-1]

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build))
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port).connect(Factory.forProtocol(_Collect))
        while not servers:
            await Deferred.fromCoroutine(self._turn())
        server = await servers[0].connected_

        def close() -> Deferred:
            for side in (server, client):
                if side.transport.connected:
                    side.transport.abortConnection()
            return client.lost
        self.addCleanup(close)
        return server, client

    async def _turn(self) -> None:
        d: Deferred = Deferred()
        reactor.callLater(0, d.callback, None)
        await d

    async def test_sends_now(self) -> None:
        """
        Written bytes are sent by the call itself: nothing stays buffered
        and the transport is no longer waiting to write.
        """
        server, client = await self.connect()
        server.transport.write(b"hello ")
        server.transport.writeSequence([b"wor", b"ld"])
        self.assertIn(server.transport, reactor.getWriters())
        flush(server.transport)
        self.assertEqual((server.transport.dataBuffer, server.transport._tempDataLen), (b"", 0))
        self.assertNotIn(server.transport, reactor.getWriters())
        self.assertEqual(await client.received(11), b"hello world")

    async def test_nothing_buffered(self) -> None:
        """
        With nothing buffered there is nothing to do (no empty send).
        """
        server, client = await self.connect()
        calls: List[None] = []
        server.transport.doWrite = lambda: calls.append(None)  # type: ignore[method-assign]
        flush(server.transport)
        self.assertEqual(calls, [])

    async def test_closing_is_left_to_the_reactor(self) -> None:
        """
        A connection asked to close keeps its bytes until the reactor
        writes them and closes it, as without the call: C{doWrite}'s answer
        there is the close, which only the reactor acts on.
        """
        server, client = await self.connect()
        server.transport.write(b"last words")
        server.transport.loseConnection()
        flush(server.transport)
        self.assertEqual(server.transport._tempDataLen, 10)
        self.assertEqual(await client.lost, b"last words")

    async def test_paused_producer_is_left_to_the_reactor(self) -> None:
        """
        While the transport's producer is paused (its buffer was full),
        writing, and resuming the producer, stays with the reactor.
        """
        server, client = await self.connect()
        server.transport.registerProducer(_Producer(), True)
        server.transport.producerPaused = True
        server.transport.write(b"later")
        flush(server.transport)
        self.assertEqual(server.transport._tempDataLen, 5)
        self.assertEqual(await client.received(5), b"later")

    async def test_failed_write(self) -> None:
        """
        A write the socket refuses (the peer is gone) leaves the bytes
        buffered and the transport registered for writing, so the reactor's
        own write meets the error and closes the connection.
        """
        server, client = await self.connect()
        client.transport.abortConnection()  # RST: the server's send fails
        await client.lost
        # Until the server's reactor sees the reset, send() is what tells.
        for _ in range(50):
            if not server.transport.connected:
                break
            server.transport.write(b"x" * 65536)
            flush(server.transport)
            if server.transport._tempDataLen or server.transport.dataBuffer:
                self.assertIn(server.transport, reactor.getWriters())
            await self._turn()
        await server.lost
        self.assertFalse(server.transport.connected)

    def test_other_transports(self) -> None:
        """
        Anything but a TCP connection (TLS, in-memory, test transports) is
        left alone.
        """
        transport = StringTransport()
        transport.write(b"kept")
        flush(transport)
        flush(None)
        self.assertEqual(transport.value(), b"kept")

    async def test_write_now_sends_at_once(self) -> None:
        """
        With nothing buffered, C{write_now} sends by itself: nothing is
        buffered and the socket was never registered for writing.
        """
        server, client = await self.connect()
        registered: List[Any] = []
        start = server.transport.startWriting
        server.transport.startWriting = lambda: (registered.append(1), start())  # type: ignore
        write_now(server.transport, b"at once")
        self.assertEqual((server.transport.dataBuffer, server.transport._tempDataLen), (b"", 0))
        self.assertEqual(registered, [])
        self.assertEqual(await client.received(7), b"at once")

    async def test_write_now_keeps_order(self) -> None:
        """
        Behind bytes already buffered, C{write_now} only buffers, so the
        order on the wire is the order of the writes.
        """
        server, client = await self.connect()
        server.transport.write(b"first ")
        write_now(server.transport, b"second")
        self.assertEqual(server.transport._tempDataLen, 12)
        self.assertEqual(await client.received(12), b"first second")

    async def test_write_now_partial(self) -> None:
        """
        What the socket does not take at once is buffered and follows.
        """
        server, client = await self.connect()
        data = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than one send takes
        write_now(server.transport, data)
        self.assertTrue(server.transport._tempDataLen or server.transport.dataBuffer)
        self.assertIn(server.transport, reactor.getWriters())
        self.assertEqual(await client.received(len(data)), data)

    async def test_write_now_closing(self) -> None:
        """
        On a connection asked to close, C{write_now} is a plain write: the
        bytes go before the close, by the reactor.
        """
        server, client = await self.connect()
        server.transport.write(b"a")
        server.transport.loseConnection()
        write_now(server.transport, b"b")
        self.assertEqual(server.transport._tempDataLen, 2)
        self.assertEqual(await client.lost, b"ab")

    async def test_write_now_failed_send(self) -> None:
        """
        A send to a reset peer raises nothing; the connection is closed by
        the reactor as for a plain write.
        """
        server, client = await self.connect()
        client.transport.abortConnection()
        await client.lost
        for _ in range(50):
            if not server.transport.connected:
                break
            write_now(server.transport, b"x" * 65536)
            await self._turn()
        await server.lost
        self.assertFalse(server.transport.connected)

    def test_write_now_other_transports(self) -> None:
        """
        Other transports get a plain C{write}.
        """
        transport = StringTransport()
        write_now(transport, b"plain")
        self.assertEqual(transport.value(), b"plain")
