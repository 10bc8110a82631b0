"""
L{ChunkQueue}: bytes fed in by one side and read by the other with
C{async for}, the reader waiting (on a Deferred) while nothing is there.
The one implementation of that logic in the SDK: a streaming endpoint's
request body (L{stellarouter.microservice.context.BodyStream}, which grants
the gateway credit as the handler reads) and a Klein app's streamed
response (L{stellarouter.microservice.klein_bridge}, which asks the app's
producer for more as the SDK reads) are both queues with a hook or two.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional

from twisted.internet.defer import Deferred


class ChunkQueue:
    """
    Chunks of bytes in the order fed, read with C{async for}: the reader
    waits while the queue is empty, stops after L{end}, and gets the error
    of L{fail} once what came before it is read.

    Subclasses may override L{_starved} (the reader found the queue empty)
    and L{_taken} (the reader took a chunk).

    @ivar size: bytes fed and not read yet.
    """

    def __init__(self) -> None:
        self._chunks: Deque[bytes] = deque()
        self._waiter: Optional[Deferred[None]] = None
        self._ended = False
        self._error: Optional[Exception] = None
        self.size = 0

    # fed by the writer

    def feed(self, chunk: bytes) -> None:
        """
        Queue C{chunk} for the reader.
        """
        self._chunks.append(chunk)
        self.size += len(chunk)
        self._wake()

    def end(self) -> None:
        """
        Nothing more comes: the reader stops once the queue is empty.
        """
        self._ended = True
        self._wake()

    def fail(self, error: Exception) -> None:
        """
        Nothing more comes: the reader gets C{error} once the queue is empty.
        """
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    # read by the reader

    def __aiter__(self) -> ChunkQueue:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            if self._starved():
                continue
            self._waiter = Deferred()
            await self._waiter
        chunk = self._chunks.popleft()
        self.size -= len(chunk)
        self._taken(len(chunk))
        return chunk

    def _starved(self) -> bool:
        """
        The reader found the queue empty, neither ended nor failed: a
        subclass may ask for more here.

        @return: whether to look at the queue again before waiting (it may
            have been fed meanwhile).
        """
        return False

    def _taken(self, size: int) -> None:
        """
        The reader took a chunk of C{size} bytes (L{size} counts it out
        already).
        """


__all__ = ["ChunkQueue"]
