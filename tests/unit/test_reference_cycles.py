"""
A request's objects, on both sides, are freed by reference counting when
it ends, not left for the cyclic garbage collector: each gateway request
used to be part of a cycle (its client-gone callback held its sink and
attempts, which hold the request; an upload's stream held the request),
~20 objects per request that only a collection freed, and so was each
streamed upload in the SDK (the body's credit callback held the request).
"""

import gc
from typing import Callable, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.gateway import connection as gateway_connection
from stellarouter.gateway._web.request import GatewayRequest
from stellarouter.microservice import (
    Microservice,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)
from stellarouter.testing.harness import InMemoryDeployment

GET = b"GET /ping HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
POST = (b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhello")


def _app(held: List["Deferred[RawResponse]"]) -> Microservice:
    app = Microservice("cycles", "1.0.0")

    @app.endpoint("GET", "/ping")
    def ping(ctx: RawRequestContext) -> RawResponse:
        return RawResponse.text("pong")

    @app.endpoint("POST", "/echo")
    def echo(ctx: RawRequestContext) -> RawResponse:
        return RawResponse(200, (), ctx.body)

    @app.endpoint("GET", "/slow")
    def slow(ctx: RawRequestContext) -> "Deferred[RawResponse]":
        held.append(Deferred())
        return held[-1]

    @app.endpoint("GET", "/export")
    def export(ctx: RawRequestContext) -> StreamingResponse:
        return StreamingResponse(200, [], [b"a" * 1000, b"b" * 1000])

    @app.endpoint("POST", "/upload", streaming=True)
    async def upload(ctx: RawRequestContext) -> RawResponse:
        size = 0
        async for chunk in ctx.body:  # type: ignore[attr-defined]
            size += len(chunk)
        return RawResponse.text(str(size))

    @app.endpoint("POST", "/early", streaming=True)
    def early(ctx: RawRequestContext) -> RawResponse:
        return RawResponse.text("no thanks", status=403)

    return app


class _Deployment(SynchronousTestCase):
    """
    A gateway and its microservice in memory, and clients on keep-alive
    connections.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.deployment = InMemoryDeployment(clock=self.clock)
        self.held: List["Deferred[RawResponse]"] = []
        self.deployment.add(_app(self.held))
        self.clock.advance(0)

    def client(self) -> Tuple[StringTransport, Callable[[bytes], None], Callable[[], None]]:
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        transport = StringTransport(peerAddress=address)
        channel = self.deployment.gateway.site.buildProtocol(address)
        channel.makeConnection(transport)
        return transport, channel.dataReceived, lambda: channel.connectionLost(
            Failure(ConnectionError("client left")))

    def cyclic_requests(self, run: Callable[[], None]) -> List[object]:
        """
        Run C{run} with the collector off, then collect: the gateway
        requests and the objects of stellarouter's own classes only the
        collector could free.
        """
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            run()
            flags = gc.get_debug()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                gc.collect()
                found = [o for o in gc.garbage if isinstance(o, GatewayRequest)
                         or type(o).__module__.startswith("stellarouter.")]
            finally:
                gc.set_debug(flags)
                del gc.garbage[:]
        finally:
            if enabled:
                gc.enable()
        return found

    def pump(self) -> None:
        for _ in range(5):
            self.clock.advance(0)


class RequestCycleTests(_Deployment):
    """
    No request is left in a reference cycle.
    """

    def test_answered(self) -> None:
        """
        GET and POST requests answered on a keep-alive connection.
        """
        transport, send, _ = self.client()

        def run() -> None:
            for raw in (GET, POST, GET):
                send(raw)
                self.pump()
            self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)

        self.assertEqual(self.cyclic_requests(run), [])

    def test_streamed(self) -> None:
        """
        A streamed answer, a streamed upload (chunked), and an upload
        answered before its body is all in.
        """
        transport, send, _ = self.client()

        def run() -> None:
            send(b"GET /export HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            self.pump()
            send(b"POST /upload HTTP/1.1\r\nHost: gateway.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            self.pump()
            send(b"3\r\nabc\r\n0\r\n\r\n")
            self.pump()
            self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 2, transport.value())
            self.assertTrue(transport.value().endswith(b"8"), transport.value()[-200:])
            send(b"POST /early HTTP/1.1\r\nHost: gateway.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            self.pump()
            self.assertIn(b"HTTP/1.1 403 ", transport.value())
            send(b"3\r\nabc\r\n0\r\n\r\n")
            self.pump()

        self.assertEqual(self.cyclic_requests(run), [])

    def test_client_left(self) -> None:
        """
        A request whose client leaves before its answer.
        """
        transport, send, leave = self.client()

        def run() -> None:
            send(b"GET /slow HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            self.pump()
            self.assertEqual(len(self.held), 1)
            leave()
            self.pump()

        self.assertEqual(self.cyclic_requests(run), [])


class SynchronousAnswerTests(_Deployment):
    """
    A request answered while it is being dispatched (the instance's
    connection closed, still routed: the REQUEST fails at once, 502): the
    answer comes, the request holds no cycle, and an upload's body that
    follows is read and dropped, not parsed as a new request.
    """

    def close_the_connection(self) -> None:
        [connection] = self.deployment.gateway.connections
        connection.phase = gateway_connection._CLOSED  # (still in the routing state)

    def test_get(self) -> None:
        transport, send, _ = self.client()
        self.close_the_connection()

        def run() -> None:
            send(GET)
            self.pump()
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "), transport.value())

        self.assertEqual(self.cyclic_requests(run), [])

    def test_upload(self) -> None:
        transport, send, _ = self.client()
        self.close_the_connection()

        def run() -> None:
            send(b"POST /upload HTTP/1.1\r\nHost: gateway.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            self.pump()
            send(b"3\r\nabc\r\n0\r\n\r\n")
            self.pump()
            send(b"GET /nothing-here HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            self.pump()
            answers = transport.value()
            self.assertTrue(answers.startswith(b"HTTP/1.1 502 "), answers)
            self.assertEqual(answers.count(b"HTTP/1.1 "), 2, answers)
            self.assertFalse(transport.disconnecting)

        self.assertEqual(self.cyclic_requests(run), [])
