"""
Tests that a L{StreamingResponse} closes the iterator it was given, sync or
async, whether the client leaves, the request is cancelled, the connection
is lost, the response is refused or the stream finishes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Dict, Iterator, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType
from stellarouter.common.ids import CorrelationId, new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import RequestMessage, decode_stream_data, encode_request
from stellarouter.microservice import Microservice, StreamingResponse
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.testing.fakes import FakeFrameSender

CHUNK = b"x" * 65536


class Bodies:
    """
    Sync and async producers that record how far they got and whether
    their C{finally} ran.  The test keeps a reference to each, so only an
    explicit close (not garbage collection) can run it.
    """

    def __init__(self) -> None:
        self.produced = 0
        self.closed: List[str] = []
        self.keep: List[Any] = []

    def sync(self, chunks: int) -> Iterator[bytes]:
        try:
            for _ in range(chunks):
                self.produced += 1
                yield CHUNK
        finally:
            self.closed.append("sync")

    async def asynchronous(self, chunks: int) -> AsyncIterator[bytes]:
        try:
            for _ in range(chunks):
                self.produced += 1
                yield CHUNK
        finally:
            self.closed.append("async")


class ClosableIterator:
    """
    An iterator that is not a generator but has C{close} (a file, say).
    """

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.closed = False

    def __iter__(self) -> "ClosableIterator":
        return self

    def __next__(self) -> bytes:
        if self.left == 0:
            raise StopIteration
        self.left -= 1
        return CHUNK

    def close(self) -> None:
        self.closed = True


class StreamingCloseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.bodies = Bodies()
        self.app = Microservice("exports", "1.0.0")
        self.sender = FakeFrameSender()
        self.dispatcher = RequestDispatcher(self.app, self.sender, Clock())
        self.makers: Dict[str, Callable[[int], Any]] = {
            "sync": self.bodies.sync, "async": self.bodies.asynchronous}

        @self.app.endpoint("GET", "/export/{kind}/{chunks}")
        def export(ctx: Any) -> StreamingResponse:
            body = self.makers[ctx.path_params["kind"]](int(ctx.path_params["chunks"]))
            self.bodies.keep.append(body)
            status = int(ctx.query or "200")
            return StreamingResponse(status, (("Content-Type", "application/octet-stream"),),
                                     body)

    def start(self, kind: str, chunks: int = 1000, query: str = "") -> CorrelationId:
        cid = new_correlation_id()
        template = "/export/{kind}/{chunks}"
        self.dispatcher.request_received(Frame(FrameType.REQUEST, cid, encode_request(
            RequestMessage("GET", f"/export/{kind}/{chunks}", template,
                           {"kind": kind, "chunks": str(chunks)}, query))))
        return cid

    def ended(self) -> List[str]:
        """
        How each stream sent so far ended: C{"end"} or C{"abort"}.
        """
        result = []
        for frame in self.sender.frames:
            if frame.type is FrameType.RESPONSE_STREAM_DATA:
                _, end, abort = decode_stream_data(frame.payload)
                if end or abort:
                    result.append("end" if end else "abort")
        return result

    def test_cancel_closes(self) -> None:
        """
        A request cancelled while its stream waits for credit (the client
        stopped reading, then left) closes the producer, sync (issue 22's
        reproduction: never closed) and async alike.
        """
        for kind in ("sync", "async"):
            cid = self.start(kind)
            # The window (1 MiB) is used up: the producer waits for credit.
            self.assertEqual(self.bodies.produced, 17 if kind == "sync" else 17)
            self.assertEqual(self.bodies.closed, [])
            self.dispatcher.cancel(cid, CancelReason.CLIENT_DISCONNECTED)
            self.assertEqual(self.bodies.closed, [kind])
            self.assertEqual(self.dispatcher.in_flight, 0)
            self.bodies.closed.clear()
            self.bodies.produced = 0

    def test_connection_lost_closes(self) -> None:
        """
        Losing the gateway connection closes every stream's producer.
        """
        self.start("sync")
        self.start("async")
        self.dispatcher.connection_lost()
        self.assertEqual(sorted(self.bodies.closed), ["async", "sync"])

    def test_refused_response_closes(self) -> None:
        """
        A streaming response the SDK refuses (status out of range) still
        closes what it was given: the generators are closed before they
        produced anything (a later next() ends at once), a closable
        iterator is closed.
        """
        iterators: List[ClosableIterator] = []

        def closable(chunks: int) -> ClosableIterator:
            iterators.append(ClosableIterator(chunks))
            return iterators[-1]

        self.makers["closable"] = closable
        for kind in ("sync", "async", "closable"):
            self.start(kind, query="99")
        sync, asynchronous, _ = self.bodies.keep
        self.assertIsNone(sync.gi_frame)
        self.assertIsNone(asynchronous.ag_frame)
        self.assertTrue(iterators[0].closed)
        self.assertEqual(self.bodies.produced, 0)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_finished_stream_closes_its_iterator(self) -> None:
        """
        A stream that finished closes an iterator that has C{close} (a
        file, not only a generator).
        """
        iterators: List[ClosableIterator] = []

        def closable(chunks: int) -> ClosableIterator:
            iterators.append(ClosableIterator(chunks))
            return iterators[-1]

        self.makers["closable"] = closable
        self.start("closable", chunks=3)
        self.assertEqual(self.ended(), ["end"])
        self.assertTrue(iterators[0].closed)

    def test_cancelled_closable_iterator(self) -> None:
        """
        A cancelled stream closes an iterator that has C{close}.
        """
        iterators: List[ClosableIterator] = []

        def closable(chunks: int) -> ClosableIterator:
            iterators.append(ClosableIterator(chunks))
            return iterators[-1]

        self.makers["closable"] = closable
        cid = self.start("closable", chunks=1000)
        self.assertFalse(iterators[0].closed)
        self.dispatcher.cancel(cid, CancelReason.TIMEOUT)
        self.assertTrue(iterators[0].closed)

    def test_finished_generators(self) -> None:
        """
        Streams that run to their end are closed and end normally.
        """
        self.start("sync", chunks=2)
        self.start("async", chunks=2)
        self.assertEqual(sorted(self.bodies.closed), ["async", "sync"])
        self.assertEqual(self.ended(), ["end", "end"])


