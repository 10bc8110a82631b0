"""
The immutable data model (spec section 3) and the validators for identities,
versions and path templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Mapping, NamedTuple, Optional, Protocol, Tuple, Union

from .enums import FrameType, InstanceHealthStatus, TransportType
from .errors import InvalidDescriptor
from .ids import CorrelationId
from .schemas import ServiceSchemas
from .untrusted import quoted

#: The largest version part: 2**53 - 1 (16 digits), the bound node-semver
#: uses, so a version JavaScript tooling accepts is accepted here.  Bounded
#: so that no header or HELLO can make C{int()} work on thousands of digits.
MAX_VERSION_PART = 2 ** 53 - 1
_SEMVER = re.compile(
    r"(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})\Z")
_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*\Z")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")
_CATCH_ALL_PARAM = re.compile(r"\{\*([A-Za-z_][A-Za-z0-9_]*)\}\Z")
# RFC 3986 pchar, without "{" and "}" which mark parameters.
_LITERAL = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+\Z")

#: Methods whose endpoints are idempotent unless they say otherwise.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

#: The default endpoint timeout, in seconds.
DEFAULT_TIMEOUT = 30.0


def parse_version(text: str) -> Tuple[int, int, int]:
    """
    Parse a strict C{MAJOR.MINOR.PATCH} version.

    @param text: the version as written, e.g. C{"1.2.3"}.
    @return: the three numbers, comparable as a tuple.
    @raise InvalidDescriptor: if C{text} is not exactly three non-negative
        integers without leading zeros, each at most L{MAX_VERSION_PART}.
    """
    match = _SEMVER.match(text) if isinstance(text, str) else None
    if match is not None:
        parts = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if max(parts) <= MAX_VERSION_PART:
            return parts
    shown = repr(text[:40] + "...") if isinstance(text, str) and len(text) > 40 else repr(text)
    raise InvalidDescriptor(f"{shown} is not MAJOR.MINOR.PATCH (each part at most "
                            f"{MAX_VERSION_PART})")


def normalize_service_name(name: object) -> str:
    """
    Lower-case and check a service name.

    @param name: the name as announced.
    @return: the lower-cased name.
    @raise InvalidDescriptor: if it does not match C{[a-z0-9][a-z0-9._-]*}.
    """
    if not isinstance(name, str) or not _SERVICE_NAME.match(name.lower()):
        raise InvalidDescriptor(
            f"service name {quoted(name)} does not match [a-z0-9][a-z0-9._-]*"
        )
    return name.lower()


#: The longest instance id or region: room for the SDK's generated id
#: (C{service-host-pid-random}) with a long host name.
MAX_IDENTITY_CHARS = 256
#: What an instance id or a region may hold: printable ASCII without spaces.
_IDENTITY = re.compile(r"[!-~]+\Z")


def identity_problem(value: object) -> Optional[str]:
    """
    Why C{value} may not be an instance id or a region, or C{None}: it must
    be 1 to L{MAX_IDENTITY_CHARS} printable ASCII characters without spaces
    (U+0021 to U+007E), so that it reads as one word in every log line,
    table and metric label.

    @param value: the id or region as announced or configured.
    @return: the reason (showing the value escaped and cut), or C{None}.
    """
    if isinstance(value, str) and len(value) <= MAX_IDENTITY_CHARS and _IDENTITY.match(value):
        return None
    shown_value = quoted(value) if isinstance(value, str) else type(value).__name__
    return (f"must be 1 to {MAX_IDENTITY_CHARS} printable ASCII characters without spaces, "
            f"not {shown_value}")


def normalize_method(method: object) -> str:
    """
    Check an HTTP method token and return it upper-cased.

    @raise InvalidDescriptor: if it is not a token of letters.
    """
    if not isinstance(method, str) or not _METHOD.match(method.upper()):
        raise InvalidDescriptor(f"HTTP method {quoted(method)} is not a valid token")
    return method.upper()


#: The literal part of a catch-all segment in L{parse_path_template}'s
#: answer: C{("*", name)} for C{{*name}}, against C{("", name)} for C{{name}}.
CATCH_ALL = "*"


def parse_path_template(path: object) -> Tuple[Tuple[str, Optional[str]], ...]:
    """
    Check a path template and split it into segments.

    Templates start with C{/}; a segment is either a literal (RFC 3986
    characters) or C{{name}} for one parameter segment; the last segment may
    be C{{*name}}, a catch-all parameter that takes one or more segments
    (the rest of the path).  A trailing slash is ignored.

    @param path: the template, e.g. C{"/invoices/{id}"}, C{"/files/{*rest}"}.
    @return: one C{(literal, None)}, C{("", name)} or, for the catch-all,
        C{(CATCH_ALL, name)} pair per segment; C{"/"} gives an empty tuple.
    @raise InvalidDescriptor: for an empty segment, a bad character, a
        malformed or repeated parameter, a catch-all that is not last.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidDescriptor(f"path {path!r} must be a string starting with '/'")
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
        if not body:
            raise InvalidDescriptor(f"path {path!r} has an empty segment")
    if not body:
        return ()
    segments = []
    seen = set()
    raws = body.split("/")
    for index, raw in enumerate(raws):
        if not raw:
            raise InvalidDescriptor(f"path {path!r} has an empty segment")
        param = _PARAM.match(raw)
        rest = None if param is not None else _CATCH_ALL_PARAM.match(raw)
        if param is not None or rest is not None:
            name = (param or rest).group(1)  # type: ignore[union-attr]
            if name in seen:
                raise InvalidDescriptor(f"path {path!r} repeats parameter {name!r}")
            seen.add(name)
            if rest is not None and index != len(raws) - 1:
                raise InvalidDescriptor(f"path {path!r}: the catch-all {raw!r} must be the "
                                        "last segment")
            segments.append((CATCH_ALL if rest is not None else "", name))
        elif _LITERAL.match(raw):
            segments.append((raw, None))
        else:
            raise InvalidDescriptor(f"path {path!r} has a malformed segment {raw!r}")
    return tuple(segments)


def normalize_path_template(path: str) -> str:
    """
    Return the canonical spelling of a valid template (no trailing slash).

    @raise InvalidDescriptor: as L{parse_path_template}.
    """
    segments = parse_path_template(path)
    return "/" + "/".join(
        literal if name is None else "{" + (literal if literal == CATCH_ALL else "") + name + "}"
        for literal, name in segments
    )


def template_param_names(template: str) -> Tuple[str, ...]:
    """
    The parameter names of a valid template, in order (a catch-all's
    without its C{*}).
    """
    return tuple(segment[1:-1].lstrip("*") for segment in template.split("/")
                 if segment.startswith("{"))


def template_shape(template: str) -> str:
    """
    A valid path template with its parameter names removed: C{/echo/{}},
    C{/files/{*}}.  Two templates of one shape match the same paths.
    """
    return "/".join(("{*}" if s.startswith("{*") else "{}") if s.startswith("{") else s
                    for s in template.split("/"))


def is_catch_all(template: str) -> bool:
    """
    Whether a valid template ends with a catch-all parameter C{{*name}}.
    """
    return template.endswith("}") and "/{*" in template


@dataclass(frozen=True)
class ClaimRequirement:
    """
    One authorization requirement: the caller has a claim of C{type} and, if
    C{value} is given, one of its values equals it (a tuple means any-of).
    """

    type: str
    value: Union[str, Tuple[str, ...], None] = None


@dataclass(frozen=True)
class InstanceDescriptor:
    """
    The identity of one running microservice instance.
    """

    instance_id: str
    service_name: str
    version: str
    region: str


@dataclass(frozen=True)
class EndpointDescriptor:
    """
    One endpoint served by a microservice: identity is C{(method, path)}.

    @ivar default_timeout: seconds the gateway waits for the response.
    @ivar max_request_bytes: an optional lower request-size limit; it may
        only tighten the gateway's own limit.
    @ivar idempotent: C{None} means the default for the method.
    """

    service_name: str
    version: str
    method: str
    path: str
    default_timeout: float = DEFAULT_TIMEOUT
    supports_streaming: bool = False
    requiring_claims: Tuple[ClaimRequirement, ...] = ()
    max_request_bytes: Optional[int] = None
    idempotent: Optional[bool] = None

    @property
    def key(self) -> Tuple[str, str]:
        """
        The endpoint identity, C{(method, path)}.
        """
        return (self.method, self.path)

    @property
    def is_idempotent(self) -> bool:
        """
        Whether a retry is safe: explicit, or by method.
        """
        if self.idempotent is not None:
            return self.idempotent
        return self.method in IDEMPOTENT_METHODS


@dataclass(frozen=True)
class PayloadLimits:
    """
    Request-size limits of the gateway, in bytes.
    """

    max_request_bytes_per_call: int = 16 * 1024 * 1024
    max_request_bytes_per_connection: int = 64 * 1024 * 1024
    max_aggregate_inflight_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class RegistrationLimits:
    """
    What one microservice may ask of the gateway's routing table (issue 18,
    item 4): a HELLO or ENDPOINTS_UPDATE over these is refused, a
    connection over C{max_connections_per_peer_address} is closed before
    its HELLO.

    @ivar max_endpoints: endpoints in one HELLO or ENDPOINTS_UPDATE.
    @ivar max_path_length: characters in one path template.
    @ivar max_path_segments: segments in one path template.
    @ivar max_connections_per_peer_address: open connections from one
        peer host (every port, every listener).
    """

    max_endpoints: int = 1000
    max_path_length: int = 1024
    max_path_segments: int = 32
    max_connections_per_peer_address: int = 1000


class Frame(NamedTuple):
    """
    One protocol frame.  A named tuple: immutable and cheap to build on the
    hot path.

    @ivar type: the frame kind.
    @ivar correlation_id: ties a REQUEST to its RESPONSE, CANCEL and stream
        frames; for HELLO and HEARTBEAT any id.  The 16 wire bytes
        (L{CorrelationId}), not a C{uuid.UUID}: cheap to build, hash and
        compare on the hot path; C{str()} gives the GUID text.
    @ivar payload: the frame's data bytes, encoded per frame type.
    """

    type: FrameType
    correlation_id: CorrelationId
    payload: bytes


@dataclass
class ConnectionState:
    """
    What the gateway knows about one live microservice connection.  Mutable;
    owned by the gateway's routing state.
    """

    connection_id: str
    instance: InstanceDescriptor
    transport_type: TransportType
    endpoints: Dict[Tuple[str, str], EndpointDescriptor]
    connected_at: float
    status: InstanceHealthStatus = InstanceHealthStatus.HEALTHY
    last_heartbeat: float = 0.0
    average_ping_ms: Optional[float] = None
    in_flight: int = 0
    in_flight_bytes: int = 0
    peer: str = ""
    peer_identity: Tuple[str, ...] = ()
    max_frame_bytes: int = 1024 * 1024
    #: The endpoint descriptions of the HELLO (feature C{endpoint-schemas}).
    schemas: Optional[ServiceSchemas] = None


class RoutingContext(NamedTuple):
    """
    What the routing plugin knows about one HTTP request.  A named tuple:
    immutable, and one is built per request (cheaper than a frozen
    dataclass).

    @ivar requested_version: from C{X-Stella-Version}, or C{None}.
    @ivar deadline: absolute time (seconds, the gateway clock) or C{None}.
    @ivar body_size: bytes of the request body (a datagram transport can
        only carry small requests).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    endpoint: Tuple[str, str]
    service_name: str
    path_params: Mapping[str, str]
    requested_version: Optional[str]
    gateway_region: str
    deadline: Optional[float] = None
    body_size: int = 0


class RoutingDecision(NamedTuple):
    """
    The routing plugin's choice for one request (a named tuple, as
    L{RoutingContext}).
    """

    endpoint: EndpointDescriptor
    connection: "RoutableConnection"
    effective_timeout: float = DEFAULT_TIMEOUT


class RoutableConnection(Protocol):
    """
    What routing needs of a gateway-side connection: its state.
    """

    state: ConnectionState


@dataclass(frozen=True)
class RenderedDocument:
    """
    A serialized OpenAPI document and its strong entity tag (quoted): what
    an L{IOpenApiSource<stellarouter.common.interfaces.IOpenApiSource>}
    serves.
    """

    body: bytes
    etag: bytes
