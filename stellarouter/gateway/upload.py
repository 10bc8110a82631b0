"""
The upload stream: the body of a request to a streaming endpoint,
forwarded to the microservice as it arrives from the client
(REQUEST_STREAM_DATA frames), under the microservice's flow control.  The
microservice grants credit as its handler reads; while the credit is spent
the client's connection stays paused, so an upload never piles up in the
gateway.  A body over the endpoint's limit is cancelled upstream and
refused 413.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.payloads import STREAM_WINDOW
from .errors import PayloadTooLarge
from .interfaces import IEdgeConnection, IUpload

if TYPE_CHECKING:
    from ._web import GatewayRequest
    from .response import HttpResponseSink


@implementer(IUpload)
class UploadStream:
    """
    The body of a request to a streaming endpoint, forwarded as it arrives
    (REQUEST_STREAM_DATA frames).  The microservice grants credit as its
    handler reads; while the credit is spent the gateway keeps the client's
    connection paused, so an upload never piles up anywhere.

    @ivar complete: the whole body has been received from the client.
    @ivar forwarding: the body still goes to the microservice (not once the
        request was answered, cancelled or refused; the rest is dropped).
    @ivar outstanding: bytes forwarded and not yet granted back; they count
        against the payload budgets.
    """

    log = Logger()

    def __init__(self, request: GatewayRequest, connection: IEdgeConnection,
                 cid: CorrelationId, limit: int, sink: HttpResponseSink) -> None:
        self.request = request
        self.connection = connection
        self.cid = cid
        self.limit = limit
        self.sink = sink
        self.credit = STREAM_WINDOW
        self.received = 0
        self.outstanding = 0
        self.complete = False
        self.forwarding = True

    def feed(self, data: bytes) -> None:
        """
        A piece of the body arrived from the client.
        """
        if self.complete:
            return
        self.received += len(data)
        if not self.forwarding:
            return
        if not self.connection.is_in_flight(self.cid):
            self.stop_forwarding()
            return
        if self.received > self.limit:
            self._exceeded()
            return
        self.connection.send_body(self.cid, data)
        self.connection.count_bytes(self.cid, len(data))
        self.outstanding += len(data)
        self.credit -= len(data)
        if self.credit <= 0:
            # Every time: twisted.web may resume the transport on its own
            # (when the client's write buffer drains).
            self.request.pause_reading()

    def grant(self, amount: int) -> None:
        """
        The microservice granted room for C{amount} more bytes.
        """
        self.credit += amount
        release = min(amount, self.outstanding)
        self.outstanding -= release
        self.connection.count_bytes(self.cid, -release)
        if self.credit > 0:
            self.request.resume_reading()

    def stop_forwarding(self, abort: bool = True) -> None:
        """
        The request no longer needs its body (answered, cancelled or
        refused): tell the microservice the stream ends (abort), and read
        and drop the rest from the client.
        """
        if self.forwarding:
            self.forwarding = False
            self.connection.detach_upload(self.cid)
            if abort:
                self.connection.send_body(self.cid, b"", abort=True)
            if not self.complete:
                self.request.resume_reading()

    def finish(self) -> None:
        """
        The whole body has been received from the client.
        """
        self.complete = True
        if self.forwarding:
            self.forwarding = False
            self.connection.detach_upload(self.cid)
            self.connection.send_body(self.cid, b"", end=True)

    def client_gone(self) -> None:
        """
        The client left before its whole body was in: cancel upstream.
        """
        if not self.complete:
            self.complete = True
            self.sink.gone()
            was_forwarding = self.forwarding
            self.forwarding = False
            self.connection.detach_upload(self.cid)
            if was_forwarding:
                self.connection.cancel(self.cid, CancelReason.CLIENT_DISCONNECTED)

    def _exceeded(self) -> None:
        """
        The body crossed the limit: stop, CANCEL, answer 413 (unless an
        answer has started: then only abort), close.
        """
        self.complete = True
        self.forwarding = False
        self.sink.gone()
        self.connection.detach_upload(self.cid)
        self.connection.cancel(self.cid, CancelReason.PAYLOAD_LIMIT_EXCEEDED)
        self.log.info("request {cid}: body exceeded {limit} bytes; CANCEL sent",
                      cid=self.cid, limit=self.limit)
        self.request.refuse_or_abort(
            PayloadTooLarge(f"request body exceeds {self.limit} bytes"), str(self.cid))
