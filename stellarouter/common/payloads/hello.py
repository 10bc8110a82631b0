"""
HELLO, its answer and ENDPOINTS_UPDATE: a microservice's identity and
endpoints, checked against the gateway's registration limits, and the
features the two sides agree on (C{docs/router/protocol.md}, "HELLO").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import InvalidDescriptor, MalformedPayload
from ..jsonvalue import JSONValue
from ..models import (
    ClaimRequirement,
    EndpointDescriptor,
    InstanceDescriptor,
    RegistrationLimits,
    identity_problem,
    normalize_method,
    normalize_path_template,
    normalize_service_name,
    parse_version,
)
from ..schemas import optional_schemas
from ._json import decode_json, encode_json, is_string_list, json_field, json_optional

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

#: The largest endpoint timeout accepted in a HELLO: one day.
MAX_TIMEOUT = 86400.0


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
    schemas: JSONValue = None


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


def _claim_to_json(claim: ClaimRequirement) -> Dict[str, object]:
    value: object = list(claim.value) if isinstance(claim.value, tuple) else claim.value
    return {"type": claim.type, "value": value}


def _claim_from_json(obj: object, what: str) -> ClaimRequirement:
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


def endpoint_to_json(endpoint: EndpointDescriptor) -> Dict[str, object]:
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
    obj: object, instance: InstanceDescriptor, what: str
) -> EndpointDescriptor:
    """
    Parse and validate one endpoint of a HELLO.

    @raise MalformedPayload: wrong shape.
    @raise InvalidDescriptor: bad method or path template.
    """
    if not isinstance(obj, dict):
        raise MalformedPayload(f"{what} must be an object")
    method = normalize_method(json_field(obj, "method", str, what))
    path = json_field(obj, "path", str, what)
    try:
        path = normalize_path_template(path)
    except InvalidDescriptor as e:
        raise InvalidDescriptor(f"{what}: {e}") from None
    timeout = json_optional(obj, "default_timeout", float, what, 30.0)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise MalformedPayload(
            f"{what}.default_timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    claims = obj.get("requiring_claims") or []
    if not isinstance(claims, list):
        raise MalformedPayload(f"{what}.requiring_claims must be a list")
    max_bytes = json_optional(obj, "max_request_bytes", int, what, None)
    if max_bytes is not None and max_bytes < 0:
        raise MalformedPayload(f"{what}.max_request_bytes must not be negative")
    return EndpointDescriptor(
        service_name=instance.service_name,
        version=instance.version,
        method=method,
        path=path,
        default_timeout=timeout,
        supports_streaming=json_optional(obj, "supports_streaming", bool, what, False),
        requiring_claims=tuple(
            _claim_from_json(c, f"{what}.requiring_claims[{i}]")
            for i, c in enumerate(claims)
        ),
        max_request_bytes=max_bytes,
        idempotent=json_optional(obj, "idempotent", bool, what, None),
    )


def encode_hello(hello: Hello) -> bytes:
    """
    Encode a HELLO payload.
    """
    i = hello.instance
    extra = {} if hello.schemas is None else {"schemas": hello.schemas}
    return encode_json(
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
    obj = decode_json(payload, "HELLO")
    protocol = json_optional(obj, "protocol", int, "HELLO", PROTOCOL_VERSION)
    if protocol != PROTOCOL_VERSION:
        raise InvalidDescriptor(
            f"HELLO protocol version {protocol} is not supported "
            f"(this gateway speaks {PROTOCOL_VERSION})"
        )
    raw = json_field(obj, "instance", dict, "HELLO")
    instance_id = json_field(raw, "instance_id", str, "HELLO.instance")
    problem = identity_problem(instance_id)
    if problem is not None:
        raise MalformedPayload(f"HELLO.instance.instance_id {problem}")
    service = normalize_service_name(json_field(raw, "service_name", str, "HELLO.instance"))
    version = json_field(raw, "version", str, "HELLO.instance")
    try:
        parse_version(version)
    except InvalidDescriptor as e:
        raise InvalidDescriptor(f"HELLO.instance.version: {e}") from None
    region = json_field(raw, "region", str, "HELLO.instance")
    problem = identity_problem(region)
    if problem is not None:
        raise MalformedPayload(f"HELLO.instance.region {problem}")
    instance = InstanceDescriptor(instance_id, service, version, region)
    endpoints = decode_endpoint_list(obj, instance, "HELLO", limits)
    interval = json_optional(obj, "heartbeat_interval", float, "HELLO", 5.0)
    if not 0 < interval <= MAX_TIMEOUT:
        raise MalformedPayload("HELLO.heartbeat_interval must be a positive number of seconds")
    features = obj.get("features") or []
    if not is_string_list(features):
        raise MalformedPayload("HELLO.features must be a list of strings")
    return Hello(instance, endpoints, interval, tuple(features), protocol,
                 optional_schemas(obj, tuple(features)))


def decode_endpoint_list(
    obj: Mapping[str, object], instance: InstanceDescriptor, what: str,
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
    raw = json_field(obj, "endpoints", list, what)
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
    return encode_json({"endpoints": [endpoint_to_json(e) for e in endpoints]})


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
        decode_json(payload, "ENDPOINTS_UPDATE"), instance, "ENDPOINTS_UPDATE", limits
    )


def _check_limits(raw: List[object], limits: RegistrationLimits, what: str) -> None:
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
    obj: Dict[str, object] = {
        "accepted": ack.accepted,
        "reason": ack.reason,
        "node_id": ack.node_id,
        "region": ack.region,
    }
    if ack.features:
        obj["features"] = list(ack.features)
    if ack.hello_again:
        obj["hello_again"] = True
    return encode_json(obj)


def decode_hello_ack(payload: bytes) -> HelloAck:
    """
    Decode the gateway's answer to a HELLO.

    @raise MalformedPayload: if it is not one.
    """
    obj = decode_json(payload, "HELLO ack")
    features = obj.get("features") or []
    if not is_string_list(features):
        raise MalformedPayload("HELLO ack.features must be a list of strings")
    return HelloAck(
        accepted=json_field(obj, "accepted", bool, "HELLO ack"),
        reason=json_optional(obj, "reason", str, "HELLO ack", None),
        node_id=json_optional(obj, "node_id", str, "HELLO ack", ""),
        region=json_optional(obj, "region", str, "HELLO ack", ""),
        features=tuple(features),
        hello_again=json_optional(obj, "hello_again", bool, "HELLO ack", False),
    )

