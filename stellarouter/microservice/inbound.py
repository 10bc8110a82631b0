"""
One request the microservice is serving, as the dispatcher tracks it: an
L{InboundRequest} holds everything about it (its decoded REQUEST, its
context, the handler's or the response pump's Deferred, the streamed upload,
the body being reassembled, the credit of a streamed response) and moves
through the explicit states of L{RequestState}.  The dispatcher keeps one
table of these keyed by correlation id; a frame that finds its request in a
state where the frame means nothing is logged and dropped by the
dispatcher, and a move this module does not allow raises
L{WrongRequestState}, which the dispatcher's terminal errback turns into a
500 instead of a request left unanswered.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, FrozenSet, List, Optional, Union

from twisted.internet.defer import Deferred

from ..common.ids import CorrelationId
from ..common.payloads import STREAM_WINDOW, RequestMessage
from .context import BodyStream, RawRequestContext
from .idle import IdleTimer


class RequestState(Enum):
    """
    Where one request is.

    @cvar RECEIVING_BODY: its body is arriving as REQUEST_STREAM_DATA frames
        and is reassembled before the handler is called.
    @cvar HANDLING: its handler was called and its result has not come yet
        (a streamed upload may still be arriving).
    @cvar STREAMING_RESPONSE: the RESPONSE header went out; the body is being
        pumped as the gateway grants credit.
    @cvar ANSWERED: the last frame of its answer went out.
    @cvar CANCELLED: the gateway cancelled it, the connection was lost or
        the microservice shut down; nothing more is sent for it.
    """

    # Hashed by identity, in C: Enum's own __hash__ is Python code, and the
    # dispatcher checks a state on every request.
    __hash__ = object.__hash__

    RECEIVING_BODY = "receiving body"
    HANDLING = "handling"
    STREAMING_RESPONSE = "streaming response"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


#: The states a request ends in; every other state may move to them.
FINAL_STATES = _FINAL = frozenset({RequestState.ANSWERED, RequestState.CANCELLED})

#: The moves a request may make; anything else is a bug of the dispatcher.
_ALLOWED: Dict[RequestState, FrozenSet[RequestState]] = {
    RequestState.RECEIVING_BODY: frozenset({RequestState.HANDLING}) | _FINAL,
    RequestState.HANDLING: frozenset({RequestState.STREAMING_RESPONSE}) | _FINAL,
    RequestState.STREAMING_RESPONSE: _FINAL,
    RequestState.ANSWERED: frozenset(),
    RequestState.CANCELLED: frozenset(),
}


class WrongRequestState(Exception):
    """
    The dispatcher tried a move L{RequestState} does not allow.
    """


class StreamCredit:
    """
    Room the gateway granted for one streamed response.

    @ivar available: bytes that may be sent now.
    @ivar outstanding: bytes sent and not yet credited back (held in the
        process's L{ResponseStreamBudget}).
    @ivar idle: aborts the stream when nothing was sent for the endpoint's
        timeout (issue 25), once the stream started.
    @ivar sent: body bytes sent so far (the access log's C{bytes_out}).
    """

    __slots__ = ("available", "_waiter", "outstanding", "idle", "sent")

    def __init__(self, available: int = STREAM_WINDOW) -> None:
        self.available = available
        self.outstanding = 0
        self.sent = 0
        self._waiter: Optional[Deferred[None]] = None
        self.idle: Optional[IdleTimer] = None

    def wait(self) -> Deferred[None]:
        """
        A Deferred that fires at the next grant.
        """
        self._waiter = Deferred()
        return self._waiter

    def grant(self, amount: int) -> None:
        """
        The gateway granted C{amount} more bytes: wake the waiting pump.
        """
        self.available += amount
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)


class InboundRequest:
    """
    One request from the gateway, from its REQUEST frame to its last answer
    frame (or its cancellation).  (The attributes a request in most states
    does not use default to the class's C{None}s: one is made for every
    request, and three stores are cheaper than nine.)

    @ivar cid: its correlation id, the key of the dispatcher's table.
    @ivar message: its decoded REQUEST frame.
    @ivar state: where it is (only L{move_to} and the dispatcher's
        C{_finish} change it).
    @ivar context: what its handler received, once called.
    @ivar running: the handler's Deferred while L{RequestState.HANDLING},
        the response pump's while L{RequestState.STREAMING_RESPONSE}.
    @ivar upload: the body stream of a streaming handler still being fed.
    @ivar body_chunks: the body reassembled in L{RequestState.RECEIVING_BODY}.
    @ivar body_size: the bytes in C{body_chunks}.
    @ivar credit: the room granted for its streamed response.
    @ivar started_at: when its handler was called (if the access log is on).
    @ivar stream_status: the status of its streamed response.
    """

    context: Optional[RawRequestContext] = None
    running: Optional[Union[Deferred[object], Deferred[None]]] = None
    upload: Optional[BodyStream] = None
    body_chunks: Optional[List[bytes]] = None
    body_size = 0
    credit: Optional[StreamCredit] = None
    #: For the access log (L{RequestLog}): when its handler was called
    #: (L{None}: not noted), and the status of its streamed response.
    started_at: Optional[float] = None
    stream_status: Optional[int] = None

    def __init__(self, cid: CorrelationId, message: RequestMessage,
                 state: RequestState = RequestState.HANDLING) -> None:
        self.cid = cid
        self.message = message
        self.state = state

    @classmethod
    def receiving_body(cls, cid: CorrelationId, message: RequestMessage) -> "InboundRequest":
        """
        A request whose body arrives as stream frames after C{message} (which
        may carry its first bytes).
        """
        request = cls(cid, message, RequestState.RECEIVING_BODY)
        request.body_chunks = [message.body] if message.body else []
        request.body_size = len(message.body)
        return request

    @property
    def finished(self) -> bool:
        """
        Whether nothing more is sent for this request.
        """
        return self.state in _FINAL

    def move_to(self, state: RequestState) -> None:
        """
        Change state.

        @raise WrongRequestState: the move is not allowed from the current
            state (a bug of the dispatcher, never of the input).
        """
        if state not in _ALLOWED[self.state]:
            raise WrongRequestState(
                f"request {self.cid}: no move from {self.state.value} to {state.value}")
        self.state = state

    def __repr__(self) -> str:
        return f"<InboundRequest {self.cid} {self.message.method} {self.message.template} " \
               f"{self.state.value}>"


__all__ = ["FINAL_STATES", "InboundRequest", "RequestState", "StreamCredit",
           "WrongRequestState"]
