"""
Payload encodings of each frame type (spec section 5.2, exact bytes in
C{docs/router/protocol.md}).

 - HELLO, HEARTBEAT, ENDPOINTS_UPDATE and CANCEL carry one UTF-8 JSON object.
 - REQUEST and RESPONSE carry C{header_length: u32 BE | header | body}, the
   header a JSON object or, between peers that agreed on
   L{COMPACT_HEADERS} in the HELLO exchange, the compact binary form
   (its first byte L{COMPACT_MARKER}, which no JSON text starts with).
 - REQUEST_STREAM_DATA and RESPONSE_STREAM_DATA carry C{flags: u8 | chunk}.

Every decoder raises L{MalformedPayload} (or L{InvalidDescriptor} for a
well-formed but invalid identity) and nothing else.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from dataclasses import dataclass
from struct import Struct
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .enums import CancelReason, InstanceHealthStatus
from .errors import InvalidDescriptor, MalformedPayload
from .schemas import optional_schemas
from .models import (
    ClaimRequirement,
    EndpointDescriptor,
    InstanceDescriptor,
    RegistrationLimits,
    normalize_method,
    normalize_path_template,
    normalize_service_name,
    parse_version,
)

#: Wire protocol version announced in HELLO.
PROTOCOL_VERSION = 1

#: The HELLO feature of a microservice that reads compact REQUEST headers;
#: a gateway that lists it in its HELLO answer reads compact RESPONSE
#: headers (docs/router/protocol.md, "Compact headers").
COMPACT_HEADERS = "compact-headers"

#: The HELLO feature of a microservice whose response streams start with no
#: credit: it sends a streamed body only as the gateway grants room, the
#: first window included; a gateway that lists it in its HELLO answer grants
#: that first window when the RESPONSE header arrives (docs/router/protocol.md,
#: "Flow control").  Without it a response stream starts with a whole window.
RESPONSE_CREDIT = "response-credit"

#: The first header byte of a compact REQUEST/RESPONSE header.
COMPACT_MARKER = 0x01

_HEADER_LENGTH = Struct(">I")
_INF = float("inf")
#: JSON string literal of a str, escaped as json.dumps(ensure_ascii=False) does.
_string = encode_basestring
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# NaN and Infinity are not JSON; Python's decoder accepts them unless told.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)
_loads = _DECODER.decode
# The decoder's own scanner (C), called directly for a document that starts
# and ends with its value, as every encoder here writes them: json.loads adds
# two Python calls and two whitespace regex matches per document.  Anything
# else (whitespace around, trailing data, an error) goes through _loads, so
# what is accepted and every error are exactly json's.
_scan: Callable[[str, int], Tuple[Any, int]] = getattr(_DECODER, "scan_once")

#: The largest endpoint timeout accepted in a HELLO: one day.
MAX_TIMEOUT = 86400.0

#: RFC 9110 token characters (header names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: Characters a header value may not contain.
_BAD_VALUE = re.compile(r"[\x00\r\n]|[^\x00-\xff]")

STREAM_END = 0x01
STREAM_ABORT = 0x02
STREAM_CREDIT = 0x04

#: Bytes a stream's sender may send before the receiver grants more
#: (per request, per direction; protocol.md "Flow control").
STREAM_WINDOW = 1024 * 1024

#: Header pairs, in order, names as sent.
HeaderList = List[Tuple[str, str]]


def _encode_json(obj: Mapping[str, Any]) -> bytes:
    return _dumps(obj).encode("utf-8")


def _decode_json(payload: bytes, what: str) -> Dict[str, Any]:
    try:
        text = payload.decode("utf-8")
        try:
            obj, end = _scan(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(text):
            obj = _loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedPayload(f"{what} payload is not UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MalformedPayload(f"{what} payload is not a JSON object")
    return obj


def _field(obj: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in obj:
        raise MalformedPayload(f"{what} is missing {name!r}")
    value = obj[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MalformedPayload(f"{what}.{name} must be {kind.__name__}")
    return value


def _optional(obj: Mapping[str, Any], name: str, kind: type, what: str, default: Any) -> Any:
    if obj.get(name) is None:
        return default
    return _field(obj, name, kind, what)


# -- HELLO ----------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """
    The first frame of a microservice connection: who it is and what it
    serves.
    """

    instance: InstanceDescriptor
    endpoints: Tuple[EndpointDescriptor, ...]
    heartbeat_interval: float = 5.0
    features: Tuple[str, ...] = ()
    protocol: int = PROTOCOL_VERSION
    #: The C{schemas} object (feature C{endpoint-schemas}, common/schemas.py), as sent.
    schemas: Optional[Mapping[str, Any]] = None


@dataclass(frozen=True)
class HelloAck:
    """
    The gateway's answer to a HELLO (sent as a HELLO frame with the same
    correlation id).  A rejection is followed by the gateway closing the
    connection.

    @ivar hello_again: (message transports) the gateway has no session for
        the sender of the frame this answers (it restarted, or forgot the
        peer): a registered microservice starts a new session (a new
        HELLO) at once.
    """

    accepted: bool
    reason: Optional[str] = None
    node_id: str = ""
    region: str = ""
    features: Tuple[str, ...] = ()
    hello_again: bool = False


def _claim_to_json(claim: ClaimRequirement) -> Dict[str, Any]:
    value: Any = list(claim.value) if isinstance(claim.value, tuple) else claim.value
    return {"type": claim.type, "value": value}


def _claim_from_json(obj: Any, what: str) -> ClaimRequirement:
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise MalformedPayload(f"{what} must be an object with a string 'type'")
    value = obj.get("value")
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise MalformedPayload(f"{what}.value must be a string or strings")
        return ClaimRequirement(obj["type"], tuple(value))
    if value is not None and not isinstance(value, str):
        raise MalformedPayload(f"{what}.value must be a string or strings")
    return ClaimRequirement(obj["type"], value)


def endpoint_to_json(endpoint: EndpointDescriptor) -> Dict[str, Any]:
    """
    The JSON form of one endpoint inside HELLO / ENDPOINTS_UPDATE (the
    service name and version come from the instance).
    """
    return {
        "method": endpoint.method,
        "path": endpoint.path,
        "default_timeout": endpoint.default_timeout,
        "supports_streaming": endpoint.supports_streaming,
        "requiring_claims": [_claim_to_json(c) for c in endpoint.requiring_claims],
        "max_request_bytes": endpoint.max_request_bytes,
        "idempotent": endpoint.idempotent,
    }


def endpoint_from_json(
    obj: Any, instance: InstanceDescriptor, what: str
) -> EndpointDescriptor:
    """
    Parse and validate one endpoint of a HELLO.

    @raise MalformedPayload: wrong shape.
    @raise InvalidDescriptor: bad method or path template.
    """
    if not isinstance(obj, dict):
        raise MalformedPayload(f"{what} must be an object")
    method = normalize_method(_field(obj, "method", str, what))
    path = _field(obj, "path", str, what)
    try:
        path = normalize_path_template(path)
    except InvalidDescriptor as e:
        raise InvalidDescriptor(f"{what}: {e}") from None
    timeout = _optional(obj, "default_timeout", float, what, 30.0)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise MalformedPayload(
            f"{what}.default_timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    claims = obj.get("requiring_claims") or []
    if not isinstance(claims, list):
        raise MalformedPayload(f"{what}.requiring_claims must be a list")
    max_bytes = _optional(obj, "max_request_bytes", int, what, None)
    if max_bytes is not None and max_bytes < 0:
        raise MalformedPayload(f"{what}.max_request_bytes must not be negative")
    return EndpointDescriptor(
        service_name=instance.service_name,
        version=instance.version,
        method=method,
        path=path,
        default_timeout=timeout,
        supports_streaming=_optional(obj, "supports_streaming", bool, what, False),
        requiring_claims=tuple(
            _claim_from_json(c, f"{what}.requiring_claims[{i}]")
            for i, c in enumerate(claims)
        ),
        max_request_bytes=max_bytes,
        idempotent=_optional(obj, "idempotent", bool, what, None),
    )


def encode_hello(hello: Hello) -> bytes:
    """
    Encode a HELLO payload.
    """
    i = hello.instance
    extra = {} if hello.schemas is None else {"schemas": hello.schemas}
    return _encode_json(
        {
            "protocol": hello.protocol,
            "instance": {
                "instance_id": i.instance_id,
                "service_name": i.service_name,
                "version": i.version,
                "region": i.region,
            },
            "endpoints": [endpoint_to_json(e) for e in hello.endpoints],
            "heartbeat_interval": hello.heartbeat_interval,
            "features": list(hello.features),
            **extra,
        }
    )


def decode_hello(payload: bytes, limits: Optional[RegistrationLimits] = None) -> Hello:
    """
    Decode and validate a HELLO payload.

    @param limits: caps on its endpoints (none by default).

    @raise MalformedPayload: not JSON, or a field of the wrong shape.
    @raise InvalidDescriptor: a bad service name, version, method or path, or
        the same endpoint twice.
    """
    obj = _decode_json(payload, "HELLO")
    protocol = _optional(obj, "protocol", int, "HELLO", PROTOCOL_VERSION)
    if protocol != PROTOCOL_VERSION:
        raise InvalidDescriptor(
            f"HELLO protocol version {protocol} is not supported "
            f"(this gateway speaks {PROTOCOL_VERSION})"
        )
    raw = _field(obj, "instance", dict, "HELLO")
    instance_id = _field(raw, "instance_id", str, "HELLO.instance")
    if not instance_id:
        raise MalformedPayload("HELLO.instance.instance_id must not be empty")
    service = normalize_service_name(_field(raw, "service_name", str, "HELLO.instance"))
    version = _field(raw, "version", str, "HELLO.instance")
    try:
        parse_version(version)
    except InvalidDescriptor as e:
        raise InvalidDescriptor(f"HELLO.instance.version: {e}") from None
    region = _field(raw, "region", str, "HELLO.instance")
    if not region:
        raise MalformedPayload("HELLO.instance.region must not be empty")
    instance = InstanceDescriptor(instance_id, service, version, region)
    endpoints = decode_endpoint_list(obj, instance, "HELLO", limits)
    interval = _optional(obj, "heartbeat_interval", float, "HELLO", 5.0)
    if not 0 < interval <= MAX_TIMEOUT:
        raise MalformedPayload("HELLO.heartbeat_interval must be a positive number of seconds")
    features = obj.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise MalformedPayload("HELLO.features must be a list of strings")
    return Hello(instance, endpoints, interval, tuple(features), protocol,
                 optional_schemas(obj, tuple(features)))


def decode_endpoint_list(
    obj: Mapping[str, Any], instance: InstanceDescriptor, what: str,
    limits: Optional[RegistrationLimits] = None,
) -> Tuple[EndpointDescriptor, ...]:
    """
    Decode the C{endpoints} list of a HELLO or ENDPOINTS_UPDATE.

    @param limits: caps on the number of endpoints and on each path, checked
        before anything is built from them.
    @raise MalformedPayload: wrong shape.
    @raise InvalidDescriptor: an invalid or duplicated endpoint, or one over
        C{limits}.
    """
    raw = _field(obj, "endpoints", list, what)
    if limits is not None:
        _check_limits(raw, limits, what)
    endpoints = []
    seen = set()
    for index, item in enumerate(raw):
        endpoint = endpoint_from_json(item, instance, f"{what}.endpoints[{index}]")
        if endpoint.key in seen:
            raise InvalidDescriptor(
                f"{what}.endpoints[{index}]: {endpoint.method} {endpoint.path} "
                "is announced twice"
            )
        seen.add(endpoint.key)
        endpoints.append(endpoint)
    return tuple(endpoints)


def encode_endpoints_update(endpoints: Sequence[EndpointDescriptor]) -> bytes:
    """
    Encode an ENDPOINTS_UPDATE payload: the connection's complete new
    endpoint set.
    """
    return _encode_json({"endpoints": [endpoint_to_json(e) for e in endpoints]})


def decode_endpoints_update(
    payload: bytes, instance: InstanceDescriptor,
    limits: Optional[RegistrationLimits] = None,
) -> Tuple[EndpointDescriptor, ...]:
    """
    Decode an ENDPOINTS_UPDATE payload for the connection's instance.

    @param limits: caps on its endpoints (none by default).
    @raise MalformedPayload: wrong shape.
    @raise InvalidDescriptor: an invalid or duplicated endpoint.
    """
    return decode_endpoint_list(
        _decode_json(payload, "ENDPOINTS_UPDATE"), instance, "ENDPOINTS_UPDATE", limits
    )


def _check_limits(raw: List[Any], limits: RegistrationLimits, what: str) -> None:
    """
    Refuse an endpoint list over C{limits} before validating its entries.

    @raise InvalidDescriptor: too many endpoints, a path too long or with
        too many segments.
    """
    if len(raw) > limits.max_endpoints:
        raise InvalidDescriptor(
            f"{what} announces {len(raw)} endpoints; at most {limits.max_endpoints} are "
            "accepted")
    for index, item in enumerate(raw):
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str):
            continue
        if len(path) > limits.max_path_length:
            raise InvalidDescriptor(
                f"{what}.endpoints[{index}]: a path of {len(path)} characters; at most "
                f"{limits.max_path_length} are accepted")
        segments = path.strip("/").count("/") + 1
        if segments > limits.max_path_segments:
            raise InvalidDescriptor(
                f"{what}.endpoints[{index}]: a path of {segments} segments; at most "
                f"{limits.max_path_segments} are accepted")


def encode_hello_ack(ack: HelloAck) -> bytes:
    """
    Encode the gateway's answer to a HELLO (C{features} only when there are
    some, so an answer without any is what it was before features).
    """
    obj: Dict[str, Any] = {
        "accepted": ack.accepted,
        "reason": ack.reason,
        "node_id": ack.node_id,
        "region": ack.region,
    }
    if ack.features:
        obj["features"] = list(ack.features)
    if ack.hello_again:
        obj["hello_again"] = True
    return _encode_json(obj)


def decode_hello_ack(payload: bytes) -> HelloAck:
    """
    Decode the gateway's answer to a HELLO.

    @raise MalformedPayload: if it is not one.
    """
    obj = _decode_json(payload, "HELLO ack")
    features = obj.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise MalformedPayload("HELLO ack.features must be a list of strings")
    return HelloAck(
        accepted=_field(obj, "accepted", bool, "HELLO ack"),
        reason=_optional(obj, "reason", str, "HELLO ack", None),
        node_id=_optional(obj, "node_id", str, "HELLO ack", ""),
        region=_optional(obj, "region", str, "HELLO ack", ""),
        features=tuple(features),
        hello_again=_optional(obj, "hello_again", bool, "HELLO ack", False),
    )


# -- HEARTBEAT, CANCEL ----------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """
    A microservice's periodic report, or (C{ping} set) a gateway ping that
    the microservice echoes unchanged.
    """

    instance_id: str = ""
    status: InstanceHealthStatus = InstanceHealthStatus.HEALTHY
    in_flight: int = 0
    error_rate: float = 0.0
    ping: Optional[float] = None
    #: A C{status} value no spelling of a known status matches (then
    #: C{status} is UNKNOWN: the HEARTBEAT still proves liveness).
    unknown_status: Optional[str] = None


def encode_heartbeat(beat: Heartbeat) -> bytes:
    """
    Encode a HEARTBEAT payload.
    """
    obj: Dict[str, Any] = {
        "instance_id": beat.instance_id,
        "status": beat.status.value,
        "in_flight": beat.in_flight,
        "error_rate": beat.error_rate,
    }
    if beat.ping is not None:
        obj["ping"] = beat.ping
    return _encode_json(obj)


def decode_heartbeat(payload: bytes) -> Heartbeat:
    """
    Decode a HEARTBEAT payload.

    A C{status} in no known spelling does not make the HEARTBEAT
    malformed: it is decoded as UNKNOWN with C{unknown_status} set.

    @raise MalformedPayload: wrong shape.
    """
    obj = _decode_json(payload, "HEARTBEAT")
    raw = obj.get("status", "healthy")
    status = parse_status(raw)
    return Heartbeat(
        instance_id=_optional(obj, "instance_id", str, "HEARTBEAT", ""),
        status=status if status is not None else InstanceHealthStatus.UNKNOWN,
        in_flight=_optional(obj, "in_flight", int, "HEARTBEAT", 0),
        error_rate=_optional(obj, "error_rate", float, "HEARTBEAT", 0.0),
        ping=_optional(obj, "ping", float, "HEARTBEAT", None),
        unknown_status=None if status is not None else repr(raw)[:64],
    )


def _spelling(value: str) -> str:
    """
    A wire value with case and underscores taken out: C{HEALTHY},
    C{healthy}, C{CLIENT_DISCONNECTED} and C{ClientDisconnected} all match.
    """
    return value.replace("_", "").replace("-", "").lower()


_STATUSES = {_spelling(s.value): s for s in InstanceHealthStatus}
_REASONS = {_spelling(r.value): r for r in CancelReason}


def parse_status(value: Any) -> Optional[InstanceHealthStatus]:
    """
    A HEARTBEAT status in any of its spellings (C{healthy} as sent,
    C{HEALTHY} as the spec writes it, any case), or L{None}.
    """
    return _STATUSES.get(_spelling(value)) if isinstance(value, str) else None


def parse_cancel_reason(value: Any) -> Optional[CancelReason]:
    """
    A CANCEL reason in any of its spellings (C{ClientDisconnected} as sent,
    C{CLIENT_DISCONNECTED} as the spec writes it, any case), or L{None}.
    """
    return _REASONS.get(_spelling(value)) if isinstance(value, str) else None


def encode_cancel(reason: CancelReason) -> bytes:
    """
    Encode a CANCEL payload.
    """
    return _encode_json({"reason": reason.value})


def decode_cancel(payload: bytes) -> CancelReason:
    """
    Decode a CANCEL payload.

    @raise MalformedPayload: wrong shape or unknown reason.
    """
    obj = _decode_json(payload, "CANCEL")
    reason = parse_cancel_reason(obj.get("reason"))
    if reason is None:
        raise MalformedPayload(f"CANCEL.reason {obj.get('reason')!r} is unknown")
    return reason


# -- REQUEST / RESPONSE ---------------------------------------------------


#: The default of a message's mappings (shared, so it must not change).
EMPTY: Mapping[str, Any] = MappingProxyType({})


class RequestMessage(NamedTuple):
    """
    A REQUEST frame's contents.  A named tuple, like L{Frame}: immutable, and
    built twice per proxied request (by the gateway and by the microservice)
    at a third of the cost of a frozen dataclass.

    @ivar path: the request path as received (percent-encoded).
    @ivar template: the endpoint's path template the gateway resolved.
    @ivar path_params: the template's parameters, percent-decoded.
    @ivar query: the raw query string, without C{?}.
    @ivar headers: forwarded headers, in order (hop-by-hop ones removed).
    @ivar deadline: absolute UNIX time after which nobody waits, or C{None}.
    @ivar streaming: the body follows as REQUEST_STREAM_DATA frames.
    """

    method: str
    path: str
    template: str
    path_params: Mapping[str, str] = EMPTY
    query: str = ""
    headers: Sequence[Tuple[str, str]] = ()
    claims: Mapping[str, Any] = EMPTY
    deadline: Optional[float] = None
    streaming: bool = False
    body: bytes = b""


class ResponseMessage(NamedTuple):
    """
    A RESPONSE frame's contents (a named tuple, as L{RequestMessage}).

    @ivar streaming: the body follows as RESPONSE_STREAM_DATA frames.
    """

    status: int
    headers: Sequence[Tuple[str, str]] = ()
    body: bytes = b""
    streaming: bool = False


def _with_header(header: Mapping[str, Any], body: bytes) -> bytes:
    encoded = _dumps(header).encode("utf-8")
    return _HEADER_LENGTH.pack(len(encoded)) + encoded + body


def _split_header(payload: bytes, what: str) -> Tuple[Dict[str, Any], bytes]:
    if len(payload) < 4:
        raise MalformedPayload(f"{what} payload is shorter than its header length")
    (length,) = _HEADER_LENGTH.unpack_from(payload)
    if length > len(payload) - 4:
        raise MalformedPayload(
            f"{what} header length {length} exceeds the {len(payload) - 4} bytes left"
        )
    return _decode_json(payload[4 : 4 + length], what), payload[4 + length :]


def header_problem(name: object, value: object) -> Optional[str]:
    """
    Why C{(name, value)} cannot be sent as an HTTP header, or C{None}.
    """
    if not isinstance(name, str) or not _TOKEN.match(name):
        return f"header name {name!r} is not an RFC 9110 token"
    if not isinstance(value, str) or _BAD_VALUE.search(value):
        return (f"value of header {name!r} must be a Latin-1 string without CR, LF or NUL, "
                f"not {value!r}")
    return None


_is_token = _TOKEN.match
_bad_value = _BAD_VALUE.search


def plain_headers(pairs: Sequence[Any]) -> bool:
    """
    Whether C{pairs} holds only C{(name, value)} tuples or lists of two
    C{str} that L{header_problem} accepts: the check of the common case in
    one pass.  C{False} also for pairs of other types (a C{str} subclass,
    say) that L{header_problem} may accept: ask it, pair by pair.
    """
    for pair in pairs:
        if (type(pair) is not tuple and type(pair) is not list) or len(pair) != 2:
            return False
        name, value = pair
        if (type(name) is not str or type(value) is not str or not _is_token(name)
                or _bad_value(value)):
            return False
    return True


def _headers_from_json(raw: Any, what: str) -> List[Tuple[str, str]]:
    """
    The header pairs of a REQUEST/RESPONSE header, checked.  A list that
    fails the quick checks here is walked again by L{_check_headers} to say
    what is wrong.
    """
    if type(raw) is list:
        headers = []
        for pair in raw:
            if type(pair) is not list or len(pair) != 2:
                break
            name, value = pair
            if (type(name) is not str or type(value) is not str or not _is_token(name)
                    or _bad_value(value)):
                break
            headers.append((name, value))
        else:
            return headers
    return _check_headers(raw, what)


def _check_headers(raw: Any, what: str) -> List[Tuple[str, str]]:
    """
    L{_headers_from_json}, pair by pair with the reason of the first bad one.
    """
    if not isinstance(raw, list):
        raise MalformedPayload(f"{what}.headers must be a list of [name, value]")
    headers = []
    for pair in raw:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or not isinstance(pair[1], str)
        ):
            raise MalformedPayload(f"{what}.headers must be a list of [name, value]")
        if not _TOKEN.match(pair[0]) or _BAD_VALUE.search(pair[1]):
            raise MalformedPayload(
                f"{what}.headers has an invalid header {pair[0]!r}: names are RFC 9110 "
                "tokens, values Latin-1 without CR, LF or NUL")
        headers.append((pair[0], pair[1]))
    return headers


def _plain(value: Any) -> Any:
    """
    C{value}, or a C{dict} copy of a read-only mapping (which C{json} cannot
    write).
    """
    return dict(value) if isinstance(value, MappingProxyType) else value


def encode_request(message: RequestMessage, compact: bool = False) -> bytes:
    """
    Encode a REQUEST payload.

    @param compact: write the compact header (for a microservice that
        announced L{COMPACT_HEADERS}); a message it cannot hold (a NUL in a
        string, values of unusual types) is written as JSON, which every
        decoder reads as well.
    """
    if compact:
        try:
            return _request_compact(message)
        except (TypeError, ValueError, AttributeError):
            pass
    try:
        return _pack_header(_request_json(message), message.body)
    except (TypeError, ValueError, AttributeError):
        pass  # a value of an unusual type or shape: the general encoder copes
    return _with_header(
        {
            "method": message.method,
            "path": message.path,
            "template": message.template,
            "params": _plain(message.path_params),
            "query": message.query,
            "headers": message.headers,
            "claims": _plain(message.claims),
            "deadline": message.deadline,
            "streaming": message.streaming,
        },
        message.body,
    )


# REQUEST and RESPONSE headers have a fixed shape, so they are written out
# field by field with the json module's own string escaping: the same bytes as
# json.dumps (tests/unit/test_payloads.py checks it), at half the cost, since
# json.dumps builds a new encoder object on every call.  Only claims (any
# JSON) go through json.dumps, and only when there are some.


def _pack_header(text: str, body: bytes) -> bytes:
    encoded = text.encode("utf-8")
    return _HEADER_LENGTH.pack(len(encoded)) + encoded + body


def _json_number(value: Any) -> str:
    if type(value) is float and value == value and value not in (_INF, -_INF):
        return float.__repr__(value)
    return _dumps(value)


def _json_headers(headers: Sequence[Tuple[str, str]]) -> str:
    """
    @raise TypeError: not a list or tuple of (name, value) tuples or lists
        (a string of two characters would unpack as a pair).
    """
    if type(headers) is not list and type(headers) is not tuple:
        raise TypeError("headers")
    out = []
    for pair in headers:
        if type(pair) is not tuple and type(pair) is not list:
            raise TypeError("header pair")
        name, value = pair
        out.append(f"[{_string(name)},{_string(value)}]")
    return ",".join(out)


def _request_json(message: RequestMessage) -> str:
    # One f-string (built in one step) rather than a chain of + (a new
    # string per piece).
    params, claims = message.path_params, message.claims
    deadline, streaming = message.deadline, message.streaming
    return (
        f'{{"method":{_string(message.method)},"path":{_string(message.path)},'
        f'"template":{_string(message.template)},"params":{{'
        f'{",".join([_string(k) + ":" + _string(v) for k, v in params.items()])}'
        f'}},"query":{_string(message.query)},"headers":[{_json_headers(message.headers)}],'
        f'"claims":'
        f'{"{}" if claims is EMPTY or (type(claims) is dict and not claims) else _dumps(claims)},'
        f'"deadline":{"null" if deadline is None else _json_number(deadline)},"streaming":'
        f'{"true" if streaming is True else "false" if streaming is False else _dumps(streaming)}}}'
    )


def decode_request(payload: bytes) -> RequestMessage:
    """
    Decode a REQUEST payload.

    @raise MalformedPayload: bad header length, JSON or field shapes.
    """
    if len(payload) > 4 and payload[4] == COMPACT_MARKER:
        return _decode_request_compact(payload)
    header, body = _split_header(payload, "REQUEST")
    get = header.get
    method, path, template = get("method"), get("path"), get("template")
    params, query, claims = get("params") or {}, get("query"), get("claims") or {}
    deadline, streaming = get("deadline"), get("streaming")
    # One combined check for a well-formed header; the field-by-field checks
    # below only run to word the error.
    if not (type(method) is str and type(path) is str and type(template) is str
            and (query is None or type(query) is str)
            and (deadline is None or type(deadline) is float)
            and (streaming is None or type(streaming) is bool)
            and type(params) is dict and type(claims) is dict
            and (not params or all(type(v) is str for v in params.values()))):
        return _decode_request_slowly(header, body)
    return RequestMessage(method, path, template, params, query or "",
                          _headers_from_json(get("headers", []), "REQUEST"), claims, deadline,
                          bool(streaming), body)


def _decode_request_slowly(header: Dict[str, Any], body: bytes) -> RequestMessage:
    """
    L{decode_request} for a header that failed the quick check: each field
    checked in turn, so the error names the first bad one.
    """
    params = header.get("params") or {}
    if not isinstance(params, dict) or not all(
        isinstance(v, str) for v in params.values()
    ):
        raise MalformedPayload("REQUEST.params must map names to strings")
    claims = header.get("claims") or {}
    if not isinstance(claims, dict):
        raise MalformedPayload("REQUEST.claims must be an object")
    return RequestMessage(
        method=_field(header, "method", str, "REQUEST"),
        path=_field(header, "path", str, "REQUEST"),
        template=_field(header, "template", str, "REQUEST"),
        path_params=params,
        query=_optional(header, "query", str, "REQUEST", ""),
        headers=_headers_from_json(header.get("headers", []), "REQUEST"),
        claims=claims,
        deadline=_optional(header, "deadline", float, "REQUEST", None),
        streaming=_optional(header, "streaming", bool, "REQUEST", False),
        body=body,
    )


def encode_response(message: ResponseMessage, compact: bool = False) -> bytes:
    """
    Encode a RESPONSE payload.

    @param compact: write the compact header (for a gateway that listed
        L{COMPACT_HEADERS} in its HELLO answer); as L{encode_request}, a
        message it cannot hold is written as JSON.
    """
    status = message.status
    if compact and type(status) is int and 0 <= status <= 0xFFFF:
        try:
            return _response_compact(message)
        except (TypeError, ValueError):
            pass
    if type(status) is int and type(message.streaming) is bool:
        try:
            return _pack_header(
                '{"status":' + int.__repr__(status)
                + ',"headers":[' + _json_headers(message.headers)
                + '],"streaming":' + ("true" if message.streaming else "false") + "}",
                message.body)
        except (TypeError, ValueError):
            pass  # a header of an unusual type or shape: the general encoder copes
    return _with_header(
        {
            "status": message.status,
            "headers": message.headers,
            "streaming": message.streaming,
        },
        message.body,
    )


def decode_response(payload: bytes) -> ResponseMessage:
    """
    Decode a RESPONSE payload.

    @raise MalformedPayload: bad header length, JSON, field shapes, or a
        status outside 100-599.
    """
    if len(payload) > 4 and payload[4] == COMPACT_MARKER:
        return _decode_response_compact(payload)
    header, body = _split_header(payload, "RESPONSE")
    status, streaming = header.get("status"), header.get("streaming")
    if type(status) is not int:
        status = _field(header, "status", int, "RESPONSE")
    if not 200 <= status <= 599:
        raise MalformedPayload(f"RESPONSE.status {status} is not a final HTTP status (200-599)")
    if streaming is not None and type(streaming) is not bool:
        streaming = _field(header, "streaming", bool, "RESPONSE")
    return ResponseMessage(status, _headers_from_json(header.get("headers", []), "RESPONSE"),
                           body, bool(streaming))


# -- compact REQUEST / RESPONSE headers -------------------------------------
#
# docs/router/protocol.md, "Compact headers".  The strings of a header travel
# as one UTF-8 text, each followed by a NUL: the fixed fields of a REQUEST
# (method, path, template, query), then the header pairs.  Header names are
# tokens and values may not hold NUL, so one C split takes the text apart and
# one regular expression checks every header pair at once; the JSON form
# needs a scanner pass and a check per header.  Parameters and claims (any
# text, any JSON) stay JSON, and are usually absent.

#: marker, flags, deadline, parameters length, claims length.
_COMPACT_REQUEST = Struct(">BBdII")
#: marker, status, flags.
_COMPACT_RESPONSE = Struct(">BHB")
#: The same, after the header length.
_COMPACT_REQUEST_HEAD = Struct(">I" + _COMPACT_REQUEST.format[1:])
_COMPACT_RESPONSE_HEAD = Struct(">I" + _COMPACT_RESPONSE.format[1:])
_COMPACT_STREAMING = 0x01
_COMPACT_DEADLINE = 0x02
#: Header pairs as NUL-terminated name and value: a token, and Latin-1
#: without NUL, CR or LF.
_COMPACT_PAIRS = re.compile(
    r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+\x00[\x01-\x09\x0b\x0c\x0e-\xff]*\x00)*\Z")


def _compact_text(fields: List[str], headers: Sequence[Tuple[str, str]]) -> bytes:
    """
    C{fields}, then each header's name and value, each followed by a NUL,
    as UTF-8.

    @raise TypeError: a pair, name or value of another type.
    @raise ValueError: a NUL inside a string (it would end it early).
    """
    if type(headers) is not list and type(headers) is not tuple:
        raise TypeError("headers")
    for pair in headers:
        if type(pair) is not tuple and type(pair) is not list:
            raise TypeError("header pair")
        name, value = pair
        fields.append(name)
        fields.append(value)
    fields.append("")
    text = "\0".join(fields)  # TypeError for anything but a str
    if text.count("\0") != len(fields) - 1:
        raise ValueError("NUL in a string")
    return text.encode("utf-8")


def _compact_json(value: Mapping[str, Any]) -> bytes:
    if not value:
        return b""
    return _dumps(value if type(value) is dict else dict(value)).encode("utf-8")


def _request_compact(message: RequestMessage) -> bytes:
    deadline, streaming = message.deadline, message.streaming
    if type(streaming) is not bool or (deadline is not None and type(deadline) is not float):
        raise TypeError("streaming or deadline")
    text = _compact_text(
        [message.method, message.path, message.template, message.query], message.headers)
    params, claims = _compact_json(message.path_params), _compact_json(message.claims)
    flags = (_COMPACT_STREAMING if streaming else 0) | (
        0 if deadline is None else _COMPACT_DEADLINE)
    fixed = _COMPACT_REQUEST.pack(
        COMPACT_MARKER, flags, 0.0 if deadline is None else deadline, len(params), len(claims))
    return b"".join((
        _HEADER_LENGTH.pack(len(fixed) + len(text) + len(params) + len(claims)),
        fixed, text, params, claims, message.body))


def _response_compact(message: ResponseMessage) -> bytes:
    if type(message.streaming) is not bool:
        raise TypeError("streaming")
    text = _compact_text([], message.headers)
    return b"".join((
        _HEADER_LENGTH.pack(_COMPACT_RESPONSE.size + len(text)),
        _COMPACT_RESPONSE.pack(COMPACT_MARKER, message.status,
                               _COMPACT_STREAMING if message.streaming else 0),
        text, message.body))


def _compact_header_problem(payload: bytes, fixed: Struct, what: str) -> MalformedPayload:
    """
    What is wrong with the header length of compact C{payload}.
    """
    (length,) = _HEADER_LENGTH.unpack_from(payload)
    if length > len(payload) - 4:
        return MalformedPayload(
            f"{what} header length {length} exceeds the {len(payload) - 4} bytes left")
    return MalformedPayload(f"{what} compact header of {length} bytes is shorter than "
                            f"its {fixed.size} fixed bytes")


def _compact_pairs_problem(text: str, what: str) -> MalformedPayload:
    """
    What is wrong with the header pairs of a compact header: the layout, or
    the first invalid pair.
    """
    parts = text.split("\0")
    if parts[-1] != "" or len(parts) % 2 != 1:
        return MalformedPayload(f"{what}.headers are not NUL-terminated name and value pairs")
    it = iter(parts)
    try:
        _check_headers([list(pair) for pair in zip(it, it)], what)
    except MalformedPayload as e:
        return e
    raise AssertionError(f"valid pairs refused: {text!r}")  # pragma: no cover


_COMPACT_REQUEST_END = 4 + _COMPACT_REQUEST.size
_COMPACT_RESPONSE_END = 4 + _COMPACT_RESPONSE.size
_pairs_ok = _COMPACT_PAIRS.match


def _decode_request_compact(payload: bytes) -> RequestMessage:
    start = _COMPACT_REQUEST_END
    if len(payload) < start:
        raise _compact_header_problem(payload, _COMPACT_REQUEST, "REQUEST")
    length, _, flags, deadline, params_length, claims_length = _COMPACT_REQUEST_HEAD.unpack_from(
        payload)
    end = 4 + length
    if end > len(payload) or end < start:
        raise _compact_header_problem(payload, _COMPACT_REQUEST, "REQUEST")
    text_end = end - params_length - claims_length
    if text_end < start:
        raise MalformedPayload(
            f"REQUEST parameters ({params_length} bytes) and claims ({claims_length} bytes) "
            f"exceed the compact header")
    try:
        text = payload[start:text_end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedPayload(f"REQUEST compact header is not UTF-8: {e}") from None
    fields = text.split("\0", 4)
    if len(fields) != 5:
        raise MalformedPayload("REQUEST compact header lacks method, path, template or query")
    method, path, template, query, rest = fields
    if not _pairs_ok(rest):
        raise _compact_pairs_problem(rest, "REQUEST")
    it = iter(rest.split("\0"))
    if flags & _COMPACT_DEADLINE:
        if deadline != deadline or deadline in (_INF, -_INF):
            raise MalformedPayload(f"REQUEST.deadline {deadline} is not a finite number")
    else:
        deadline = None
    params: Dict[str, Any] = {}
    claims: Dict[str, Any] = {}
    if params_length:
        params = _decode_json(payload[text_end : text_end + params_length], "REQUEST params")
        if not all(type(v) is str for v in params.values()):
            raise MalformedPayload("REQUEST.params must map names to strings")
    if claims_length:
        claims = _decode_json(payload[text_end + params_length : end], "REQUEST claims")
    return RequestMessage(method, path, template, params, query, list(zip(it, it)), claims,
                          deadline, bool(flags & _COMPACT_STREAMING), payload[end:])


def _decode_response_compact(payload: bytes) -> ResponseMessage:
    start = _COMPACT_RESPONSE_END
    if len(payload) < start:
        raise _compact_header_problem(payload, _COMPACT_RESPONSE, "RESPONSE")
    length, _, status, flags = _COMPACT_RESPONSE_HEAD.unpack_from(payload)
    end = 4 + length
    if end > len(payload) or end < start:
        raise _compact_header_problem(payload, _COMPACT_RESPONSE, "RESPONSE")
    if not 200 <= status <= 599:
        raise MalformedPayload(f"RESPONSE.status {status} is not a final HTTP status (200-599)")
    try:
        text = payload[start:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedPayload(f"RESPONSE compact header is not UTF-8: {e}") from None
    if not _pairs_ok(text):
        raise _compact_pairs_problem(text, "RESPONSE")
    it = iter(text.split("\0"))
    return ResponseMessage(status, list(zip(it, it)), payload[end:],
                           bool(flags & _COMPACT_STREAMING))


# -- stream data ------------------------------------------------------------


def encode_stream_data(chunk: bytes, end: bool = False, abort: bool = False) -> bytes:
    """
    Encode a REQUEST_STREAM_DATA / RESPONSE_STREAM_DATA payload.
    """
    flags = (STREAM_END if end else 0) | (STREAM_ABORT if abort else 0)
    return bytes((flags,)) + chunk


def decode_stream_data(payload: bytes) -> Tuple[bytes, bool, bool]:
    """
    Decode a stream-data payload.

    @return: C{(chunk, end, abort)}.
    @raise MalformedPayload: empty payload, unknown flag bits, or a credit
        frame (see L{stream_credit}).
    """
    if not payload:
        raise MalformedPayload("stream data payload has no flags byte")
    flags = payload[0]
    if flags & ~(STREAM_END | STREAM_ABORT):
        raise MalformedPayload(f"stream data flags {flags:#04x} has unknown bits")
    return payload[1:], bool(flags & STREAM_END), bool(flags & STREAM_ABORT)


def encode_credit(amount: int) -> bytes:
    """
    Encode a credit grant: C{flags = 0x04 | amount: u32 BE}.  It travels
    against the stream (a RESPONSE stream's credit in REQUEST_STREAM_DATA
    frames, a REQUEST stream's in RESPONSE_STREAM_DATA frames).
    """
    return bytes((STREAM_CREDIT,)) + _HEADER_LENGTH.pack(amount)


def stream_credit(payload: bytes) -> Optional[int]:
    """
    The amount of a credit grant, or C{None} if C{payload} is stream data.

    @raise MalformedPayload: a credit frame of the wrong size or amount 0.
    """
    if not payload or payload[0] != STREAM_CREDIT:
        return None
    if len(payload) != 5:
        raise MalformedPayload("a credit frame is flags 0x04 and a u32 amount")
    (amount,) = _HEADER_LENGTH.unpack_from(payload, 1)
    if amount == 0:
        raise MalformedPayload("a credit frame grants at least one byte")
    return int(amount)
