"""
Failed connection attempts of the RabbitMQ transport, without a broker (a
L{MemoryReactorClock} stands for TCP and time; outside finding F8): each
failure explained with the broker's reason, the retries backing off
exponentially up to the cap even though every TCP connect succeeds (until a
link is ready), log lines rate-limited, a refused login at start-up made a
start-up failure of the side.  The same against the real broker is in
C{tests/integration/test_rabbitmq_refused.py}.
"""

from typing import Any, List

from pika.exceptions import ConnectionClosedByBroker, ProbableAuthenticationError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.testing.contract import ReceiverLog
from stellarouter.transports.amqp import AMQPTransportClient, AMQPTransportServer
from stellarouter.transports.broker import BrokerRefused, explain_failure

BROKER = "amqp:host=127.0.0.1:port=5672:user=guest:password=S3cretPass"
REFUSED = ConnectionClosedByBroker(
    403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN.")


class ExplainTests(SynchronousTestCase):
    def test_refusals(self) -> None:
        """
        A 403 is a refused login, a 530 a refused virtual host (pika's
        guesses too), each with the broker's words; both are refusals.
        """
        self.assertEqual(explain_failure(REFUSED, "h:5672"), (
            "the broker at h:5672 refused the login (403 ACCESS_REFUSED - Login was refused "
            "using authentication mechanism PLAIN.): wrong user or password?", True))
        reason, refused = explain_failure(
            ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost /x not found"), "h:5672")
        self.assertEqual((reason.split(": ")[0], refused), (
            "the broker at h:5672 refused the virtual host (530 NOT_ALLOWED - vhost /x not "
            "found)", True))
        self.assertTrue(explain_failure(ProbableAuthenticationError("x"), "h:5672")[1])

    def test_what_heals(self) -> None:
        """
        An unreachable broker, another close code and a connection closed
        during the handshake are not refusals.
        """
        self.assertEqual(explain_failure(ConnectionRefusedError(), "h:5672"), (
            "the broker at h:5672 is unreachable (Connection was refused by other side.)",
            False))
        self.assertFalse(explain_failure(ConnectionClosedByBroker(320, "CONNECTION_FORCED"),
                                         "h:5672")[1])
        reason, refused = explain_failure(ConnectionDone(), "h:5672")
        self.assertIn("closed before the AMQP handshake ended", reason)
        self.assertFalse(refused)


class FakeQueue:
    def get(self) -> "Deferred[Any]":
        return Deferred()


class FakeChannel:
    """
    Just enough of a channel for L{BrokerQueue.link_ready}.
    """

    def add_on_return_callback(self, callback: Any) -> None:
        pass

    def exchange_declare(self, **kwargs: Any) -> "Deferred[None]":
        return succeed(None)

    queue_declare = queue_bind = exchange_declare

    def basic_consume(self, **kwargs: Any) -> "Deferred[Any]":
        return succeed((FakeQueue(), "tag"))


class FakeLink:
    def channel(self) -> "Deferred[FakeChannel]":
        return succeed(FakeChannel())

    def set_up(self) -> None:
        pass


class BackoffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.events: List[Any] = []
        self.server = AMQPTransportServer(self.reactor, BROKER, ReceiverLog(), "gw-1",
                                          initial_delay=0.5, max_delay=4.0, jitter=lambda: 0,
                                          config_key="transports[2]")
        self.server.log = Logger(observer=self.events.append)
        self.started = self.server.start()
        self.addCleanup(self.server.stop)

    def logged(self) -> List[str]:
        lines = [f"[{e['log_level'].name}] {formatEvent(e)}" for e in self.events]
        self.events.clear()
        return lines

    def connect_and_drop(self) -> "Deferred[Any]":
        """
        Let the latest connection attempt succeed at TCP level, then lose it
        before the AMQP handshake ends; return the link's C{ready}.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        ready = protocol._wrappedProtocol._protocol.ready
        protocol.connectionLost(Failure(ConnectionDone()))
        return ready

    def assertNextAttemptAfter(self, delay: float) -> None:
        attempts = len(self.reactor.tcpClients)
        self.reactor.advance(delay - 1 / 64)
        self.assertEqual(len(self.reactor.tcpClients), attempts)
        self.reactor.advance(1 / 64)
        self.assertEqual(len(self.reactor.tcpClients), attempts + 1)

    def test_backoff_grows_across_connections_that_never_open(self) -> None:
        """
        Connections that TCP accepts and that end before the AMQP link is
        open are retried after 0.5, 0.75, 1.125 ... s, up to the 4 s cap
        (C{ClientService} alone waited the initial delay every time); pika's
        failed C{ready} is handled, not left in a Deferred.
        """
        delays = (0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875, 4.0, 4.0)
        for delay in delays:
            ready = self.connect_and_drop()
            self.assertIsNone(self.successResultOf(ready))
            self.assertNextAttemptAfter(delay)
        self.assertEqual(self.server.failed_attempts, len(delays))

    def test_silent_broker_handshake_timeout(self) -> None:
        """
        A connection that TCP accepts and that never completes the AMQP
        handshake (a silent peer) is aborted after C{handshake_timeout}, the
        warning says why, and the attempt is retried with backoff; the start
        does not wait for it.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.reactor.advance(self.server.handshake_timeout - 1 / 64)
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(self.started)
        self.reactor.advance(1 / 64)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(self.started),
                         "rabbitmq:127.0.0.1:5672/stella.gw.gw-1")
        self.assertEqual(self.server.failed_attempts, 1)
        [line] = self.logged()
        self.assertIn("cannot open the AMQP link: the broker at 127.0.0.1:5672 accepted the "
                      "connection but did not complete the AMQP handshake within 10s", line)
        self.assertNextAttemptAfter(0.5)

    def opened_link(self, channel: "Deferred[Any]") -> Any:
        """
        The latest attempt's connection (as C{ClientService} wraps it), its
        TCP connection made and its AMQP handshake done; opening its
        channel gives C{channel}.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        link = protocol._wrappedProtocol._protocol
        link.channel = lambda: channel
        # (What pika does when the handshake ends.)
        ready, link.ready = link.ready, None
        ready.callback(None)
        return protocol

    def handshake_timers(self, due: float) -> int:
        return sum(1 for call in self.reactor.getDelayedCalls() if call.getTime() == due)

    def test_link_set_up_in_time_stops_the_timer(self) -> None:
        """
        A link whose queue is consumed in time is not cut later.
        """
        due = self.reactor.seconds() + self.server.handshake_timeout
        connection = self.opened_link(succeed(FakeChannel()))
        self.assertEqual(self.handshake_timers(due), 0)
        self.assertFalse(connection.transport.disconnecting)
        self.assertEqual(self.server.failed_attempts, 0)

    def test_stalled_queue_setup(self) -> None:
        """
        A broker that completes the handshake and then never opens the
        channel (or declares the queue): the attempt is cut within
        C{handshake_timeout} of the TCP connection, reported once as a
        failed attempt (no traceback), and retried with backoff.
        """
        due = self.reactor.seconds() + self.server.handshake_timeout
        connection = self.opened_link(Deferred())
        self.assertEqual(self.handshake_timers(due), 1)
        self.reactor.advance(self.server.handshake_timeout)
        self.assertTrue(connection.transport.disconnecting)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.server.failed_attempts, 1)
        [line] = self.logged()
        self.assertIn("the broker at 127.0.0.1:5672 completed the AMQP handshake but did not set "
                      "up the queue within 10s of the connection", line)
        self.assertNextAttemptAfter(0.5)

    def test_ready_link_resets_the_backoff(self) -> None:
        """
        Once a link is ready the count of failures starts again: the next
        loss is retried after the initial delay.
        """
        for _ in range(3):
            self.connect_and_drop()
            self.reactor.advance(4.0)
        consuming = Deferred.fromCoroutine(self.server.link_ready(FakeLink()))
        self.assertNoResult(consuming)  # (it consumes until the link is lost)
        self.assertEqual(self.server.failed_attempts, 0)
        self.assertIn("(after 3 failed attempt(s))", self.logged()[-1])
        self.connect_and_drop()
        self.assertNextAttemptAfter(0.5)

    def test_unreachable_broker_does_not_stop_the_start(self) -> None:
        """
        A broker that refuses TCP at the first attempt: C{start} fires with
        the queue's description, and one warning names the key, the
        address without its password and the reason.
        """
        self.assertNoResult(self.started)
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(self.reactor.connectors[-1],
                                       Failure(ConnectionRefusedError()))
        self.assertEqual(self.successResultOf(self.started),
                         "rabbitmq:127.0.0.1:5672/stella.gw.gw-1")
        [line] = self.logged()
        self.assertEqual(line, (
            "[warn] transports[2] (amqp:host=127.0.0.1:port=5672:user=guest:password=***): "
            "cannot open the AMQP link: the broker at 127.0.0.1:5672 is unreachable "
            "(Connection was refused by other side.); 1 failed attempt(s) in a row, retrying "
            "with backoff (at most 4s apart)"))

    def test_refused_login_at_start_fails_the_start(self) -> None:
        """
        A refused login at the first attempt fails C{start} with the reason
        (the gateway makes it a start-up failure naming the listener) and
        is not logged twice.
        """
        self.server.open_failed(REFUSED)
        failure = self.failureResultOf(self.started, BrokerRefused)
        self.assertIn("refused the login (403 ACCESS_REFUSED", str(failure.value))
        self.assertEqual(self.logged(), [])

    def test_failures_after_start_are_rate_limited(self) -> None:
        """
        Once started, failures are logged the 1st, 2nd, 4th, 8th... time in
        a row and whenever the reason changes; a refusal as an error.
        """
        self.server.open_failed(ConnectionRefusedError())
        self.assertEqual(len(self.logged()), 1)
        logged = []
        for attempt in range(2, 10):
            self.server.open_failed(REFUSED if attempt >= 3 else ConnectionRefusedError())
            logged += [(attempt, line.split(" ")[0]) for line in self.logged()]
        self.assertEqual(logged, [(2, "[warn]"), (3, "[error]"), (4, "[error]"),
                                  (8, "[error]")])


class ClientRefusedTests(SynchronousTestCase):
    def test_refused_at_start_reported_once(self) -> None:
        """
        The microservice side calls C{on_refused_at_start} for a refusal at
        the first attempt only (logging it instead when nobody listens, or
        later).
        """
        reactor = MemoryReactorClock()
        client = AMQPTransportClient(reactor, f"{BROKER}:gateway=gw-1", ReceiverLog(),
                                     jitter=lambda: 0)
        events: List[Any] = []
        client.log = Logger(observer=events.append)
        reasons: List[str] = []
        client.on_refused_at_start = reasons.append
        client.open_failed(REFUSED)
        self.assertEqual(len(reasons), 1)
        self.assertIn("403 ACCESS_REFUSED", reasons[0])
        self.assertEqual(events, [])
        client.open_failed(REFUSED)
        self.assertEqual(len(reasons), 1)
        self.assertEqual(len(events), 1)
        self.assertNotIn("S3cretPass", formatEvent(events[0]))
