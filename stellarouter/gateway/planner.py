"""
The request planner: everything the gateway decides about a proxied request
before its REQUEST is sent, as plain functions of plain values (method,
path, headers, body size, the clock's time, the routing state) returning a
L{Plan} or raising the L{PipelineError} that answers the request: path
resolution, the C{X-Stella-Version} check, route choice, endpoint
overrides, bearer-token authentication, body limits and in-flight byte
budgets.  Nothing here touches a twisted.web request, so unit tests call it
directly (C{tests/unit/test_planner.py}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, cast

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger

from ..common.enums import InstanceHealthStatus, TransportType
from ..common.errors import InvalidDescriptor
from ..common.interfaces import IRoutingPlugin
from ..common.models import (
    MAX_VERSION_PART,
    EndpointDescriptor,
    PayloadLimits,
    RoutableConnection,
    RoutingContext,
    parse_version,
)
from ..common.payloads import RequestMessage
from .auth import InvalidToken, TokenVerifier, bearer_token, describe, unmet_requirement
from .dispatch import ByteCount
from .errors import (
    BadRequest,
    BadVersion,
    BudgetExhausted,
    Forbidden,
    NoRoute,
    PayloadTooLarge,
    PipelineError,
    Unauthorized,
    VersionNotFound,
)
from .forwarding import ClientAddressPolicy
from .interfaces import IEdgeConnection
from .overrides import EndpointOverrides
from .resolver import Resolution
from .state import RoutingState

_ROUTABLE = (InstanceHealthStatus.HEALTHY, InstanceHealthStatus.DEGRADED)
# A module global, not TransportType.UDP in Planner.plan: reading an enum
# member from its class costs ~0.7 us on Python 3.11 (python -m timeit: 759 ns
# against 50 ns), once per request (issue 20; as in gateway/connection.py).
_UDP = TransportType.UDP

#: Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded either way.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})

#: Request headers the edge checks or rewrites itself (issue 17, item 7):
#: at most one C{Host} and one C{Authorization}; C{X-Forwarded-For} and
#: C{Forwarded} are the gateway's to write (L{ClientAddressPolicy}); an
#: incoming C{X-Correlation-Id} is never forwarded (the id is the
#: gateway's: the REQUEST's, C{ctx.correlation_id} in the handler).
_EDGE_HEADERS = frozenset({"host", "authorization", "x-forwarded-for", "forwarded",
                           "x-correlation-id", "x-forwarded-proto"})

#: "No limit" for a streamed body whose endpoint declares none.
UNLIMITED = 2 ** 62

#: How often an idempotent request over UDP is sent again when unanswered.
UDP_RETRIES = 2

RawHeaders = Iterable[Tuple[bytes, Sequence[bytes]]]
Headers = List[Tuple[str, str]]


def read_headers(raw_headers: RawHeaders, client: IAddress, forwarding: ClientAddressPolicy,
                 http_version: bytes, secure: bool = False
                 ) -> Tuple[Headers, Optional[bytes], Optional[bytes]]:
    """
    Read the request headers once: those to forward (all but the hop-by-hop
    ones and those named in C{Connection}; L{_EDGE_HEADERS} as the edge
    decides), the first C{X-Stella-Version} value and the C{Authorization}
    value.

    @param raw_headers: the request's headers, as twisted.web's
        C{Headers.getAllRawHeaders} gives them.
    @param client: the client's address (C{IAddress}).
    @param http_version: the request line's, e.g. C{b"HTTP/1.1"}.
    @param secure: the request came over TLS: C{X-Forwarded-Proto: https}
        is forwarded (issue 25; an incoming one never is).
    @raise BadRequest: two C{Host} or C{Authorization} headers, or an
        HTTP/1.1 request without C{Host}.
    """
    pairs: Headers = []
    version: Optional[bytes] = None
    authorization: Optional[bytes] = None
    named: Optional[Sequence[bytes]] = None
    host = False
    forwarded_for: Optional[Sequence[bytes]] = None
    forwarded: Optional[Sequence[bytes]] = None
    for name, values in raw_headers:
        text = name.decode("latin-1")
        lower = text.lower()
        if lower in HOP_BY_HOP or lower.startswith("proxy-"):
            if lower == "connection":
                named = values
            continue
        if lower == "x-stella-version":
            version = values[0]
        elif lower in _EDGE_HEADERS:
            if lower == "x-forwarded-for":
                forwarded_for = values
                continue
            if lower == "forwarded":
                forwarded = values
                continue
            if lower in ("x-correlation-id", "x-forwarded-proto"):
                # (X-Forwarded-Proto: the gateway's own, below; issue 25)
                continue
            if len(values) > 1:
                raise BadRequest(f"{len(values)} {text} headers; at most one is allowed")
            if lower == "authorization":
                authorization = values[0]
            host = host or lower == "host"
        for value in values:
            pairs.append((text, value.decode("latin-1")))
    if not host and http_version == b"HTTP/1.1":
        raise BadRequest("an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)")
    if named:
        drop = {t.strip().lower() for v in named for t in v.decode("latin-1").split(",")}
        pairs = [(n, v) for n, v in pairs if n.lower() not in drop]
    if forwarded_for is None and forwarded is None:
        pairs += forwarding.own_headers(client)
    else:
        pairs += forwarding.headers(client, forwarded_for, forwarded)
    if secure:
        # issue 25: the scheme the client used (a bridged Klein app's
        # isSecure); without it, http (nothing more on the plain path).
        pairs.append(_HTTPS)
    return pairs, version, authorization


_HTTPS = ("X-Forwarded-Proto", "https")


def origin_form(path: bytes) -> bytes:
    """
    The path of a request target: an absolute-form target
    (C{http://host/path}) reduced to its path, any other as it is.
    """
    if path.startswith((b"http://", b"https://")):
        parts = path.split(b"/", 3)
        return b"/" + (parts[3] if len(parts) > 3 else b"")
    return path


def split_target(uri: bytes) -> str:
    """
    The query string of a request target (without its C{?}), as text.
    """
    return uri.split(b"?", 1)[1].decode("latin-1") if b"?" in uri else ""


@dataclass(slots=True)
class Plan:
    """
    Everything decided about a request before its REQUEST is sent.  (One
    is made per request: slots and no frozen C{__setattr__} keep it cheap.)

    @ivar headers: the request headers to forward (C{Authorization} left
        out where an override says so).
    @ivar limit: the largest request body the chosen endpoint takes.
    @ivar retries: how often the REQUEST is sent again while unanswered: a
        lost UDP datagram of an idempotent request is repaired by sending it
        again (the microservice answers a duplicate from its reply cache).
    """

    method: str
    path: str
    template: str
    path_params: Mapping[str, str]
    endpoint: EndpointDescriptor
    timeout: float
    claims: Mapping[str, Any]
    deadline: float
    connection: IEdgeConnection
    limit: int
    headers: Headers
    retries: int

    def message(self, query: str, body: bytes, streaming: bool = False) -> RequestMessage:
        """
        The REQUEST to send.
        """
        return RequestMessage(self.method, self.path, self.template, self.path_params, query,
                              self.headers, self.claims, self.deadline, streaming, body)


class Planner:
    """
    Plans requests against the gateway's routing state and its settings
    (which the gateway service replaces on reload).

    @ivar verifier: validates bearer tokens, or L{None} (no validation
        configured: a required token then fails closed).
    @ivar auth_required: every endpoint needs a valid token.
    """

    log = Logger()

    def __init__(self, routing_state: RoutingState, routing: IRoutingPlugin, region: str,
                 limits: PayloadLimits, aggregate: ByteCount) -> None:
        self.routing_state = routing_state
        self.routing = routing
        self.region = region
        self.limits = limits
        self.aggregate = aggregate
        self.overrides = EndpointOverrides()
        self.verifier: Optional[TokenVerifier] = None
        self.auth_required = False

    def plan(self, method: str, path: str, headers: Headers, raw_version: Optional[bytes],
             authorization: Optional[bytes], body_size: int, now: float, cid_text: str,
             resolution: Optional[Resolution] = None) -> Plan:
        """
        Resolve (unless already resolved), select the version, route, apply
        overrides, authenticate.

        @param headers: the headers to forward (L{read_headers}).
        @param raw_version: the C{X-Stella-Version} header's value, if any.
        @param authorization: the C{Authorization} header's value, if any.
        @param now: the clock's time (the deadline counts from it).
        @param cid_text: the request's correlation id (for the log).
        @raise PipelineError: whatever stops the request.
        """
        if resolution is None:
            resolution = self.routing_state.resolve(method, path)
        route = resolution.route
        requested = (None if raw_version is None
                     else self._requested_version(route.service_name, raw_version))
        candidates = self.routing_state.connectionsFor(route.service_name, route.method,
                                                       route.template)
        # Positional, in RoutingContext's field order (method, path, headers,
        # endpoint, service_name, path_params, requested_version,
        # gateway_region, deadline, body_size): with keywords its generated
        # __new__ costs about twice as much (python -m timeit: 1.98 us against
        # 4.27 us, issue 20), ~2 % of a proxied GET.
        context = RoutingContext(
            route.method, path, {}, (route.method, route.template), route.service_name,
            resolution.path_params, requested, self.region, None, body_size)
        decision = self.routing.choose(context, candidates, now)
        if decision is None:
            default = None if requested else getattr(
                self.routing, "default_versions", {}).get(route.service_name)
            raise no_route_error(context, candidates, requested, default)
        endpoint = decision.endpoint
        timeout = decision.effective_timeout
        overrides = self.overrides
        if overrides:
            endpoint, timeout = overrides.apply(endpoint, self.routing_state)
        claims = self.authenticate(endpoint, authorization, cid_text)
        if overrides.strips_authorization and not overrides.forwards_authorization(endpoint):
            headers = [(n, v) for n, v in headers if n.lower() != "authorization"]
        connection = cast(IEdgeConnection, decision.connection)
        # (A field, not a property: one Python call less per request, issue 20.)
        retries = (UDP_RETRIES if connection.state.transport_type is _UDP
                   and endpoint.is_idempotent else 0)
        return Plan(route.method, path, route.template, resolution.path_params, endpoint,
                    timeout, claims, now + timeout, connection, self._limit(endpoint), headers,
                    retries)

    def _requested_version(self, service_name: str, raw_version: bytes) -> str:
        """
        The version a request's C{X-Stella-Version} header asks for.

        @raise BadVersion: it is not C{MAJOR.MINOR.PATCH}.
        @raise VersionNotFound: the service was never seen at that version.
        """
        requested = raw_version.decode("latin-1").strip()
        try:
            parse_version(requested)
        except InvalidDescriptor:
            shown = requested if len(requested) <= 40 else requested[:40] + "..."
            raise BadVersion(
                f"X-Stella-Version {shown!r} is not MAJOR.MINOR.PATCH (each part at most "
                f"{MAX_VERSION_PART})") from None
        if requested not in self.routing_state.versions_seen(service_name):
            raise VersionNotFound(f"service {service_name} has no version {requested}")
        return requested

    def _limit(self, endpoint: EndpointDescriptor) -> int:
        """
        The largest request body C{endpoint} takes.  A streamed body never
        sits in the gateway: only the endpoint's own limit applies (spec
        change log, 6).
        """
        if endpoint.supports_streaming:
            return endpoint.max_request_bytes if endpoint.max_request_bytes is not None else (
                UNLIMITED)
        limit = self.limits.max_request_bytes_per_call
        if endpoint.max_request_bytes is not None:
            limit = min(limit, endpoint.max_request_bytes)
        return limit

    def check_budgets(self, connection: IEdgeConnection, size: int) -> None:
        """
        @raise BudgetExhausted: the connection's or the gateway's request
            bytes in flight would pass their budget (503, Retry-After).
        """
        if not size:
            return
        limits = self.limits
        state = connection.state
        if state.in_flight_bytes + size > limits.max_request_bytes_per_connection:
            raise BudgetExhausted(
                f"{state.in_flight_bytes} request bytes are in flight to instance "
                f"{state.instance.instance_id}; {size} more would pass its budget of "
                f"{limits.max_request_bytes_per_connection}")
        if self.aggregate.value + size > limits.max_aggregate_inflight_bytes:
            raise BudgetExhausted(
                f"{self.aggregate.value} request bytes are in flight through this gateway; "
                f"{size} more would pass its budget of {limits.max_aggregate_inflight_bytes}")

    def may_stream(self, resolution: Resolution) -> bool:
        """
        Whether a request so resolved may go to a streaming endpoint: some
        instance serves it streaming and no override buffers it.
        """
        route = resolution.route
        key = (route.method, route.template)
        if self.overrides and self.overrides.buffered(route.service_name, *key):
            return False
        return any(c.state.endpoints[key].supports_streaming
                   for c in self.routing_state.connectionsFor(route.service_name, *key))

    def buffered_limit(self, resolution: Resolution) -> int:
        """
        The largest request body any routable instance of a buffered
        endpoint could take: the per-call limit, or less where every
        instance's descriptor says less.  A body over it is refused (413)
        as soon as its length is known, before it is read.
        """
        route = resolution.route
        key = (route.method, route.template)
        per_call = self.limits.max_request_bytes_per_call
        limits = [min(per_call, e.max_request_bytes) if e.max_request_bytes is not None
                  else per_call
                  for c in self.routing_state.connectionsFor(route.service_name, *key)
                  for e in (c.state.endpoints.get(key),) if e is not None]
        return max(limits, default=per_call)

    def authenticate(self, endpoint: EndpointDescriptor, authorization: Optional[bytes],
                     cid_text: str) -> Mapping[str, Any]:
        """
        Validate the bearer token and check the endpoint's requirements.

        @param authorization: the C{Authorization} header's value, if any.
        @return: the verified claims (empty when anonymous).
        @raise Unauthorized: a token is needed and missing or invalid (the
            reason is logged, the client only learns "invalid token").
        @raise Forbidden: a valid token lacks a requirement (named).
        """
        needed = bool(endpoint.requiring_claims) or self.auth_required
        verifier = self.verifier
        if verifier is None and not needed:
            return {}  # nothing to check and no claims to give
        what = f"{endpoint.method} {endpoint.path}"
        token = bearer_token(authorization)
        if token is None:
            if needed:
                raise Unauthorized(f"{what} requires a bearer token")
            return {}
        if verifier is None:
            # Fail closed: without keys no token can be valid.
            raise Unauthorized(f"{what} requires a valid token and this gateway has no "
                               "token validation configured")
        try:
            claims = verifier.verify(token)
        except InvalidToken as e:
            self.log.info("request {cid}: invalid token: {reason}", cid=cid_text,
                          reason=e.reason)
            raise Unauthorized("invalid token", invalid_token=True) from None
        unmet = unmet_requirement(claims, endpoint.requiring_claims)
        if unmet is not None:
            raise Forbidden(f"the token does not satisfy {describe(unmet)} required by {what}")
        return claims


def no_route_error(context: RoutingContext, candidates: Sequence[RoutableConnection],
                   requested: Optional[str], default: Optional[str] = None) -> PipelineError:
    """
    Why nothing can serve: too large or streaming for the only (UDP)
    instances that could (413 / 503 saying so), or simply none routable.

    @param default: the service's configured default version, when the
        request named none (the 503 names it: instances of other versions
        may well be connected).
    """
    version = requested or default
    routable = [c for c in candidates if c.state.status in _ROUTABLE and (
        version is None or c.state.instance.version == version)]
    if routable and all(c.state.transport_type is TransportType.UDP for c in routable):
        endpoint = routable[0].state.endpoints.get(context.endpoint)
        if endpoint is not None and endpoint.supports_streaming:
            return NoRoute(f"{context.method} {context.path} is a streaming endpoint and its only "
                           "instances are connected over UDP, which cannot carry streams")
        limit = max(c.state.max_frame_bytes for c in routable)
        return PayloadTooLarge(
            f"a request body of {context.body_size} bytes does not fit in one UDP datagram "
            f"(at most {limit} bytes with the request header) and no instance on another "
            "transport serves this endpoint")
    which = (f" at version {requested}" if requested else
             f" at its default version {default} (services[].default_version)" if default
             else "")
    return NoRoute(f"no healthy instance of {context.service_name}{which} serves "
                   f"{context.endpoint[0]} {context.endpoint[1]}")
