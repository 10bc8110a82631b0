"""
The seams of the gateway's request path: how the HTTP edge sees a
microservice connection (L{IEdgeConnection}, implemented by
L{stellarouter.gateway.connection.GatewayConnection}) and how a
connection hands a streamed request body's credit back to its upload
(L{IUpload}).  The edge depends on these, never on the connection class.
"""

from __future__ import annotations

from typing import Optional

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
        Send a REQUEST; its outcome goes to C{sink} (an L{IResponseSink}).

        @raise stellarouter.gateway.errors.PipelineError: it cannot be sent.
        """

    def send_body(cid: CorrelationId, data: bytes, end: bool = False, abort: bool = False) -> None:
        """
        Send a piece of a streamed request body, or end or abort the stream.
        """

    def grant(cid: CorrelationId, amount: int) -> None:
        """
        Give the microservice room for C{amount} more bytes of a streamed
        response.
        """

    def cancel(cid: CorrelationId, reason: CancelReason) -> bool:
        """
        Cancel a request (CANCEL frame); C{False} if it was no longer in
        flight.
        """

    def count_bytes(cid: CorrelationId, amount: int) -> None:
        """
        Count C{amount} more (or, negative, fewer) streamed body bytes of a
        request in flight.
        """

    def is_in_flight(cid: CorrelationId) -> bool:
        """
        Whether request C{cid} still awaits its response here.
        """

    def attach_upload(cid: CorrelationId, upload: IUpload) -> None:
        """
        Route the microservice's credit for request C{cid}'s body to
        C{upload}.
        """

    def detach_upload(cid: CorrelationId) -> None:
        """
        Stop routing credit for request C{cid}'s body (no error if none).
        """
