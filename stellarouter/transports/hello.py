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

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..common.enums import FrameType
from ..common.errors import MalformedPayload
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


__all__ = ["HelloRetry", "hello_accepted"]
