"""
The SDK's idle timeout for streamed responses (issue 25): once a response
has started streaming, its timeout counts from the last byte sent, not from
the request (docs/router/microservice.md, "Timeouts").
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class IdleTimer:
    """
    Calls C{on_idle} once, when nothing was L{touch}ed for C{timeout}
    seconds.  One timer per stream, moved only when it rings (a touch costs
    a clock read, not a reschedule).
    """

    def __init__(self, clock: IReactorTime, timeout: float,
                 on_idle: Callable[[], None]) -> None:
        """
        @param timeout: seconds without a touch, > 0.
        """
        self._clock = clock
        self.timeout = timeout
        self._on_idle = on_idle
        self._last = clock.seconds()
        self._call: Optional[IDelayedCall] = clock.callLater(timeout, self._ring)

    def touch(self) -> None:
        """
        Something moved: the idle time starts again.
        """
        self._last = self._clock.seconds()

    def _ring(self) -> None:
        idle = self._clock.seconds() - self._last
        if idle >= self.timeout:
            self._call = None
            self._on_idle()
        else:
            self._call = self._clock.callLater(self.timeout - idle, self._ring)

    def stop(self) -> None:
        """
        The stream ended: never call C{on_idle}.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
