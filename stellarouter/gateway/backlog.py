"""
A microservice connection's write backlog, seen from the gateway
(L{BacklogWatch}): request body bytes of finished requests stay counted in
the payload budgets while they may still wait in the write buffer, and a
connection whose backlog passes its limit (the peer does not read) is
stalled: no new requests are routed to it, and it is closed unless it
drains in time.  L{stellarouter.gateway.connection.GatewayConnection} owns
one per connection whose transport has a backlog (L{ISendBacklog}).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..common.interfaces import ISendBacklog


class BacklogWatch:
    """
    Watches one connection's write backlog.

    @ivar retained_bytes: request body bytes of finished requests still
        counted in the budgets because they may wait in the write buffer.
    @ivar stalled: whether the connection is stalled now (waiting to drain
        or to be closed).
    """

    log = Logger()

    def __init__(
        self,
        backlog: ISendBacklog,
        clock: IReactorTime,
        max_unsent_bytes: int,
        stalled_close_after: float,
        release: Callable[[int], None],
        unroute: Callable[[], None],
        reroute: Callable[[], None],
        describe: Callable[[], str],
    ) -> None:
        """
        @param release: gives C{amount} retained bytes back to the budgets.
        @param unroute: takes the connection out of routing (it stalled).
        @param reroute: routes to it again (it drained in time).
        @param describe: names the connection for the log.
        """
        self.backlog = backlog
        self.clock = clock
        self.max_unsent_bytes = max_unsent_bytes
        self.stalled_close_after = stalled_close_after
        self._release = release
        self._unroute = unroute
        self._reroute = reroute
        self._describe = describe
        self.retained_bytes = 0
        self._stall_timer: Optional[IDelayedCall] = None
        self._closed = False
        backlog.limitUnsent(max_unsent_bytes, self._stalled)

    @property
    def stalled(self) -> bool:
        return self._stall_timer is not None

    def retain(self, size: int) -> bool:
        """
        A finished request's body of C{size} bytes: keep it counted while
        it may still wait in the write buffer.

        @return: whether it is kept (C{False}: nothing is unsent, release it
            now).
        """
        if not size or not self.backlog.unsent or self._closed:
            return False
        if not self.retained_bytes:
            self.backlog.notifyDrained(self.release_retained)
        self.retained_bytes += size
        return True

    def release_retained(self) -> None:
        """
        The write buffer drained (or the connection closed): the bodies of
        finished requests kept counted no longer take memory.
        """
        amount, self.retained_bytes = self.retained_bytes, 0
        if amount:
            self._release(amount)

    def closed(self) -> None:
        """
        The connection closed: stop the stall timer, release what is kept.
        """
        self._closed = True
        timer, self._stall_timer = self._stall_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.release_retained()

    def _stalled(self) -> None:
        """
        More than C{max_unsent_bytes} wait to be sent: the microservice does
        not read.  Route nothing more to it; close it unless it drains in
        time.
        """
        if self._closed or self._stall_timer is not None:
            return
        self.log.warn(
            "connection from {peer} is stalled: {unsent} bytes wait to be sent "
            "(limit {limit}); no new requests go to it, and it closes in {grace:g}s unless it "
            "reads them", peer=self._describe(), unsent=self.backlog.unsent,
            limit=self.max_unsent_bytes, grace=self.stalled_close_after,
        )
        self._unroute()
        self._stall_timer = self.clock.callLater(self.stalled_close_after, self._stall_expired)
        self.backlog.notifyDrained(self._unstalled)

    def _unstalled(self) -> None:
        """
        The write buffer drained in time: route to it again.
        """
        timer, self._stall_timer = self._stall_timer, None
        if timer is None or not timer.active() or self._closed:
            return
        timer.cancel()
        self._reroute()
        self.log.info("connection from {peer} drained its backlog; routing to it again",
                      peer=self._describe())

    def _stall_expired(self) -> None:
        self._stall_timer = None
        if self._closed:
            return
        self.backlog.abort(
            f"stalled: {self.backlog.unsent} bytes unsent for {self.stalled_close_after:g}s")
