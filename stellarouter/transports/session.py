"""
The microservice side of the connectionless transports (UDP, RabbitMQ): the
life of one session with the gateway, as a small explicit state machine.

A session is one receiver (the SDK's C{RouterSession}) from its HELLO to its
end.  L{ClientSession} holds the current one and moves through three states:

 - L{SessionState.CLOSED}: no session (the transport is stopped, or has no
   way to the gateway: no socket, no broker channel);
 - L{SessionState.HELLO_SENT}: a session whose HELLO is not answered yet;
   the HELLO is resent with backoff (L{HelloRetry}) until it is;
 - L{SessionState.ANSWERED}: the gateway answered the HELLO.

The transport reports what happens (L{ClientSession.open},
L{ClientSession.heard}, L{ClientSession.close}...) and writes frames;
the session decides.  An event that makes no sense in the current state (a
frame, a send, a close while no session is open) is a logged no-op, never an
C{AttributeError} on a receiver that is gone.  Silence for C{idle_timeout}
ends the session and, when the transport can, starts a new one (a new
HELLO).
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..common.enums import FrameType
from ..common.interfaces import IFrameReceiver, IFrameSender
from ..common.models import Frame
from .hello import HelloRetry

ReceiverFactory = Callable[[], IFrameReceiver]


class SessionState(Enum):
    """
    Where a microservice's session with its gateway is.
    """

    CLOSED = "closed"
    HELLO_SENT = "HELLO sent"
    ANSWERED = "HELLO answered"


class ClientSession:
    """
    The current session of one microservice transport with one gateway.

    @ivar state: the L{SessionState}.
    @ivar receiver: the open session's receiver (C{None} while closed).
    @ivar retry: resends the unanswered HELLO.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, receiver_factory: ReceiverFactory,
                 sender: IFrameSender, write: Callable[[Frame], None], retry: HelloRetry,
                 idle_timeout: float, peer: str, can_reopen: Callable[[], bool],
                 on_open: Callable[[], None] = lambda: None,
                 fresh_backoff_per_session: bool = False) -> None:
        """
        @param sender: what the receivers send through (the transport).
        @param write: puts a frame on the wire (also used for HELLO resends).
        @param can_reopen: whether the transport has a way to the gateway now
            (a session that ends may start a new one at once).
        @param on_open: called before each new session's receiver opens
            (e.g. to forget the previous session's duplicates).
        @param fresh_backoff_per_session: each session's HELLO resends start
            at the initial delay (otherwise the delay grows across sessions
            until a HELLO is accepted).
        """
        self.clock = clock
        self.receiver_factory = receiver_factory
        self.sender = sender
        self.write = write
        self.retry = retry
        self.idle_timeout = idle_timeout
        self.peer = peer
        self.can_reopen = can_reopen
        self.on_open = on_open
        self.fresh_backoff_per_session = fresh_backoff_per_session
        self.state = SessionState.CLOSED
        self.receiver: Optional[IFrameReceiver] = None
        self._idle_call: Optional[IDelayedCall] = None

    def open(self) -> None:
        """
        The transport has a way to the gateway: start a session (its
        receiver sends HELLO).  A no-op while one is open.
        """
        if self.state is not SessionState.CLOSED:
            self._ignored("open")
            return
        self.on_open()
        if self.fresh_backoff_per_session:
            self.retry.reset()
        self.state = SessionState.HELLO_SENT
        self.receiver = self.receiver_factory()
        self._touch()
        self.receiver.connectionOpened(self.sender)

    def close(self, reason: str) -> None:
        """
        End the open session (its receiver is told C{reason}).  A no-op
        while none is open.
        """
        if self.state is SessionState.CLOSED:
            self._ignored("close")
            return
        self.state = SessionState.CLOSED
        self.retry.stop()
        self._cancel_idle()
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.connectionClosed(reason)

    def restart(self, reason: str) -> None:
        """
        End the open session and, if the transport can reach the gateway,
        start a new one at once.
        """
        self.close(reason)
        if self.state is SessionState.CLOSED and self.can_reopen():
            self.open()

    def heard(self, frame: Frame) -> bool:
        """
        A frame came from the gateway.

        @return: whether a session is open to take it (call L{deliver}
            next); a frame while closed is dropped.
        """
        if self.state is SessionState.CLOSED:
            self._ignored(f"{frame.type.name} frame")
            return False
        self._touch()
        if self.retry.received(frame):
            self.state = SessionState.ANSWERED
        return True

    def deliver(self, frame: Frame) -> None:
        """
        Hand a frame L{heard} accepted to the session's receiver.
        """
        receiver = self.receiver
        if receiver is None:
            self._ignored(f"{frame.type.name} frame")
            return
        receiver.frameReceived(frame)

    def send(self, frame: Frame) -> None:
        """
        The session sends C{frame}; a HELLO is resent until answered.  A
        frame while closed (from a session already over) is dropped.
        """
        if self.state is SessionState.CLOSED:
            self._ignored(f"sending a {frame.type.name} frame")
            return
        if frame.type is FrameType.HELLO and not self.retry.pending:
            self.retry.sent(frame)
        self.write(frame)

    @property
    def answered(self) -> bool:
        """
        Whether the open session's HELLO was answered.
        """
        return self.state is SessionState.ANSWERED

    def _ignored(self, event: str) -> None:
        self.log.debug("{event} ignored: the session with {peer} is {state}",
                       event=event, peer=self.peer, state=self.state.value)

    def _touch(self) -> None:
        self._cancel_idle()
        self._idle_call = self.clock.callLater(self.idle_timeout, self._idle)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle(self) -> None:
        self._idle_call = None
        self.log.warn("nothing heard from gateway {peer} for {timeout:g}s; starting over",
                      peer=self.peer, timeout=self.idle_timeout)
        self.restart(f"nothing heard from the gateway for {self.idle_timeout:g}s")


__all__ = ["ClientSession", "SessionState"]
