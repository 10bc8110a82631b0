"""
The gateway's budget for streamed response bodies: one count of the bytes
it has let microservices send (credit granted) and not yet passed on to
HTTP clients, shared by every stream, so its memory stays bounded however
many clients stop reading.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

#: The smallest credit grant worth a frame, unless a stream wants less.
MIN_GRANT = 64 * 1024

#: The default budget (C{buffers.max_response_bytes}).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


class BudgetWaiter(Protocol):
    """
    A stream that waits for room in a L{ResponseBudget}.
    """

    def budget_available(self) -> None:
        """
        Bytes came back: try to take some again.
        """


class ResponseBudget:
    """
    Bytes of streamed response bodies the gateway holds or has allowed
    microservices to send.  A stream takes bytes before it grants credit
    and gives them back once they went out to its client (or the stream
    ended); a stream that finds no room waits, first come first served,
    and is told (its C{budget_available()}) when some comes back.

    @ivar limit: the budget, in bytes.
    @ivar held: bytes taken and not given back (may pass C{limit} only
        through L{force}).
    @ivar waits: how many times a stream found no room (a counter for the
        logs and benchmarks).
    """

    def __init__(self, limit: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        """
        @param limit: the budget, in bytes (at least one window is sensible).
        """
        self.limit = limit
        self.held = 0
        self.waits = 0
        self._waiting: "OrderedDict[BudgetWaiter, None]" = OrderedDict()

    @property
    def available(self) -> int:
        """
        Bytes that may still be taken (never negative).
        """
        return max(self.limit - self.held, 0)

    def take(self, wanted: int) -> int:
        """
        Take up to C{wanted} bytes: what is available, unless that is less
        than C{min(wanted, MIN_GRANT)} (then nothing: a grant of a few bytes
        costs a frame for nothing).

        @return: the bytes taken (0 or more).
        """
        amount = min(wanted, self.available)
        if amount <= 0 or amount < min(wanted, MIN_GRANT):
            return 0
        self.held += amount
        return amount

    def force(self, amount: int) -> None:
        """
        Count C{amount} bytes the gateway cannot refuse (a microservice
        without the C{response-credit} feature starts every stream with a
        whole window), even past the limit.
        """
        self.held += amount

    def release(self, amount: int) -> None:
        """
        Give back C{amount} bytes, then let waiting streams take their
        share in the order they started waiting.
        """
        self.held -= amount
        waiting = self._waiting
        while waiting and self.available >= MIN_GRANT:
            stream, _ = waiting.popitem(last=False)
            stream.budget_available()

    def wait(self, stream: BudgetWaiter) -> None:
        """
        Queue C{stream} (once) to be told when bytes come back.

        @param stream: has a C{budget_available()} method.
        """
        if stream not in self._waiting:
            self.waits += 1
            self._waiting[stream] = None

    def forget(self, stream: BudgetWaiter) -> None:
        """
        Stop telling C{stream} (it ended, or its client paused it).
        """
        self._waiting.pop(stream, None)

    @property
    def waiting(self) -> int:
        """
        How many streams wait for room.
        """
        return len(self._waiting)


__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "MIN_GRANT", "ResponseBudget"]
