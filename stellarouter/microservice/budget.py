"""
The microservice's budget for streamed response bodies: bytes sent on
response streams and not yet credited back by a gateway, across every
stream and every gateway connection of the process.  A stream whose
client stopped reading keeps its bytes counted until they are credited
or the stream ends; beyond the budget, streams wait.
"""

from __future__ import annotations

from collections import deque
from typing import Deque

from twisted.internet.defer import Deferred

#: The default budget (C{max_response_buffer_bytes}).
DEFAULT_MAX_RESPONSE_BUFFER_BYTES = 32 * 1024 * 1024


class ResponseStreamBudget:
    """
    Bytes of streamed response bodies sent and not yet credited back.

    @ivar limit: the budget, in bytes.
    @ivar held: bytes taken and not given back.
    @ivar waits: how many times a stream found no room.
    """

    def __init__(self, limit: int = DEFAULT_MAX_RESPONSE_BUFFER_BYTES) -> None:
        self.limit = limit
        self.held = 0
        self.waits = 0
        self._waiters: Deque[Deferred[None]] = deque()

    @property
    def available(self) -> int:
        """
        Bytes that may still be taken (never negative).
        """
        return max(self.limit - self.held, 0)

    def take(self, wanted: int) -> int:
        """
        Take up to C{wanted} bytes.

        @return: the bytes taken (0 when there is no room).
        """
        amount = min(wanted, self.available)
        if amount > 0:
            self.held += amount
            return amount
        return 0

    def release(self, amount: int) -> None:
        """
        Give back C{amount} bytes and wake the streams waiting for room, in
        the order they began waiting, while there is some.
        """
        self.held -= amount
        waiters = self._waiters
        while waiters and self.available > 0:
            waiter = waiters.popleft()
            if not waiter.called:
                waiter.callback(None)

    def wait(self) -> Deferred[None]:
        """
        A Deferred that fires when bytes come back (cancel it to stop
        waiting).
        """
        self.waits += 1
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        return waiter


__all__ = ["DEFAULT_MAX_RESPONSE_BUFFER_BYTES", "ResponseStreamBudget"]
