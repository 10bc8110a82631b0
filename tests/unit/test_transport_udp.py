"""
The UDP transport on a fake datagram network (Clock): registration, small
calls through the gateway, loss, duplication, reordering, malformed and
unknown datagrams, size limits.
"""

from typing import Any

from twisted.internet.protocol import DatagramProtocol as Protocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType, TransportType
from stellarouter.common.frames import encode_datagram
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameSender, ITransportClient, ITransportServer
from stellarouter.common.models import Frame
from stellarouter.config.gateway import TransportListenerConfig
from stellarouter.config.microservice import RouterEndpointConfig
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.datagrams import FakeDatagramReactor
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.transports.udp import parse_udp_address

UDP = "udp:5102:interface=127.0.0.1"


def make_app() -> Any:
    app = Microservice("small", "1.0.0")
    app.calls = []  # type: ignore[attr-defined]

    @app.endpoint("GET", "/ping", timeout=3.0)
    def ping(ctx: Any) -> RawResponse:
        app.calls.append(ctx.correlation_id)  # type: ignore[attr-defined]
        return RawResponse.text("pong")

    @app.endpoint("POST", "/charge", timeout=3.0)
    def charge(ctx: Any) -> RawResponse:
        app.calls.append(ctx.correlation_id)  # type: ignore[attr-defined]
        return RawResponse.text("charged")

    @app.endpoint("POST", "/echo", timeout=3.0)
    def echo(ctx: Any) -> RawResponse:
        return RawResponse(200, [], ctx.body)

    @app.endpoint("GET", "/stream", streaming=True)
    def stream(ctx: Any) -> RawResponse:
        return RawResponse.text("never over udp")

    return app


class UDPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeDatagramReactor()
        self.deployment = InMemoryDeployment(
            clock=self.reactor,
            extra_transports=[TransportListenerConfig(TransportType.UDP, UDP, 65507,
                                                      idle_timeout=40.0)])
        self.app = make_app()
        self.service = self.deployment.add(
            self.app, router=RouterEndpointConfig(TransportType.UDP,
                                                  "udp:host=127.0.0.1:port=5102"))
        self.addCleanup(self.deployment.stop)

    def connection(self) -> Any:
        [connection] = self.deployment.gateway.connections
        return connection

    def server(self) -> Any:
        return self.deployment.gateway.servers[1]

    def test_interfaces_and_registration(self) -> None:
        """
        Server, client and peer provide their interfaces; the microservice is
        registered over UDP and serves a small call through the gateway.
        """
        verifyObject(ITransportServer, self.server())
        client = self.service.clients[0]
        verifyObject(ITransportClient, client)
        verifyObject(IFrameSender, client)
        verifyObject(IFrameSender, self.connection().sender)
        self.assertEqual(self.connection().state.transport_type, TransportType.UDP)
        response = self.deployment.request("GET", "/ping")
        self.assertEqual((response.status, response.body), (200, b"pong"))

    def test_lost_hello_is_resent(self) -> None:
        """
        A lost HELLO is sent again until answered.
        """
        deployment = InMemoryDeployment(clock=FakeDatagramReactor(), extra_transports=[
            TransportListenerConfig(TransportType.UDP, "udp:5103:interface=127.0.0.1", 65507)])
        self.addCleanup(deployment.stop)
        deployment.clock.drop_next(1)
        deployment.add(make_app(), router=RouterEndpointConfig(
            TransportType.UDP, "udp:host=127.0.0.1:port=5103"))
        self.assertEqual(deployment.gateway.connections, [])
        deployment.clock.advance(1.0)
        deployment.pump()
        self.assertEqual(len(deployment.gateway.connections), 1)

    def test_lost_request_retried_for_idempotent(self) -> None:
        """
        A lost GET is sent again and answered; the handler ran once.
        """
        client = self.deployment.http()
        self.reactor.drop_next(1)
        client.send("GET", "/ping")
        self.deployment.pump()
        self.assertIsNone(client.response())
        self.reactor.advance(1.0)  # timeout 3 s, two retries: every 1 s
        self.deployment.pump()
        self.assertEqual(client.response().body, b"pong")
        self.assertEqual(len(self.app.calls), 1)
        self.assertEqual(self.connection().in_flight.retries_sent, 1)

    def test_lost_response_repaired_from_reply_cache(self) -> None:
        """
        When the RESPONSE is lost, the retried REQUEST is a duplicate: the
        microservice sends its cached answer instead of running the handler
        again.
        """
        client = self.deployment.http()
        self.reactor.drop_next_of_type(FrameType.RESPONSE)
        client.send("GET", "/ping")
        self.deployment.pump()
        self.assertEqual(len(self.app.calls), 1)
        self.assertIsNone(client.response())
        self.reactor.advance(1.0)
        self.deployment.pump()
        self.assertEqual(client.response().body, b"pong")
        self.assertEqual(len(self.app.calls), 1)

    def test_lost_non_idempotent_request_times_out(self) -> None:
        """
        A lost POST is not retried: the client gets 504 at the timeout.
        """
        client = self.deployment.http()
        self.reactor.drop_next(1)
        client.send("POST", "/charge", b"{}")
        self.deployment.pump()
        self.reactor.advance(3.0)
        self.deployment.pump()
        self.assertEqual(client.response().status, 504)
        self.assertEqual(self.app.calls, [])

    def test_duplicates_ignored(self) -> None:
        """
        Duplicated datagrams are ignored by correlation id: the handler runs
        once and the client gets one answer.
        """
        self.reactor.duplicate_next(10)
        response = self.deployment.request("POST", "/charge", b"{}")
        self.assertEqual(response.body, b"charged")
        self.assertEqual(len(self.app.calls), 1)
        self.assertGreaterEqual(self.server().protocol.drops.get("duplicate", 0), 1)

    def test_reordered_requests(self) -> None:
        """
        Requests delivered in reverse order are each answered correctly.
        """
        clients = []
        self.reactor.hold()
        for body in (b"first", b"second", b"third"):
            client = self.deployment.http()
            client.send("POST", "/echo", body)
            clients.append(client)
        self.deployment.pump()
        self.reactor.release(reverse=True)
        self.deployment.pump()
        self.assertEqual([c.response().body for c in clients], [b"first", b"second", b"third"])

    def test_malformed_and_unknown_datagrams(self) -> None:
        """
        Short, unknown-type and unknown-peer datagrams are dropped and
        counted; nothing breaks.
        """
        protocol = self.server().protocol
        protocol.datagramReceived(b"\x01" * 5, ("127.0.0.1", 9))
        protocol.datagramReceived(b"\x63" + b"\x00" * 20, ("127.0.0.1", 9))
        heartbeat = Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}")
        protocol.datagramReceived(encode_datagram(heartbeat), ("127.0.0.1", 9))
        self.assertEqual(protocol.drops, {"malformed": 2, "unknown_peer": 1})
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)

    def test_what_udp_cannot_carry(self) -> None:
        """
        A streaming endpoint served only over UDP is 503 saying why; a body
        too large for a datagram is 413 saying why.
        """
        response = self.deployment.request("GET", "/stream")
        self.assertEqual(response.status, 503)
        self.assertIn(b"cannot carry streams", response.body)
        response = self.deployment.request("POST", "/echo", b"x" * 70000)
        self.assertEqual(response.status, 413)
        self.assertIn(b"does not fit in one UDP datagram", response.body)

    def test_too_large_goes_to_another_transport(self) -> None:
        """
        A request too large for UDP goes to an instance on a stream
        transport when one serves the endpoint.
        """
        self.deployment.add(make_app())
        response = self.deployment.request("POST", "/echo", b"y" * 70000)
        self.assertEqual((response.status, len(response.body)), (200, 70000))

    def test_silent_peer_expires_and_client_starts_over(self) -> None:
        """
        A peer silent for the idle timeout is closed at the gateway; its
        late heartbeats are answered "send HELLO again" and it registers
        again at once (issue 18); it stays registered.
        """
        self.reactor.hold()
        self.reactor.advance(40.0)
        self.deployment.pump()
        self.assertEqual(self.deployment.gateway.connections, [])
        self.reactor.release(reverse=False)
        self.deployment.pump()
        self.assertGreater(self.server().protocol.drops["unknown_peer"], 0)
        self.assertEqual(self.server().hello_again.answered, 1)
        self.assertEqual(len(self.deployment.gateway.connections), 1)
        for _ in range(10):
            self.reactor.advance(10.0)
            self.deployment.pump()
        self.assertEqual(len(self.deployment.gateway.connections), 1)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)


class AddressTests(SynchronousTestCase):
    def test_grammar(self) -> None:
        """
        UDP addresses use the endpoint-string grammar; anything else is a
        clear error.
        """
        self.assertEqual(parse_udp_address("udp:5102:interface=127.0.0.1", True),
                         ("127.0.0.1", 5102))
        self.assertEqual(parse_udp_address("udp:host=localhost:port=9", False), ("localhost", 9))
        for bad, server in [("tcp:5102", True), ("udp:x", True), ("udp:host=a", False),
                            ("udp:1:port=2", False)]:
            self.assertRaises(ValueError, parse_udp_address, bad, server)


class DropLoggingTests(SynchronousTestCase):
    """
    Issue 18 item 1: dropped datagrams cost a counter, and the log says how
    many at most once per interval.
    """

    def setUp(self) -> None:
        from twisted.logger import Logger
        self.reactor = FakeDatagramReactor()
        self.deployment = InMemoryDeployment(
            clock=self.reactor,
            extra_transports=[TransportListenerConfig(TransportType.UDP, UDP, 65507,
                                                      idle_timeout=40.0)])
        self.addCleanup(self.deployment.stop)
        self.protocol = self.deployment.gateway.servers[1].protocol
        self.events: list = []
        self.protocol.log = Logger(observer=self.events.append)

    def flood(self, count: int, source: Any = ("127.0.0.1", 9)) -> None:
        heartbeat = encode_datagram(Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}"))
        for i in range(count):
            self.protocol.datagramReceived(heartbeat if i % 2 else b"\x63" * 30, source)

    def test_one_line_per_interval(self) -> None:
        """
        10,000 junk datagrams log nothing until the interval is over, then
        one line with the count and the reasons; a quiet interval logs
        nothing.
        """
        self.flood(10000)
        self.assertEqual(self.protocol.drops, {"unknown_peer": 5000, "malformed": 5000})
        self.reactor.advance(self.protocol.drop_log_interval - 0.001)
        self.assertEqual(self.events, [])
        self.reactor.advance(0.001)
        [event] = self.events
        self.assertEqual((event["count"], event["reasons"]),
                         (10000, "malformed 5000, unknown_peer 5000"))
        self.reactor.advance(self.protocol.drop_log_interval * 3)
        self.assertEqual(len(self.events), 1)
        self.flood(3)
        self.reactor.advance(self.protocol.drop_log_interval)
        self.assertEqual([e["count"] for e in self.events], [10000, 3])

    def test_unknown_sender_told_to_hello_again_within_budget(self) -> None:
        """
        A frame other than HELLO from an address without a peer is answered
        with a HELLO answer C{accepted: false, hello_again: true} under its
        correlation id, at most once per interval per address and at most
        C{per_second} answers a second in all; the rest cost a counter.
        """
        from stellarouter.common.frames import decode_datagram
        from stellarouter.common.payloads import decode_hello_ack
        server = self.deployment.gateway.servers[1]
        limit = server.hello_again
        cid = new_correlation_id()
        beat = encode_datagram(Frame(FrameType.HEARTBEAT, cid, b"{}"))
        before = len(self.reactor.sent)
        for _ in range(100):
            self.protocol.datagramReceived(beat, ("127.0.0.1", 9))
        [(_, target, datagram)] = self.reactor.sent[before:]
        self.assertEqual(target, ("127.0.0.1", 9))
        answer = decode_datagram(datagram)
        ack = decode_hello_ack(answer.payload)
        self.assertEqual((answer.type, answer.correlation_id, ack.accepted, ack.hello_again),
                         (FrameType.HELLO, cid, False, True))
        self.reactor.advance(limit.interval)
        self.protocol.datagramReceived(beat, ("127.0.0.1", 9))
        self.assertEqual(len(self.reactor.sent), before + 2)
        for port in range(1000, 1000 + 10 * limit.per_second):
            self.protocol.datagramReceived(beat, ("127.0.0.1", port))
        self.assertEqual(len(self.reactor.sent), before + 1 + limit.per_second)
        self.assertEqual(self.protocol.drops["unknown_peer"], 101 + 10 * limit.per_second)

    def test_refused_hello_address_held_off(self) -> None:
        """
        After a HELLO from an address is refused, its further HELLOs are
        dropped unread (no new connection, no answer) until the hold is
        over.
        """
        source = ("127.0.0.1", 7)
        junk_hello = encode_datagram(Frame(FrameType.HELLO, new_correlation_id(), b"junk"))
        port = self.reactor.listenUDP(7, Protocol())
        self.protocol.datagramReceived(junk_hello, source)
        answered = len(self.reactor.sent)
        for _ in range(100):
            self.protocol.datagramReceived(
                encode_datagram(Frame(FrameType.HELLO, new_correlation_id(), b"junk")), source)
        self.assertEqual(self.protocol.drops.get("refused_recently"), 100)
        self.assertEqual(len(self.reactor.sent), answered)
        self.assertEqual(self.deployment.gateway.connections, [])
        self.reactor.advance(self.deployment.gateway.servers[1].refusal_hold)
        self.protocol.datagramReceived(junk_hello.replace(junk_hello[1:17], bytes(16)), source)
        self.assertEqual(len(self.reactor.sent), answered + 1)
        port.stopListening()
