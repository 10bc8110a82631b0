"""
The JSON form of a REQUEST and RESPONSE header: C{header_length: u32 BE |
JSON object | body}.  Every peer reads it; it is what a peer writes unless
both sides agreed on the compact form (L{stellarouter.common.payloads.compact}).

The headers have a fixed shape, so they are written field by field with the
json module's own string escaping: the same bytes as C{json.dumps}
(tests/unit/test_payloads.py checks it), at half the cost, since
C{json.dumps} builds a new encoder object on every call.  Only claims (any
JSON) go through the general encoder, and only when there are some.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from ..errors import MalformedPayload
from ..jsonvalue import JSONObject
from ._json import (
    INF, LENGTH, decode_json, dumps, is_string_map, json_field, json_optional, json_string,
)
from .headers import decode_headers
from .messages import RequestMessage, ResponseMessage


def _pack(text: str, body: bytes) -> bytes:
    encoded = text.encode("utf-8")
    return LENGTH.pack(len(encoded)) + encoded + body


def _number(value: float) -> str:
    if type(value) is float and value == value and value not in (INF, -INF):
        return float.__repr__(value)
    return dumps(value)


def _headers(headers: Sequence[Tuple[str, str]]) -> str:
    return ",".join([f"[{json_string(name)},{json_string(value)}]" for name, value in headers])


def request_json(message: RequestMessage) -> bytes:
    """
    A REQUEST payload with a JSON header, for a message
    L{stellarouter.common.payloads.codec} has checked.
    """
    params, claims, deadline = message.path_params, message.claims, message.deadline
    return _pack(
        f'{{"method":{json_string(message.method)},"path":{json_string(message.path)},'
        f'"template":{json_string(message.template)},"params":{{'
        f'{",".join([json_string(k) + ":" + json_string(v) for k, v in params.items()])}'
        f'}},"query":{json_string(message.query)},"headers":[{_headers(message.headers)}],'
        f'"claims":{dumps(dict(claims)) if claims else "{}"},'
        f'"deadline":{"null" if deadline is None else _number(deadline)},'
        f'"streaming":{"true" if message.streaming else "false"}}}',
        message.body)


def response_json(message: ResponseMessage) -> bytes:
    """
    A RESPONSE payload with a JSON header, for a checked message.
    """
    return _pack(
        f'{{"status":{int.__repr__(message.status)},"headers":[{_headers(message.headers)}],'
        f'"streaming":{"true" if message.streaming else "false"}}}',
        message.body)


def _split_header(payload: bytes, what: str) -> Tuple[JSONObject, bytes]:
    if len(payload) < 4:
        raise MalformedPayload(f"{what} payload is shorter than its header length")
    (length,) = LENGTH.unpack_from(payload)
    if length > len(payload) - 4:
        raise MalformedPayload(
            f"{what} header length {length} exceeds the {len(payload) - 4} bytes left"
        )
    return decode_json(payload[4 : 4 + length], what), payload[4 + length :]


def decode_request_json(payload: bytes) -> RequestMessage:
    """
    Decode a REQUEST payload with a JSON header.

    @raise MalformedPayload: bad header length, JSON or field shapes.
    """
    header, body = _split_header(payload, "REQUEST")
    get = header.get
    method, path, template = get("method"), get("path"), get("template")
    params, query, claims = get("params") or {}, get("query"), get("claims") or {}
    deadline, streaming = get("deadline"), get("streaming")
    # One combined check for a well-formed header; the field-by-field checks
    # of _decode_request_slowly only run to word the error.
    if not (type(method) is str and type(path) is str and type(template) is str
            and (query is None or type(query) is str)
            and (deadline is None or type(deadline) is float)
            and (streaming is None or type(streaming) is bool)
            and type(params) is dict and type(claims) is dict
            and (not params or all(type(v) is str for v in params.values()))):
        return _decode_request_slowly(header, body)
    # params: every value a str, as checked above (mypy cannot follow all()).
    return RequestMessage(method, path, template, params, query or "",  # type: ignore[arg-type]
                          decode_headers(get("headers", []), "REQUEST"), claims, deadline,
                          bool(streaming), body)


def _decode_request_slowly(header: JSONObject, body: bytes) -> RequestMessage:
    """
    L{decode_request_json} for a header that failed the quick check: each
    field checked in turn, so the error names the first bad one.
    """
    params = header.get("params") or {}
    if not is_string_map(params):
        raise MalformedPayload("REQUEST.params must map names to strings")
    claims = header.get("claims") or {}
    if not isinstance(claims, dict):
        raise MalformedPayload("REQUEST.claims must be an object")
    return RequestMessage(
        method=json_field(header, "method", str, "REQUEST"),
        path=json_field(header, "path", str, "REQUEST"),
        template=json_field(header, "template", str, "REQUEST"),
        path_params=params,
        query=json_optional(header, "query", str, "REQUEST", ""),
        headers=decode_headers(header.get("headers", []), "REQUEST"),
        claims=claims,
        deadline=json_optional(header, "deadline", float, "REQUEST", None),
        streaming=json_optional(header, "streaming", bool, "REQUEST", False),
        body=body,
    )


def decode_response_json(payload: bytes) -> ResponseMessage:
    """
    Decode a RESPONSE payload with a JSON header.

    @raise MalformedPayload: bad header length, JSON, field shapes, or a
        status outside 200-599.
    """
    header, body = _split_header(payload, "RESPONSE")
    status, streaming = header.get("status"), header.get("streaming")
    if type(status) is not int:
        status = json_field(header, "status", int, "RESPONSE")
    if not 200 <= status <= 599:
        raise MalformedPayload(f"RESPONSE.status {status} is not a final HTTP status (200-599)")
    if streaming is not None and type(streaming) is not bool:
        streaming = json_field(header, "streaming", bool, "RESPONSE")
    return ResponseMessage(status, decode_headers(header.get("headers", []), "RESPONSE"),
                           body, bool(streaming))
