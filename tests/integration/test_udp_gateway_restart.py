"""
A UDP gateway restarted between two heartbeats (issue 18): the new gateway
process has no peer for the microservice's address, so it answers the next
heartbeat with a HELLO answer carrying C{hello_again}, and the microservice
registers again at once instead of after its 90 s idle timeout.

Real loopback sockets; every timer (heartbeats, idle timeouts, retries) on
an injected L{Clock}, so the 90 s idle timeout can never be what saves the
test.
"""

from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType
from stellarouter.common.interfaces import IFrameReceiver, IFrameSender
from stellarouter.common.models import Frame, InstanceDescriptor
from stellarouter.common.payloads import HelloAck, encode_hello_ack
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.session import RouterSession
from stellarouter.transports.udp import UDPTransportServer, udp_client, udp_server


class SocketsOnClock:
    """
    The real reactor's UDP sockets with the timers of a L{Clock}.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> Any:
        return reactor.listenUDP(port, protocol, interface=interface,  # type: ignore[attr-defined]
                                 maxPacketSize=maxPacketSize)

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> IDelayedCall:
        return self.clock.callLater(delay, f, *args, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()


@implementer(IFrameReceiver)
class AcceptingGateway:
    """
    A gateway session that accepts every HELLO and records the other frames.
    """

    def __init__(self, hellos: List[Frame], others: List[Frame]) -> None:
        self.hellos = hellos
        self.others = others
        self.sender: Any = None

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.sender = sender

    def frameReceived(self, frame: Frame) -> None:
        if frame.type is FrameType.HELLO:
            self.hellos.append(frame)
            self.sender.sendFrame(Frame(FrameType.HELLO, frame.correlation_id,
                                        encode_hello_ack(HelloAck(True, None, "gw", "eu1"))))
        else:
            self.others.append(frame)

    def connectionClosed(self, reason: str) -> None:
        pass


class FakesTests(TestCase):
    def test_accepting_gateway_is_a_receiver(self) -> None:
        """
        L{AcceptingGateway} provides L{IFrameReceiver}.
        """
        self.assertTrue(verifyObject(IFrameReceiver, AcceptingGateway([], [])))


class UDPGatewayRestartTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.clock = Clock()
        self.sockets = SocketsOnClock(self.clock)
        self.accepted: List[Deferred] = [Deferred()]

    def _on_accepted(self, session: RouterSession) -> None:
        waiting = self.accepted[-1]
        self.accepted.append(Deferred())
        waiting.callback(session)

    async def _gateway(self, port: int = 0) -> Tuple[UDPTransportServer, List[Frame], List[Frame]]:
        hellos: List[Frame] = []
        others: List[Frame] = []
        server = udp_server(self.sockets, f"udp:{port}:interface=127.0.0.1",
                            lambda: AcceptingGateway(hellos, others))
        await server.start()
        self.addCleanup(server.stop)
        return server, hellos, others

    async def _registered(self) -> RouterSession:
        waiting = self.accepted[-1]
        waiting.addTimeout(5, reactor)
        session: RouterSession = await waiting
        return session

    async def test_reregisters_after_gateway_restart(self) -> None:
        """
        The gateway's UDP listener is stopped and a new one (a new process:
        no peers) listens on the same port before the next heartbeat; that
        heartbeat gets a C{hello_again} answer and the microservice sends a
        new HELLO at once: registered again within one heartbeat, with the
        idle timeout (90 s) never reached.
        """
        first, hellos, _ = await self._gateway()
        assert first.port is not None
        port = first.port.getHost().port
        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/ping")(lambda ctx: RawResponse.text("pong"))
        client = udp_client(
            self.sockets, f"udp:host=127.0.0.1:port={port}",
            lambda: RouterSession(app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                  "udp-gateway", self.clock, heartbeat_interval=5.0,
                                  on_accepted=self._on_accepted))
        client.start()
        self.addCleanup(client.stop)
        await self._registered()
        self.assertEqual(len(hellos), 1)

        await first.stop()
        second, new_hellos, _ = await self._gateway(port)
        self.clock.advance(5.0)  # the next heartbeat goes to the new gateway
        await self._registered()
        self.assertEqual(len(new_hellos), 1)
        self.assertLess(self.clock.seconds(), 90.0)
