"""
Who may use the admin API (issue 21): L{AdminGuard} decides, for each
admin request, whether it is served or refused (L{AdminRefused}, which
the admin app answers as problem+json).  In order: a request naming its
C{Host} or C{Authorization} more than once is malformed (400, as on the
public port); a request from a web page (an C{Origin} header) is refused;
unless C{admin.allow_remote}, so is a peer off the loopback interface or a
C{Host} that is not a loopback name (DNS rebinding; over TCP: no browser
reaches a unix socket); with
C{admin.require_claims}, so is a request without a bearer token the
gateway's C{auth} settings validate and whose claims meet them.  It reads
headers and the peer address only: no I/O, no routing.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..common.untrusted import quoted
from ..config.admin import is_loopback
from ..config.gateway import GatewayConfig
from .auth import InvalidToken, TokenVerifier, bearer_token, describe, unmet_requirement
from .host_header import MALFORMED_HOST, parse_host


class AdminRefused(Exception):
    """
    An admin request is refused: answered C{status} with a problem+json
    body.
    """

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail


#: Headers an admin request may carry once at most: the guard reads them
#: (twisted.web's C{getHeader} gives the last of several, so a second
#: C{Host} would hide the first from the check).  The public port refuses
#: the same two (L{stellarouter.gateway.planner.read_headers}).
SINGLE_HEADERS = (b"host", b"authorization")


class AdminGuard:
    """
    Decides who may use the admin API under the configuration in force.

    @ivar config: the configuration in force (its C{admin} and C{auth}).
    @ivar verifier: validates bearer tokens (C{None}: no key is
        configured).
    """

    log = Logger()

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.verifier: Optional[TokenVerifier] = None
        self.configure(config)

    def configure(self, config: GatewayConfig) -> None:
        """
        Put a (reloaded) configuration in force: required claims, token
        keys, who may connect.
        """
        self.put_in_force(config, TokenVerifier(config.auth) if config.auth.enabled else None)

    def put_in_force(self, config: GatewayConfig, verifier: Optional[TokenVerifier]) -> None:
        """
        L{configure} with C{config}'s token verifier already built.
        """
        self.config = config
        self.verifier = verifier

    def authorize(self, request: IRequest) -> None:
        """
        Serve C{request}, or refuse it (see the module docstring).

        @raise AdminRefused: 400, 401 or 403.
        """
        for name in SINGLE_HEADERS:
            values: List[bytes] = request.requestHeaders.getRawHeaders(name) or []
            if len(values) > 1:
                title = name.decode().title()
                raise AdminRefused(400, "bad-request", "Bad request",
                                   f"{len(values)} {title} headers; at most one is allowed")
        admin = self.config.admin
        if request.getHeader(b"origin") is not None:
            raise AdminRefused(403, "forbidden", "Browser requests refused",
                               "the admin API does not answer requests from web pages "
                               "(an Origin header was sent)")
        if not admin.allow_remote:
            peer = request.getClientAddress()
            host = getattr(peer, "host", None)
            if host is not None and not is_loopback(host):
                raise AdminRefused(403, "forbidden", "Remote admin requests refused",
                                   "the admin API answers loopback peers only "
                                   "(admin.allow_remote is false)")
            header = request.getHeader(b"host")
            try:
                named = parse_host(header)[0] if header is not None else None
            except ValueError:
                raise AdminRefused(400, "bad-request", "Bad request", MALFORMED_HOST) from None
            # (Over a unix socket any name goes: no browser reaches one, and
            # DNS rebinding is a browser's.)
            over_tcp = hasattr(request.getHost(), "host")
            if named is not None and over_tcp and not is_loopback(named):
                raise AdminRefused(403, "forbidden", "Remote admin requests refused",
                                   f"Host {quoted(named)} is not a loopback name "
                                   "(admin.allow_remote is false)")
        if not admin.require_claims:
            return
        token = bearer_token(request.getHeader(b"authorization"))
        if token is None:
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "the admin API needs a bearer token (admin.require_claims)")
        if self.verifier is None:
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "no key is configured to validate tokens")
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as e:
            self.log.info("admin request refused: invalid token ({reason})", reason=e.reason)
            raise AdminRefused(401, "unauthorized", "Authentication required",
                               "invalid token") from None
        missing = unmet_requirement(claims, admin.require_claims)
        if missing is not None:
            raise AdminRefused(403, "forbidden", "Missing claim",
                               f"the token lacks {describe(missing)}")


__all__ = ["AdminGuard", "AdminRefused", "SINGLE_HEADERS"]
