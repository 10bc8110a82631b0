"""
The seams of the gateway's request path: how the HTTP edge sees a
microservice connection (L{IEdgeConnection}, implemented by
L{stellarouter.gateway.connection.GatewayConnection}) and how a
connection hands a streamed request body's credit back to its upload
(L{IUpload}).  The edge depends on these, never on the connection class.
"""

from __future__ import annotations

from typing import Optional, Tuple

from zope.interface import Attribute, Interface

from ..common.enums import CancelReason
from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink
from ..common.payloads import RequestMessage


class IUpload(Interface):
    """
    The body of one request to a streaming endpoint, being forwarded as it
    arrives (L{stellarouter.gateway.upload.UploadStream}).
    """

    def grant(amount: int) -> None:
        """
        The microservice granted room for C{amount} more bytes of the body.

        @param amount: bytes (positive).
        @return: L{None}.
        """


class IEdgeConnection(Interface):
    """
    What the HTTP edge does with the microservice connection a request is
    routed to: send its REQUEST, its streamed body and response credit,
    cancel it, and count its streamed bytes in flight.
    """

    state = Attribute("The connection's L{ConnectionState} (routing and budgets read it).")
    response_budget = Attribute(
        "The gateway's L{ResponseBudget} for streamed responses, or None.")
    response_credit = Attribute(
        "Whether the microservice waits for a grant before each window of a "
        "streamed response (the C{response-credit} HELLO feature).")

    def send_request(message: RequestMessage, timeout: Optional[float], sink: IResponseSink,
                     cid: Optional[CorrelationId] = None, retries: int = 0) -> CorrelationId:
        """
        Send a REQUEST; its outcome goes to C{sink}.

        @param message: the REQUEST (a streamed body follows by L{send_body}).
        @param timeout: seconds until CANCEL(Timeout) and a 504, or L{None}.
        @param sink: receives the response or the failure.
        @param cid: the correlation id to use (fresh by default).
        @param retries: how often to send it again while unanswered (UDP).
        @return: the correlation id.
        @raise stellarouter.gateway.errors.PipelineError: it cannot be sent.
        """

    def send_body(cid: CorrelationId, data: bytes, end: bool = False, abort: bool = False) -> None:
        """
        Send a piece of a streamed request body, or end or abort the stream.

        @param cid: the request's correlation id.
        @param data: the piece (split to fit frames).
        @param end: it is the last piece.
        @param abort: the stream ends unfinished (C{data} is ignored).
        @return: L{None}.
        """

    def grant(cid: CorrelationId, amount: int) -> None:
        """
        Give the microservice room for C{amount} more bytes of a streamed
        response.

        @param cid: the request's correlation id.
        @param amount: bytes.
        @return: L{None}.
        """

    def cancel(cid: CorrelationId, reason: CancelReason) -> bool:
        """
        Cancel a request (CANCEL frame); no answer is written for it.

        @param cid: the request's correlation id.
        @param reason: sent in the CANCEL.
        @return: C{False} if it was no longer in flight.
        """

    def head_answered(cid: CorrelationId) -> bool:
        """
        A HEAD request was answered from the head of its GET endpoint's
        streamed response: stop that response upstream (CANCEL marked
        C{head_only}), without counting a cancellation: the request is
        complete.

        @param cid: the request's correlation id.
        @return: C{False} if it was no longer in flight.
        """

    def count_bytes(cid: CorrelationId, amount: int) -> None:
        """
        Count C{amount} more (or, negative, fewer) streamed body bytes of a
        request in flight against the byte budgets.

        @param cid: the request's correlation id.
        @param amount: bytes.
        @return: L{None}.
        """

    def is_in_flight(cid: CorrelationId) -> bool:
        """
        Whether request C{cid} still awaits its response here.

        @param cid: the request's correlation id.
        """

    def attach_upload(cid: CorrelationId, upload: IUpload) -> None:
        """
        Route the microservice's credit for request C{cid}'s body to
        C{upload}.

        @param cid: the request's correlation id.
        @param upload: gets every grant, until L{detach_upload}.
        @return: L{None}.
        """

    def detach_upload(cid: CorrelationId) -> None:
        """
        Stop routing credit for request C{cid}'s body (no error if none).

        @param cid: the request's correlation id.
        @return: L{None}.
        """


class IMetricsExposition(Interface):
    """
    The gateway's metrics, as the admin listener's C{GET /metrics} serves
    them (built by C{stellarouter.gateway.metrics}).
    """

    def exposition() -> Tuple[bytes, str]:
        """
        The current metrics in a scrape format.

        @return: C{(body, content type)}, e.g. Prometheus text and
            C{text/plain; version=0.0.4; charset=utf-8}.
        """
