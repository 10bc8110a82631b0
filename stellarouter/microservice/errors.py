"""
HTTP errors a handler raises: L{Problem} (any 4xx/5xx problem+json answer)
and L{BadRequest} (400).  The SDK turns them into an
C{application/problem+json} response carrying the request's correlation
id, wherever in a handler (sync, Deferred or coroutine) they are raised.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Mapping, Optional, Sequence, Tuple, Union

from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .context import RawResponse

_KIND = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
#: Members a problem body always has; an extension may not replace them.
_RESERVED = frozenset({"type", "title", "status", "detail", "correlation_id"})


class Problem(Exception):
    """
    Raise to answer an HTTP error as RFC 9457 problem details::

        raise Problem(404, "invoice-not-found", detail=f"no invoice {invoice_id}")

    The client gets C{status} with an C{application/problem+json} body
    C{{"type": "https://stellarouter.dev/problems/invoice-not-found",
    "title": "Not Found", "status": 404, "detail": ..., "correlation_id": ...}}.

    @ivar status: the HTTP status, 400-599.
    @ivar kind: the stable last segment of the problem's C{type} URI.
    @ivar title: a short summary of the kind (default: the status's reason
        phrase).
    @ivar detail: what happened this time, or C{None}.
    @ivar headers: extra response headers (C{Retry-After}, say).
    @ivar extensions: extra members of the problem body.
    """

    def __init__(
        self,
        status: int,
        kind: str,
        title: Optional[str] = None,
        *,
        detail: Optional[str] = None,
        headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = (),
        **extensions: object,
    ) -> None:
        """
        @raise ValueError: C{status} is not 400-599, C{kind} is not
            C{[a-z0-9][a-z0-9-]*}, or an extension reuses a standard member.
        """
        if type(status) is not int or not 400 <= status <= 599:
            raise ValueError(f"Problem status must be an int from 400 to 599, not {status!r}")
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ValueError(f"Problem kind must match [a-z0-9][a-z0-9-]*, not {kind!r}")
        clash = _RESERVED.intersection(extensions)
        if clash:
            raise ValueError(f"Problem extensions may not set {', '.join(sorted(clash))}")
        if title is None:
            try:
                title = HTTPStatus(status).phrase
            except ValueError:
                title = "Error"
        super().__init__(detail if detail is not None else title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self, correlation_id: str) -> RawResponse:
        """
        The problem+json response for the request C{correlation_id}.
        """
        headers = self.headers
        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        return RawResponse(
            self.status,
            [("Content-Type", PROBLEM_CONTENT_TYPE)] + extra,
            problem_body(self.status, self.kind, self.title, self.detail, correlation_id,
                         **self.extensions),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.kind!r}, detail={self.detail!r})"


class BadRequest(Problem):
    """
    Raise to answer 400 C{bad-request} with C{detail}: the request cannot
    be served as sent.  The SDK raises it for a body that is not JSON or
    does not fit a typed endpoint's C{request_type}.
    """

    def __init__(self, detail: str, *,
                 headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = (),
                 **extensions: object) -> None:
        super().__init__(400, "bad-request", "Bad request", detail=detail, headers=headers,
                         **extensions)


__all__ = ["BadRequest", "Problem"]
