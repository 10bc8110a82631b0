"""
A RabbitMQ transport whose broker refuses it or cannot be reached, against
the real broker on 127.0.0.1:5672 (guest/guest works, any other password is
refused): a refused login or virtual host is a start-up failure of the
gateway and of the microservice (one critical line naming the configuration
key, the address with C{password=***} and the broker's reason; exit status
1), and an unreachable broker is not (the gateway binds its other
listeners and keeps retrying).  Outside finding F8.
"""

import json
import signal
import socket
import uuid
from typing import List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from stellarouter.testing.contract import ReceiverLog
from stellarouter.testing.processes import WatchedProcess
from stellarouter.transports.amqp import BrokerRefused, amqp_server

from .test_processes import ProcessTestCase

PASSWORD = "WrongAMQPpass77"
REFUSED = f"amqp:host=127.0.0.1:port=5672:user=guest:password={PASSWORD}:vhost=/"


def closed_port() -> int:
    """
    A loopback port nothing listens on (bound, then released).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SilentListener:
    """
    A loopback TCP listener that accepts connections and never sends a
    byte (something other than an AMQP broker on the broker's port).
    """

    def __init__(self, test: TestCase) -> None:
        self.connections = 0
        self._waiting: List[Tuple[int, "Deferred[None]"]] = []
        listener = reactor.listenTCP(0, Factory.forProtocol(lambda: _Silent(self)),
                                     interface="127.0.0.1")
        test.addCleanup(listener.stopListening)
        self.port: int = listener.getHost().port

    def connected(self, count: int = 1) -> "Deferred[None]":
        """
        Fires once C{count} connections have been accepted.
        """
        d: Deferred[None] = Deferred()
        if self.connections >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d

    def accepted(self) -> None:
        self.connections += 1
        for count, d in [w for w in self._waiting if w[0] <= self.connections]:
            self._waiting.remove((count, d))
            d.callback(None)


class _Silent(Protocol):
    def __init__(self, listener: SilentListener) -> None:
        self.listener = listener

    def connectionMade(self) -> None:
        self.listener.accepted()


@implementer(ILogObserver)
class LogLines:
    """
    Collects the log lines emitted while it is registered.
    """

    def __init__(self) -> None:
        self.lines: List[str] = []

    def __call__(self, event: LogEvent) -> None:
        self.lines.append(f"[{event.get('log_level').name}] {formatEvent(event)}")


class TransportRefusedTests(TestCase):
    timeout = 30

    def logged(self) -> LogLines:
        lines = LogLines()
        globalLogPublisher.addObserver(lines)
        self.addCleanup(globalLogPublisher.removeObserver, lines)
        return lines

    async def test_refused_login_fails_start_with_the_broker_reason(self) -> None:
        """
        The gateway side's C{start} fails with the broker's own reason
        (403 ACCESS_REFUSED), not pika's bare "AMQPConnectionError: 1", and
        nothing is left as an unhandled error.
        """
        lines = self.logged()
        server = amqp_server(reactor, REFUSED, ReceiverLog(), f"it-{uuid.uuid4().hex[:8]}",
                             config_key="transports[0]", jitter=lambda: 0)
        self.addCleanup(server.stop)
        started: Deferred[str] = server.start()
        with self.assertRaises(BrokerRefused) as caught:
            await started.addTimeout(10, reactor)
        reason = str(caught.exception)
        self.assertIn("the broker at 127.0.0.1:5672 refused the login (403 ACCESS_REFUSED", reason)
        self.assertIn("wrong user or password", reason)
        self.assertNotIn(PASSWORD, "\n".join(lines.lines))

    async def test_missing_vhost_refused(self) -> None:
        """
        A virtual host the broker does not have is refused with its reason
        (530 NOT_ALLOWED).
        """
        server = amqp_server(reactor, "amqp:host=127.0.0.1:port=5672:vhost=/stella-missing",
                             ReceiverLog(), f"it-{uuid.uuid4().hex[:8]}", jitter=lambda: 0)
        self.addCleanup(server.stop)
        with self.assertRaises(BrokerRefused) as caught:
            await server.start().addTimeout(10, reactor)
        self.assertIn("refused the virtual host (530 NOT_ALLOWED", str(caught.exception))

    async def test_unreachable_broker_starts_and_retries(self) -> None:
        """
        An unreachable broker does not stop the start (the gateway serves
        its other listeners); the warning names the key, the address with
        the password hidden and why.
        """
        lines = self.logged()
        port = closed_port()
        server = amqp_server(
            reactor, f"amqp:host=127.0.0.1:port={port}:user=guest:password={PASSWORD}",
            ReceiverLog(), f"it-{uuid.uuid4().hex[:8]}", config_key="transports[1]",
            initial_delay=5.0, jitter=lambda: 0)
        self.addCleanup(server.stop)
        description = await server.start().addTimeout(10, reactor)
        self.assertEqual(description, f"rabbitmq:127.0.0.1:{port}/{server.queue}")
        self.assertEqual(server.failed_attempts, 1)
        warning = [line for line in lines.lines if "cannot open the AMQP link" in line]
        self.assertEqual(len(warning), 1, lines.lines)
        self.assertIn(f"[warn] transports[1] (amqp:host=127.0.0.1:port={port}:user=guest:"
                      "password=***): cannot open the AMQP link: the broker at "
                      f"127.0.0.1:{port} is unreachable (", warning[0])
        self.assertNotIn(PASSWORD, "\n".join(lines.lines))


class SilentBrokerTests(TestCase):
    """
    Something on the broker's port that accepts TCP and never answers the
    AMQP handshake (a real loopback listener).
    """

    timeout = 30

    async def test_silent_broker_is_retried(self) -> None:
        """
        The attempt is abandoned after C{handshake_timeout} (the start is
        not held), the warning says the handshake did not complete, and the
        transport connects again with backoff.
        """
        silent = SilentListener(self)
        port = silent.port
        lines = LogLines()
        globalLogPublisher.addObserver(lines)
        self.addCleanup(globalLogPublisher.removeObserver, lines)
        server = amqp_server(
            reactor, f"amqp:host=127.0.0.1:port={port}:user=guest:password={PASSWORD}",
            ReceiverLog(), f"it-{uuid.uuid4().hex[:8]}", config_key="transports[1]",
            initial_delay=0.1, jitter=lambda: 0)
        server.handshake_timeout = 0.3
        self.addCleanup(server.stop)
        await server.start().addTimeout(10, reactor)
        self.assertEqual(server.failed_attempts, 1)
        await silent.connected(2).addTimeout(10, reactor)
        warning = [line for line in lines.lines if "cannot open the AMQP link" in line]
        self.assertIn(f"the broker at 127.0.0.1:{port} accepted the connection but did not "
                      "complete the AMQP handshake within 0.3s", warning[0])
        self.assertNotIn(PASSWORD, "\n".join(lines.lines))


class ProcessRefusedTests(ProcessTestCase):
    def spawn_gateway(self, node_id: str, broker: str) -> WatchedProcess:
        """
        twistd stella-gateway with a TCP listener and a RabbitMQ one whose
        broker address is C{broker}.
        """
        config = self.deployment.write(f"{node_id}.yaml", f"""
node: {{node_id: {node_id}, region: eu1}}
http: {{listen: "tcp:0:interface=127.0.0.1"}}
admin: {{listen: "tcp:0:interface=127.0.0.1"}}
transports:
  - {{type: tcp, listen: "tcp:0:interface=127.0.0.1"}}
  - {{type: rabbitmq, listen: "{broker}"}}
""")
        return self.deployment.spawn("gateway", ["stella-gateway", "--config", config])

    def assertOneClearLine(self, output: str, plugin: str, key: str) -> None:
        """
        The output has the one critical start-up line naming C{key}, the
        broker address and its reason, and neither the password nor an
        unhandled error.
        """
        critical = [line for line in output.splitlines() if "#critical]" in line]
        self.assertEqual(len(critical), 1, output)
        self.assertIn(f"{plugin} cannot start: {key}", critical[0])
        self.assertIn("password=***", critical[0])
        self.assertIn("the broker at 127.0.0.1:5672 refused the login (403 ACCESS_REFUSED",
                      critical[0])
        self.assertIn("; exiting with status 1", critical[0])
        self.assertNotIn(PASSWORD, output)
        self.assertNotIn("Unhandled error in Deferred", output)
        self.assertNotIn("AMQPConnectionError", output)

    async def test_gateway_with_a_refused_login_exits_1(self) -> None:
        """
        twistd stella-gateway with a wrong broker password stops at once with
        exit status 1 and one critical line, like a port it cannot bind.
        """
        gateway = self.spawn_gateway("gw-refused", REFUSED)
        self.assertEqual(await gateway.ended, 1, "\n".join(gateway.lines))
        output = "\n".join(gateway.lines)
        self.assertOneClearLine(output, "stella-gateway", "transports[1] (rabbitmq amqp:")
        self.assertNotIn("ready:", output)

    async def test_microservice_with_a_refused_login_exits_1(self) -> None:
        """
        twistd stella-micro with a wrong broker password stops with exit
        status 1 and one critical line naming its router.
        """
        config = self.deployment.write("ms-amqp-bad.yaml", f"""
app: examples.billing:service
region: eu1
routers:
  - {{transport: rabbitmq, address: "{REFUSED}:gateway=gw-nobody"}}
""")
        micro = self.deployment.spawn("billing", ["stella-micro", "--config", config])
        self.assertEqual(await micro.ended, 1, "\n".join(micro.lines))
        self.assertOneClearLine("\n".join(micro.lines), "stella-micro",
                                "routers[0] (rabbitmq:amqp:")

    async def test_gateway_stopped_while_its_broker_is_silent(self) -> None:
        """
        A gateway stopped (SIGTERM) while its first broker attempt waits for
        the AMQP handshake stops there: it binds nothing more, never says
        it is ready, does not say the attempt is retried, and ends by the
        signal as twistd does (not as a start-up failure, status 1).
        """
        silent = SilentListener(self)
        gateway = self.spawn_gateway(
            "gw-silent", f"amqp:host=127.0.0.1:port={silent.port}:user=guest:password={PASSWORD}")
        await silent.connected().addTimeout(20, reactor)
        gateway.signal("TERM")
        self.assertEqual(await gateway.ended, -signal.SIGTERM, "\n".join(gateway.lines))
        output = "\n".join(gateway.lines)
        self.assertIn("gateway stopped before it was ready; start-up abandoned", output)
        self.assertNotIn("ready:", output)
        self.assertNotIn("GatewaySite starting", output)
        self.assertNotIn("retrying with backoff", output)
        self.assertNotIn("#critical]", output)
        self.assertNotIn(PASSWORD, output)

    async def test_gateway_serves_while_its_broker_is_unreachable(self) -> None:
        """
        A gateway whose broker is unreachable binds HTTP, admin and its TCP
        listener (the ready line lists the RabbitMQ transport too), answers
        HTTP, and says why the broker link is not open.
        """
        port = closed_port()
        gateway = await self.deployment.start_gateway(
            node_id="gw-brokerless",
            transport=f'{{type: tcp, listen: "tcp:0:interface=127.0.0.1"}}, '
                      f'{{type: rabbitmq, listen: "amqp:host=127.0.0.1:port={port}:user=guest:'
                      f'password={PASSWORD}"}}')
        ready = await gateway.wait_for(r"ready: (\{.*\})", reactor)
        transports = json.loads(ready.group(1))["transports"]
        self.assertEqual(transports[1], f"rabbitmq:127.0.0.1:{port}/stella.gw.gw-brokerless")
        response = await treq.get(gateway.base_url + "/health/ready", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        warning = await gateway.wait_for(r"#warn\] transports\[1\] .*cannot open the AMQP link",
                                         reactor)
        self.assertIn(f"the broker at 127.0.0.1:{port} is unreachable", warning.string)
        self.assertIn("password=***", warning.string)
        self.assertNotIn(PASSWORD, "\n".join(gateway.lines))
