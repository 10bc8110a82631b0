"""
The stream client's reconnect backoff over real loopback TCP: it grows
across connections that are made but end without an accepted HELLO (a
refused HELLO, a peer that closes at once), up to its cap, and goes back
to the initial delay only after an accepted HELLO.
"""

from typing import Any, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType, TransportType
from stellarouter.common.frames import FrameDecoder, encode_frame
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameReceiver, IFrameSender
from stellarouter.common.models import Frame
from stellarouter.common.payloads import HelloAck, encode_hello_ack
from stellarouter.transports.stream import StreamTransportClient


class RecordingClock(Clock):
    """
    A Clock that remembers every delay asked of it and fires a Deferred for
    the next one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.delays: List[float] = []
        self._next: Optional[Deferred] = None

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        call = super().callLater(delay, f, *args, **kw)
        self.delays.append(delay)
        waiting, self._next = self._next, None
        if waiting is not None:
            # Not from inside ClientService's state machine, which is
            # running this callLater.
            reactor.callLater(0, waiting.callback, delay)
        return call

    def next_delay(self) -> Deferred:
        self._next = Deferred()
        return self._next.addTimeout(10, reactor)


class AnsweringGateway(Protocol):
    """
    Answers the first HELLO (accepting it or not, as the factory says) and
    closes the connection.
    """

    def __init__(self) -> None:
        self.decoder = FrameDecoder()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.type is FrameType.HELLO:
                accept = self.factory.accept  # type: ignore[attr-defined]
                self.transport.write(encode_frame(Frame(  # type: ignore[union-attr]
                    FrameType.HELLO, frame.correlation_id,
                    encode_hello_ack(HelloAck(accept, None if accept else "refused", "gw",
                                              "eu1")))))
                self.transport.loseConnection()  # type: ignore[union-attr]


@implementer(IFrameReceiver)
class SaysHello:
    """
    A microservice session reduced to its HELLO.
    """

    def connectionOpened(self, sender: IFrameSender) -> None:
        sender.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))

    def frameReceived(self, frame: Frame) -> None:
        pass

    def connectionClosed(self, reason: str) -> None:
        pass


class FakesTests(TestCase):
    def test_says_hello_is_a_receiver(self) -> None:
        """
        L{SaysHello} provides L{IFrameReceiver}.
        """
        self.assertTrue(verifyObject(IFrameReceiver, SaysHello()))


class ReconnectBackoffTests(TestCase):
    timeout = 30

    async def client_delays(self, accept: bool, count: int) -> List[float]:
        factory = Factory.forProtocol(AnsweringGateway)
        factory.accept = accept  # type: ignore[attr-defined]
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        clock = RecordingClock()
        client = StreamTransportClient(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), SaysHello, clock,
            TransportType.TCP, initial_delay=0.5, max_delay=4.0, jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        delays = []
        for _ in range(count):
            delays.append(await clock.next_delay())
            clock.advance(delays[-1])
        return delays

    async def test_backoff_grows_while_hello_is_refused(self) -> None:
        """
        Connections that succeed but whose HELLO is refused wait 0.5, 1, 2,
        4, 4 s between them: the growth is not reset by the TCP connect.
        """
        self.assertEqual(await self.client_delays(False, 5), [0.5, 1.0, 2.0, 4.0, 4.0])

    async def test_backoff_resets_after_accepted_hello(self) -> None:
        """
        A connection whose HELLO was accepted is followed by a reconnection
        after the initial delay, every time.
        """
        self.assertEqual(await self.client_delays(True, 3), [0.5, 0.5, 0.5])
