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

from typing import Mapping

from .compact import (
    COMPACT_MARKER,
    decode_request_compact,
    decode_response_compact,
    request_compact,
    response_compact,
)
from .json_form import decode_request_json, decode_response_json, request_json, response_json
from .messages import EMPTY, RequestMessage, ResponseMessage


def _request_problem(m: RequestMessage) -> bool:
    """
    Whether a field of C{m} that the writers would not refuse themselves is
    of another type than L{RequestMessage} says.  The writers refuse the
    rest as they go (C{TypeError} for a string, pair or body of another
    type, C{ValueError} for a pair that is not two items), so nothing is
    checked twice.
    """
    params, claims, deadline = m.path_params, m.claims, m.deadline
    headers = m.headers
    return ((type(headers) is not list and type(headers) is not tuple)
            or type(m.streaming) is not bool
            or (deadline is not None and type(deadline) is not float
                and (type(deadline) is not int))
            or (type(params) is not dict and params is not EMPTY
                and not isinstance(params, Mapping))
            or (type(claims) is not dict and claims is not EMPTY
                and not isinstance(claims, Mapping)))


def encode_request(message: RequestMessage, compact: bool = False) -> bytes:
    """
    Encode a REQUEST payload.

    @param compact: write the compact header (for a microservice that
        announced L{COMPACT_HEADERS}); a message it cannot hold (a NUL in a
        string) is written as JSON.
    @raise TypeError: a field of another type than L{RequestMessage} says.
    @raise ValueError: a header pair that is not two items.
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
    @raise ValueError: a header pair that is not two items.
    """
    status = message.status
    if ((type(status) is not int and (not isinstance(status, int) or isinstance(status, bool)))
            or type(message.streaming) is not bool
            or (type(message.headers) is not list and type(message.headers) is not tuple)):
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
