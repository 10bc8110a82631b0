"""
Fakes of the project's seams for unit tests: a frame sender that records
what is sent (L{FakeFrameSender}, and L{FakeBacklogSender} with a write
backlog the test controls), a receiver that records what a transport
delivers with Deferreds to wait on (L{RecordingReceiver}), and a response
sink for the gateway's dispatcher (L{RecordingSink}).  Each is checked
against its interface with C{verifyObject} in C{tests/unit/test_fakes.py}.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred
from zope.interface import implementer

from ..common.enums import TransportType
from ..common.interfaces import IFrameReceiver, IFrameSender, IResponseSink, ISendBacklog
from ..common.models import Frame
from ..common.payloads import ResponseMessage


@implementer(IFrameSender)
class FakeFrameSender:
    """
    Records the frames sent and whether (and why) the connection was closed.
    """

    def __init__(self, transport_type: TransportType = TransportType.INMEMORY,
                 peer: str = "fake-peer") -> None:
        self.transport_type = transport_type
        self.peer = peer
        self.peer_identity: Tuple[str, ...] = ()
        self.frames: List[Frame] = []
        self.closed: Optional[str] = None

    def sendFrame(self, frame: Frame) -> None:
        if self.closed is None:
            self.frames.append(frame)

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason

    def take(self) -> List[Frame]:
        """
        Return and forget the frames sent so far.
        """
        frames, self.frames = self.frames, []
        return frames


@implementer(IFrameReceiver)
class RecordingReceiver:
    """
    Records what a transport delivers, with Deferreds to wait on.

    @ivar opened: fires with the sender when the connection opens.
    @ivar closed: fires with the reason when it closes.
    """

    def __init__(self) -> None:
        self.sender: Optional[IFrameSender] = None
        self.frames: List[Frame] = []
        self.reasons: List[str] = []
        self.opened: Deferred[IFrameSender] = Deferred()
        self.closed: Deferred[str] = Deferred()
        self._waiting: List[Tuple[int, Deferred[List[Frame]]]] = []

    @property
    def connection(self) -> IFrameSender:
        """
        The sender of this receiver's connection (once opened).
        """
        assert self.sender is not None, "the connection is not open yet"
        return self.sender

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.sender = sender
        self.opened.callback(sender)

    def frameReceived(self, frame: Frame) -> None:
        self.frames.append(frame)
        still = []
        for count, d in self._waiting:
            if len(self.frames) >= count:
                d.callback(list(self.frames))
            else:
                still.append((count, d))
        self._waiting = still

    def connectionClosed(self, reason: str) -> None:
        self.reasons.append(reason)
        if not self.closed.called:
            self.closed.callback(reason)

    def received(self, count: int) -> Deferred[List[Frame]]:
        """
        A Deferred that fires with all frames once C{count} have arrived.
        """
        d: Deferred[List[Frame]] = Deferred()
        if len(self.frames) >= count:
            d.callback(list(self.frames))
        else:
            self._waiting.append((count, d))
        return d


@implementer(IResponseSink)
class RecordingSink:
    """
    Records the outcome the gateway's dispatcher delivers for one request.
    """

    def __init__(self) -> None:
        self.response: Optional[ResponseMessage] = None
        self.chunks: List[bytes] = []
        self.finished = False
        self.error: Optional[Exception] = None

    def responseStarted(self, response: ResponseMessage) -> None:
        self.response = response

    def bodyChunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def responseFinished(self) -> None:
        self.finished = True

    def failed(self, error: Exception) -> None:
        self.error = error


@implementer(IFrameSender, ISendBacklog)
class FakeBacklogSender(FakeFrameSender):
    """
    A L{FakeFrameSender} with a write backlog the test sets: C{back_up(n)}
    pretends C{n} more bytes wait (calling the limit's callback when it is
    passed), C{drain()} empties it.

    @ivar aborted: the reason given to L{abort}, if it was called.
    """

    def __init__(self, transport_type: TransportType = TransportType.TCP,
                 peer: str = "fake-peer") -> None:
        super().__init__(transport_type, peer)
        self.unsent = 0
        self.aborted: Optional[str] = None
        self._limit: Optional[int] = None
        self._on_over: Optional[Callable[[], None]] = None
        self._drained: List[Callable[[], None]] = []

    def notifyDrained(self, callback: Callable[[], None]) -> None:
        if self.unsent:
            self._drained.append(callback)
        else:
            callback()

    def limitUnsent(self, limit: int, callback: Callable[[], None]) -> None:
        self._limit, self._on_over = limit, callback

    def abort(self, reason: str) -> None:
        if self.aborted is None:
            self.aborted = reason
            self.closed = self.closed or reason
            self._drained = []

    def back_up(self, size: int) -> None:
        """
        C{size} more bytes wait to be sent.
        """
        before = self.unsent
        self.unsent += size
        limit = self._limit
        if (limit is not None and before <= limit < self.unsent
                and self._on_over is not None):
            self._on_over()

    def drain(self) -> None:
        """
        Everything waiting went out.
        """
        self.unsent = 0
        callbacks, self._drained = self._drained, []
        for callback in callbacks:
            callback()
