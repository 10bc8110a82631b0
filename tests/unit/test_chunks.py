"""
L{ChunkQueue}, the queue under a streaming request body (L{BodyStream}) and
a Klein app's streamed response: order, waiting, end, failure, and the two
hooks; and L{BodyStream}'s credit, granted as the handler reads.
"""

from typing import List, Optional

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.microservice.chunks import ChunkQueue
from stellarouter.microservice.context import BodyStream


def _next(queue: ChunkQueue) -> "Deferred[bytes]":
    return Deferred.fromCoroutine(queue.__anext__())


async def _read_all(queue: ChunkQueue) -> List[bytes]:
    return [chunk async for chunk in queue]


class ChunkQueueTests(SynchronousTestCase):

    def test_order_and_size(self) -> None:
        """
        Chunks come out in the order fed; C{size} counts the bytes not read.
        """
        queue = ChunkQueue()
        queue.feed(b"ab")
        queue.feed(b"cde")
        self.assertEqual(queue.size, 5)
        self.assertEqual(self.successResultOf(_next(queue)), b"ab")
        self.assertEqual(queue.size, 3)
        queue.end()
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(_read_all(queue))),
                         [b"cde"])
        self.assertEqual(queue.size, 0)

    def test_reader_waits_for_a_chunk(self) -> None:
        """
        A reader of an empty queue waits until a chunk is fed.
        """
        queue = ChunkQueue()
        waiting = _next(queue)
        self.assertNoResult(waiting)
        queue.feed(b"x")
        self.assertEqual(self.successResultOf(waiting), b"x")

    def test_end_stops_a_waiting_reader(self) -> None:
        """
        L{ChunkQueue.end} ends the iteration of a reader waiting on an empty
        queue.
        """
        queue = ChunkQueue()
        reading = Deferred.fromCoroutine(_read_all(queue))
        self.assertNoResult(reading)
        queue.end()
        self.assertEqual(self.successResultOf(reading), [])

    def test_fail_after_what_came(self) -> None:
        """
        After L{ChunkQueue.fail} the reader gets the chunks fed before it,
        then the error.
        """
        queue = ChunkQueue()
        queue.feed(b"first")
        queue.fail(ValueError("broken"))
        self.assertEqual(self.successResultOf(_next(queue)), b"first")
        self.failureResultOf(_next(queue), ValueError)

    def test_hooks(self) -> None:
        """
        C{_starved} runs when the reader finds the queue empty (a chunk it
        feeds is read without waiting); C{_taken} runs with each chunk's size.
        """
        taken: List[int] = []

        class Refilling(ChunkQueue):
            refill: Optional[bytes] = b"refill"

            def _starved(self) -> bool:
                refill, self.refill = self.refill, None
                if refill is not None:
                    self.feed(refill)
                return refill is not None

            def _taken(self, size: int) -> None:
                taken.append(size)

        queue = Refilling()
        self.assertEqual(self.successResultOf(_next(queue)), b"refill")
        waiting = _next(queue)
        self.assertNoResult(waiting)
        queue.feed(b"later")
        self.assertEqual(self.successResultOf(waiting), b"later")
        self.assertEqual(taken, [6, 5])


class BodyStreamTests(SynchronousTestCase):

    def test_credit_as_the_handler_reads(self) -> None:
        """
        A L{BodyStream} grants the gateway what the handler took once it is
        half a window, not before; empty chunks are not queued.
        """
        grants: List[int] = []
        stream = BodyStream(grants.append, 10)
        for chunk in (b"ab", b"", b"cd", b"ef"):
            stream.feed(chunk)
        self.assertEqual(stream.received, 6)
        self.assertEqual(self.successResultOf(_next(stream)), b"ab")
        self.assertEqual(grants, [])
        self.assertEqual(self.successResultOf(_next(stream)), b"cd")
        self.assertEqual(grants, [])
        self.assertEqual(self.successResultOf(_next(stream)), b"ef")
        self.assertEqual(grants, [6])
        stream.end()
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(stream.read())), b"")
