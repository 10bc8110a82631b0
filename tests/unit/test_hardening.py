"""
Regression tests for defects found in review: early answers during
uploads, UDP answer loops, flow control bypass, budgets under uploads,
reload robustness, empty overrides, guessable ids, connections that never
say HELLO.
"""

from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import TransportType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.payloads import STREAM_WINDOW
from stellarouter.config import ConfigError, load_gateway_config
from stellarouter.config.gateway import TransportListenerConfig
from stellarouter.config.microservice import RouterEndpointConfig
from stellarouter.config.watcher import ConfigWatcher
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.datagrams import FakeDatagramReactor
from stellarouter.testing.fakes import FakeFrameSender
from stellarouter.testing.harness import InMemoryDeployment


def upload_app(events: List[Any]) -> Microservice:
    app = Microservice("up", "1.0.0")

    @app.endpoint("POST", "/early", streaming=True)
    def early(ctx: Any) -> RawResponse:
        return RawResponse.text("no thanks", status=403)

    @app.endpoint("POST", "/slow", streaming=True)
    async def slow(ctx: Any) -> RawResponse:
        gate: Deferred = Deferred()
        events.append(gate)
        await gate
        return RawResponse.text(str(len(await ctx.body.read())))

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong")

    return app


class UploadHardeningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Any] = []
        self.deployment = InMemoryDeployment()
        self.service = self.deployment.add(upload_app(self.events))
        self.addCleanup(self.deployment.stop)

    def test_early_answer_keeps_the_connection_sane(self) -> None:
        """
        An answer before the upload is complete is finished only once the
        body is in; the rest is dropped on both sides, and a pipelined
        request on the same connection is answered normally.
        """
        client = self.deployment.http()
        client.channel.dataReceived(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                    + str(4 * 65536).encode() + b"\r\n\r\n")
        for _ in range(4):
            client.channel.dataReceived(b"e" * 65536)
            self.deployment.pump()
        client.channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.deployment.pump()
        first = client.response()
        self.assertEqual((first.status, first.body), (403, b"no thanks"))
        second = client.response()
        self.assertEqual((second.status, second.body), (200, b"pong"))
        self.assertEqual(self.deployment.gateway.connections[0].uploads, {})
        self.assertEqual(self.service.sessions[0].dispatcher.in_flight, 0)

    def test_twisted_resuming_does_not_bypass_credit(self) -> None:
        """
        Even if twisted.web resumes the client's transport on its own, every
        piece that arrives while the credit is spent pauses it again (a
        paused transport reads nothing more).
        """
        client = self.deployment.http()
        client.channel.dataReceived(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                    + str(64 * 65536).encode() + b"\r\n\r\n")
        pieces = 0
        while client.transport.producerState != "paused":
            client.channel.dataReceived(b"s" * 65536)
            self.deployment.pump()
            pieces += 1
        self.assertLessEqual(pieces * 65536, STREAM_WINDOW + 65536)
        for _ in range(3):
            client.transport.resumeProducing()   # what HTTPChannel may do
            client.channel.dataReceived(b"s" * 65536)
            self.deployment.pump()
            self.assertEqual(client.transport.producerState, "paused")
        for gate in self.events:
            gate.callback(None)
        self.deployment.pump()


class UDPLoopTests(SynchronousTestCase):
    def test_duplicated_hello_answer_does_not_loop(self) -> None:
        """
        A duplicated HELLO answer is dropped by the microservice; it is not
        "answered" with the HELLO (which would start an endless exchange).
        """
        reactor = FakeDatagramReactor()
        deployment = InMemoryDeployment(clock=reactor, extra_transports=[
            TransportListenerConfig(TransportType.UDP, "udp:5110:interface=127.0.0.1", 65507)])
        self.addCleanup(deployment.stop)
        reactor.duplicate_next(2)
        deployment.add(upload_app([]), router=RouterEndpointConfig(
            TransportType.UDP, "udp:host=127.0.0.1:port=5110"))
        for _ in range(20):
            reactor.advance(0.1)
            deployment.pump()
        self.assertLess(len(reactor.sent), 40)
        self.assertEqual(len(deployment.gateway.connections), 1)


class MiscHardeningTests(SynchronousTestCase):
    def test_ids_are_not_guessable(self) -> None:
        """
        Consecutive correlation ids share no counter: knowing one does not
        give the next.
        """
        a, b = new_correlation_id(), new_correlation_id()
        self.assertNotEqual(a.uuid.int >> 64, b.uuid.int >> 64)
        self.assertNotEqual(b.uuid.int - a.uuid.int, 1)
        self.assertEqual(a.uuid.version, 4)

    def test_no_hello_closes(self) -> None:
        """
        A connection that never sends HELLO is closed after the deadline.
        """
        clock = Clock()
        connection = GatewayConnection(Registrar(RoutingState(), "gw", "eu1"), clock,
                                       hello_timeout=10.0)
        sender = FakeFrameSender()
        connection.connectionOpened(sender)
        clock.advance(10.0 - 1e-6)
        self.assertIsNone(sender.closed)
        clock.advance(1e-6)
        self.assertIn("no HELLO within 10s", sender.closed)

    def test_watcher_survives_unexpected_errors(self) -> None:
        """
        A load that raises something unexpected is logged and the watcher
        keeps polling; a later good file is applied.
        """
        clock = Clock()
        path = FilePath(self.mktemp())
        path.setContent(b"a")
        seen: list = []
        calls = [0]

        def load(p: str) -> str:
            calls[0] += 1
            if calls[0] == 1:
                raise RuntimeError("boom")
            return open(p).read()

        watcher = ConfigWatcher(path.path, load, seen.append, clock, "a", interval=1.0)
        watcher.start()
        self.addCleanup(watcher.stop)
        path.setContent(b"b")
        clock.pump([1.0, 1.0])  # seen, then seen unchanged: loaded
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        path.setContent(b"c")
        clock.pump([1.0, 1.0])
        self.assertEqual(seen, ["c"])

    def test_empty_override_refused(self) -> None:
        """
        An empty environment override is an error, not a silent reset to
        the default.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"node: {region: eu1}\ntransports: [{type: tcp, listen: 'tcp:1'}]\n"
                        b"auth: {hs256_secret: 0123456789abcdef0, audience: billing}\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path.path,
                                  {"STELLAROUTER_AUTH__AUDIENCE": ""})
        self.assertIn("STELLAROUTER_AUTH__AUDIENCE: empty value", str(error))
