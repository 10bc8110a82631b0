"""
The admin listener's connections (issue 21): the twisted.web site that
serves the admin app on C{admin.listen} (L{AdminSite}) and its requests
(L{AdminRequest}), which bound what a connection may send.  Which requests
are served is L{stellarouter.gateway.admin_guard}'s decision, what they
answer L{stellarouter.gateway.admin}'s.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Request, Site

from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body


#: The largest request body the admin listener takes (its API takes none):
#: a connection sending more is dropped before it is buffered.
MAX_ADMIN_BODY_BYTES = 64 * 1024


class AdminRequest(Request):
    """
    An admin request: its body is bounded (L{MAX_ADMIN_BODY_BYTES}),
    through twisted.web's public C{gotLength} / C{handleContentChunk}
    request hooks.
    """

    _received = 0
    _dropped = False
    log = Logger()

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > MAX_ADMIN_BODY_BYTES:
            super().gotLength(None)  # (a body holder that stays empty)
            self._drop()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._dropped:
            return
        self._received += len(data)
        if self._received > MAX_ADMIN_BODY_BYTES:
            self._drop()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._dropped:  # a refused request is never served
            super().process()

    def _drop(self) -> None:
        """
        Answer 413 (problem+json) and close: nothing more of this
        connection is read or served.
        """
        if self._dropped:
            return
        self._dropped = True
        self.log.info("admin request body over {limit} bytes: answered 413, connection closed",
                      limit=MAX_ADMIN_BODY_BYTES)
        transport = self.channel.transport if self.channel is not None else None
        if transport is None:
            return
        body = problem_body(413, "payload-too-large", "Payload too large",
                            f"the admin API takes bodies of at most {MAX_ADMIN_BODY_BYTES} "
                            "bytes")
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: "
                        + PROBLEM_CONTENT_TYPE.encode() + b"\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        transport.loseConnection()


class AdminSite(Site):
    """
    The admin listener's site (named in the logs: C{AdminSite starting on
    9901}); requests are L{AdminRequest}s.
    """

    requestFactory = AdminRequest

    def log(self, request: http.Request) -> None:
        """
        No access line: an admin URL may carry a token in its query, and no
        secret is ever logged (the gateway's own access log covers proxied
        requests only).
        """


__all__ = ["AdminRequest", "AdminSite", "MAX_ADMIN_BODY_BYTES"]
