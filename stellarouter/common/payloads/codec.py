"""
REQUEST and RESPONSE payloads: C{header_length: u32 BE | header | body}.

The one encoder of each checks the message once, then writes the compact
header when the peer agreed on it and the message fits it (no NUL inside a
string), else the JSON header, which every decoder reads.  A message whose
fields are not of the types L{RequestMessage} and L{ResponseMessage}
document is a bug of the caller: C{TypeError}, never a frame a peer would
refuse.  The decoders tell the two forms apart by the header's first byte.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .compact import (
    COMPACT_MARKER,
    decode_request_compact,
    decode_response_compact,
    request_compact,
    response_compact,
)
from .json_form import decode_request_json, decode_response_json, request_json, response_json
from .messages import EMPTY, RequestMessage, ResponseMessage


def _pairs_problem(headers: Sequence[Any]) -> bool:
    if type(headers) is not list and type(headers) is not tuple:
        return True
    for pair in headers:
        if (type(pair) is not tuple and type(pair) is not list) or len(pair) != 2:
            return True
        if not isinstance(pair[0], str) or not isinstance(pair[1], str):
            return True
    return False


def _mapping_problem(value: Mapping[str, Any], values: type) -> bool:
    if value is EMPTY:
        return False
    if not isinstance(value, Mapping):
        return True
    return values is str and not all(isinstance(v, str) for v in value.values())


def _request_problem(m: RequestMessage) -> bool:
    deadline = m.deadline
    return not (
        isinstance(m.method, str) and isinstance(m.path, str) and isinstance(m.template, str)
        and isinstance(m.query, str) and type(m.streaming) is bool and type(m.body) is bytes
        and (deadline is None
             or (isinstance(deadline, (int, float)) and not isinstance(deadline, bool)))
    ) or _mapping_problem(m.path_params, str) or _mapping_problem(m.claims, object) \
        or _pairs_problem(m.headers)


def encode_request(message: RequestMessage, compact: bool = False) -> bytes:
    """
    Encode a REQUEST payload.

    @param compact: write the compact header (for a microservice that
        announced L{COMPACT_HEADERS}); a message it cannot hold (a NUL in a
        string) is written as JSON.
    @raise TypeError: a field of another type than L{RequestMessage} says.
    """
    if _request_problem(message):
        raise TypeError(f"not a valid RequestMessage: {message!r:.200}")
    if compact:
        payload = request_compact(message)
        if payload is not None:
            return payload
    return request_json(message)


def encode_response(message: ResponseMessage, compact: bool = False) -> bytes:
    """
    Encode a RESPONSE payload.

    @param compact: write the compact header (for a gateway that listed
        L{COMPACT_HEADERS} in its HELLO answer); as L{encode_request}, a
        message it cannot hold is written as JSON.
    @raise TypeError: a field of another type than L{ResponseMessage} says.
    """
    status = message.status
    if ((type(status) is not int and (not isinstance(status, int) or isinstance(status, bool)))
            or type(message.streaming) is not bool or type(message.body) is not bytes
            or _pairs_problem(message.headers)):
        raise TypeError(f"not a valid ResponseMessage: {message!r:.200}")
    if compact:
        payload = response_compact(message)
        if payload is not None:
            return payload
    return response_json(message)


def decode_request(payload: bytes) -> RequestMessage:
    """
    Decode a REQUEST payload, either form.

    @raise MalformedPayload: bad header length, JSON or field shapes.
    """
    if len(payload) > 4 and payload[4] == COMPACT_MARKER:
        return decode_request_compact(payload)
    return decode_request_json(payload)


def decode_response(payload: bytes) -> ResponseMessage:
    """
    Decode a RESPONSE payload, either form.

    @raise MalformedPayload: bad header length, JSON, field shapes, or a
        status outside 200-599.
    """
    if len(payload) > 4 and payload[4] == COMPACT_MARKER:
        return decode_response_compact(payload)
    return decode_response_json(payload)
