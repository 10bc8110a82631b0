"""
Errors of the gateway's request pipeline.  Each maps to one HTTP status and
one stable problem type.
"""

from typing import Iterable, Optional

from ..common.errors import StellaError


class PipelineError(StellaError):
    """
    A request cannot be served; the edge answers C{status} with a
    problem+json body of kind C{kind}.
    """

    status = 500
    kind = "internal-error"
    title = "Internal gateway error"
    retry_after: Optional[int] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(PipelineError):
    """
    No endpoint template matches the path.
    """

    status = 404
    kind = "not-found"
    title = "No such endpoint"


class MethodNotAllowed(PipelineError):
    """
    The path matches, but not for this method.

    @ivar allow: the methods the path does serve, sorted.
    """

    status = 405
    kind = "method-not-allowed"
    title = "Method not allowed"

    def __init__(self, detail: str, allow: Iterable[str]) -> None:
        super().__init__(detail)
        self.allow = tuple(sorted(set(allow)))


class BadVersion(PipelineError):
    """
    C{X-Stella-Version} is not C{MAJOR.MINOR.PATCH}.
    """

    status = 400
    kind = "bad-version"
    title = "Malformed X-Stella-Version"


class Unauthorized(PipelineError):
    """
    The endpoint has claim requirements and the request carries no valid
    token.
    """

    status = 401
    kind = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token


class Forbidden(PipelineError):
    """
    A valid token lacks a claim requirement of the endpoint.
    """

    status = 403
    kind = "forbidden"
    title = "Missing claim"


class VersionNotFound(PipelineError):
    """
    No instance of the service ever announced the requested version.
    """

    status = 404
    kind = "version-not-found"
    title = "Version not found"


class PayloadTooLarge(PipelineError):
    """
    The request body exceeds a payload limit.
    """

    status = 413
    kind = "payload-too-large"
    title = "Payload too large"


class BadRequest(PipelineError):
    """
    The request itself is unusable (e.g. a path that is not UTF-8 once
    percent-decoded).
    """

    status = 400
    kind = "bad-request"
    title = "Bad request"


class RequestHeadersTooLarge(PipelineError):
    """
    The request's headers do not fit in one frame of the chosen connection.
    """

    status = 431
    kind = "request-headers-too-large"
    title = "Request header fields too large"


class NoRoute(PipelineError):
    """
    No routable instance serves the endpoint right now.
    """

    status = 503
    kind = "no-route"
    title = "No instance available"
    retry_after = 1


class BudgetExhausted(PipelineError):
    """
    The request bytes in flight (per connection or through the gateway)
    would pass their budget.
    """

    status = 503
    kind = "payload-budget-exhausted"
    title = "Too much in flight"
    retry_after = 1


class DispatchError(PipelineError):
    """
    The request was dispatched but no (complete) response came.
    """


class GatewayTimeout(DispatchError):
    """
    The effective timeout elapsed (CANCEL Timeout was sent).
    """

    status = 504
    kind = "timeout"
    title = "Upstream timeout"


class UpstreamLost(DispatchError):
    """
    The microservice connection closed while the request was in flight.
    """

    status = 502
    kind = "upstream-lost"
    title = "Upstream connection lost"


class UpstreamNotStarted(UpstreamLost):
    """
    The request provably did not run: its connection was gone before its
    REQUEST was written (issue 24; the gateway sends it to another instance
    when it can, else the client gets this 502).
    """


class UpstreamProtocolError(DispatchError):
    """
    The microservice sent an unusable RESPONSE for this request.
    """

    status = 502
    kind = "bad-upstream-response"
    title = "Bad upstream response"


class GatewayShuttingDown(DispatchError):
    """
    The gateway is stopping (CANCEL Shutdown was sent).
    """

    status = 503
    kind = "shutting-down"
    title = "Gateway shutting down"
    retry_after = 1


# Refusals at the HTTP connection level (gateway/_web.py): answered before a
# request reaches the pipeline, then the connection is closed.


class RequestHeadTimeout(PipelineError):
    """
    The request line and headers did not arrive within
    C{http.request_head_timeout}.
    """

    status = 408
    kind = "request-head-timeout"
    title = "Request head not received in time"


class RequestLineTooLong(PipelineError):
    """
    The request line is longer than C{http.max_header_bytes}.
    """

    status = 414
    kind = "request-line-too-long"
    title = "Request line too long"


class TooManyConnections(PipelineError):
    """
    The gateway holds C{http.max_connections} client connections already.
    """

    status = 503
    kind = "too-many-connections"
    title = "Too many client connections"
    retry_after = 1
