"""
Sending a HELLO again until a gateway answers, for the transports without a
connection to tell the microservice that its gateway is there (UDP; the
RabbitMQ transport can use the same class).

L{HelloRetry} is the policy and its one timer, nothing else: it is told
when a HELLO went out and when a frame came back, and calls C{resend} with
the unanswered HELLO after a delay that doubles up to a cap.  The delay goes
back to its initial value only once a HELLO was I{accepted}: a gateway that
refuses a HELLO, or a peer that vanishes again at once, does not bring the
retries back to their fastest pace.
"""

from __future__ import annotations

from typing import Callable, Optional, TypedDict

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import FrameType
from ..common.errors import MalformedPayload
from ..common.interfaces import IFrameReceiver, IFrameSender
from ..common.models import Frame
from ..common.payloads import decode_hello_ack


def hello_accepted(frame: Frame) -> bool:
    """
    Whether C{frame} is a gateway's HELLO answer that accepts the HELLO.
    """
    if frame.type is not FrameType.HELLO:
        return False
    try:
        return decode_hello_ack(frame.payload).accepted
    except MalformedPayload:
        return False


class HelloRetry:
    """
    Resends an unanswered HELLO with exponential backoff up to a cap.

    @ivar delay: the wait before the next resend (or reconnection attempt).
    @ivar attempts: HELLOs resent since the last accepted one.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, resend: Callable[[Frame], None],
                 initial_delay: float = 1.0, max_delay: float = 30.0, factor: float = 2.0,
                 peer: str = "the gateway") -> None:
        """
        @param clock: arms the resend timer.
        @param resend: writes a HELLO frame again.
        @param initial_delay: the first wait, and the wait after an
            accepted HELLO.
        @param max_delay: the longest wait.
        @param factor: how much each unanswered attempt lengthens the wait.
        @param peer: the gateway's address, for the logs.
        """
        self.clock = clock
        self.resend = resend
        self.initial_delay = initial_delay
        self.max_delay = max(max_delay, initial_delay)
        self.factor = factor
        self.peer = peer
        self.delay = initial_delay
        self.attempts = 0
        self._hello: Optional[Frame] = None
        self._call: Optional[IDelayedCall] = None

    @property
    def pending(self) -> bool:
        """
        Whether a HELLO waits for its answer.
        """
        return self._hello is not None

    def sent(self, hello: Frame) -> None:
        """
        A HELLO went out: send it again after the current delay unless it is
        answered first.
        """
        self._hello = hello
        self._arm()

    def received(self, frame: Frame) -> bool:
        """
        A frame came from the gateway.

        @return: whether it answered the pending HELLO (the resends stop;
            the delay is reset if the answer accepted it).
        """
        hello = self._hello
        if hello is None or frame.type is not FrameType.HELLO or (
                frame.correlation_id != hello.correlation_id):
            return False
        self.stop()
        if hello_accepted(frame):
            self.delay = self.initial_delay
            self.attempts = 0
        return True

    def reset(self) -> None:
        """
        Start the resends over at the initial delay.
        """
        self.delay = self.initial_delay
        self.attempts = 0

    def next_delay(self) -> float:
        """
        The wait before the next attempt, lengthening the one after (for a
        transport that must reopen its socket before sending again).
        """
        delay = self.delay
        self.delay = min(self.delay * self.factor, self.max_delay)
        self.attempts += 1
        return delay

    def stop(self) -> None:
        """
        Forget the pending HELLO and its timer (the delay is kept).
        """
        self._hello = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(self.next_delay(), self._fire)

    def _fire(self) -> None:
        self._call = None
        hello = self._hello
        if hello is None:
            return
        self.log.info("HELLO to {peer} not answered; sending it again (attempt {attempt}, "
                      "next in {delay:g}s)", peer=self.peer, attempt=self.attempts,
                      delay=self.delay)
        self.resend(hello)
        self._arm()


class Backoff(TypedDict, total=False):
    """
    How a transport client waits between two attempts to reach the router:
    what C{make_client} and the transports' C{*_client} functions take as
    keyword arguments.

    @ivar initial_delay: the first wait, in seconds (a UDP client resends
        its first HELLO after this long).
    @ivar max_delay: the longest wait.
    @ivar jitter: extra random delay per attempt (C{lambda: 0} in tests).
    """

    initial_delay: float
    max_delay: float
    jitter: Optional[Callable[[], float]]


class HelloBackoff:
    """
    A C{ClientService} retry policy whose attempts count since the last
    I{accepted} HELLO, not since the last connection that was made:
    C{ClientService} forgets its failures as soon as a TCP connection is
    established, so a peer that connects and is then refused (a TLS
    handshake without a certificate, a HELLO the gateway refuses) would
    retry at the initial delay forever.

    @ivar attempts: reconnections since the last accepted HELLO.
    """

    def __init__(self, initial_delay: float = 0.5, max_delay: float = 30.0,
                 factor: float = 2.0, jitter: Callable[[], float] = lambda: 0.0) -> None:
        """
        @param jitter: extra random delay added to each wait.
        """
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0

    def __call__(self, failed_attempts: int) -> float:
        """
        The wait before the next connection attempt (C{ClientService}'s own
        count, C{failed_attempts}, is ignored).
        """
        delay = min(self.initial_delay * self.factor ** min(self.attempts, 64), self.max_delay)
        self.attempts += 1
        return delay + self.jitter()

    def accepted(self) -> None:
        """
        A HELLO was accepted: the next reconnection waits the initial delay.
        """
        self.attempts = 0


@implementer(IFrameReceiver)
class HelloWatch:
    """
    Stands in front of a connection's receiver until the gateway's HELLO
    answer has passed, and tells a L{HelloBackoff} when it accepted the
    HELLO.  After that answer it hands the connection's frames straight to
    the receiver (when the sender has a C{receiver} to repoint, as the
    stream protocol has), so the requests that follow do not pay for it.
    """

    def __init__(self, receiver: IFrameReceiver, accepted: Callable[[], None]) -> None:
        self.receiver = receiver
        self.accepted = accepted
        self._sender: Optional[IFrameSender] = None

    def connectionOpened(self, sender: IFrameSender) -> None:
        self._sender = sender
        self.receiver.connectionOpened(sender)

    def frameReceived(self, frame: Frame) -> None:
        if frame.type is FrameType.HELLO:
            if hello_accepted(frame):
                self.accepted()
            if getattr(self._sender, "receiver", None) is self:
                setattr(self._sender, "receiver", self.receiver)
        self.receiver.frameReceived(frame)

    def connectionClosed(self, reason: str) -> None:
        self.receiver.connectionClosed(reason)


__all__ = ["HelloBackoff", "HelloRetry", "HelloWatch", "hello_accepted"]
