"""
The compact form of a REQUEST and RESPONSE header (C{docs/router/protocol.md},
"Compact headers"), written between peers that agreed on
L{COMPACT_HEADERS} in the HELLO exchange; its first byte is L{COMPACT_MARKER},
which no JSON text starts with.

The strings of a header travel as one UTF-8 text, each followed by a NUL:
the fixed fields of a REQUEST (method, path, template, query), then the
header pairs.  Header names are tokens and values may not hold NUL, so one
C split takes the text apart and one regular expression checks every header
pair at once; the JSON form needs a scanner pass and a check per header.
Parameters and claims (any text, any JSON) stay JSON, and are usually absent.
"""

from __future__ import annotations

import re
from struct import Struct
from typing import List, Mapping, Optional, Sequence, Tuple

from ..errors import MalformedPayload
from ..jsonvalue import JSONObject
from ._json import INF, LENGTH, decode_json, dumps
from .headers import TOKEN_CHARS, VALUE_CHARS, decode_headers
from .messages import RequestMessage, ResponseMessage

#: The first header byte of a compact REQUEST/RESPONSE header.
COMPACT_MARKER = 0x01

#: marker, flags, deadline, parameters length, claims length.
_COMPACT_REQUEST = Struct(">BBdII")
#: marker, status, flags.
_COMPACT_RESPONSE = Struct(">BHB")
#: The same, after the header length.
_COMPACT_REQUEST_HEAD = Struct(">I" + _COMPACT_REQUEST.format[1:])
_COMPACT_RESPONSE_HEAD = Struct(">I" + _COMPACT_RESPONSE.format[1:])
_COMPACT_STREAMING = 0x01
_COMPACT_DEADLINE = 0x02
#: Header pairs as NUL-terminated name and value (the rule of
#: L{stellarouter.common.payloads.headers}).
_pairs_ok = re.compile(rf"(?:[{TOKEN_CHARS}]+\x00[{VALUE_CHARS}]*\x00)*\Z").match


def _text(fields: List[str], headers: Sequence[Tuple[str, str]]) -> Optional[bytes]:
    """
    C{fields}, then each header's name and value, each followed by a NUL,
    as UTF-8; C{None} if a string holds a NUL (it would end it early: the
    JSON form holds such a message).
    """
    for name, value in headers:
        fields.append(name)
        fields.append(value)
    fields.append("")
    text = "\0".join(fields)
    if text.count("\0") != len(fields) - 1:
        return None
    return text.encode("utf-8")


def _json(value: Mapping[str, object]) -> bytes:
    return dumps(dict(value)).encode("utf-8") if value else b""


def request_compact(message: RequestMessage) -> Optional[bytes]:
    """
    A REQUEST payload with a compact header, for a message
    L{stellarouter.common.payloads.codec} has checked; C{None} when a
    string holds a NUL.
    """
    deadline = message.deadline
    text = _text([message.method, message.path, message.template, message.query],
                 message.headers)
    if text is None:
        return None
    params, claims = _json(message.path_params), _json(message.claims)
    flags = (_COMPACT_STREAMING if message.streaming else 0) | (
        0 if deadline is None else _COMPACT_DEADLINE)
    fixed = _COMPACT_REQUEST.pack(
        COMPACT_MARKER, flags, 0.0 if deadline is None else deadline, len(params), len(claims))
    return b"".join((
        LENGTH.pack(len(fixed) + len(text) + len(params) + len(claims)),
        fixed, text, params, claims, message.body))


def response_compact(message: ResponseMessage) -> Optional[bytes]:
    """
    A RESPONSE payload with a compact header, for a checked message;
    C{None} when a header holds a NUL or the status does not fit in 16 bits.
    """
    if not 0 <= message.status <= 0xFFFF:
        return None
    text = _text([], message.headers)
    if text is None:
        return None
    return b"".join((
        LENGTH.pack(_COMPACT_RESPONSE.size + len(text)),
        _COMPACT_RESPONSE.pack(COMPACT_MARKER, message.status,
                               _COMPACT_STREAMING if message.streaming else 0),
        text, message.body))


def _compact_header_problem(payload: bytes, fixed: Struct, what: str) -> MalformedPayload:
    """
    What is wrong with the header length of compact C{payload}.
    """
    (length,) = LENGTH.unpack_from(payload)
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
        decode_headers([list(pair) for pair in zip(it, it)], what)
    except MalformedPayload as e:
        return e
    raise AssertionError(f"valid pairs refused: {text!r}")  # pragma: no cover


_COMPACT_REQUEST_END = 4 + _COMPACT_REQUEST.size
_COMPACT_RESPONSE_END = 4 + _COMPACT_RESPONSE.size


def decode_request_compact(payload: bytes) -> RequestMessage:
    """
    Decode a REQUEST payload with a compact header.

    @raise MalformedPayload: bad lengths, text, header pairs or JSON.
    """
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
        if deadline != deadline or deadline in (INF, -INF):
            raise MalformedPayload(f"REQUEST.deadline {deadline} is not a finite number")
    else:
        deadline = None
    params: JSONObject = {}
    claims: JSONObject = {}
    if params_length:
        params = decode_json(payload[text_end : text_end + params_length], "REQUEST params")
        if not all(type(v) is str for v in params.values()):
            raise MalformedPayload("REQUEST.params must map names to strings")
    if claims_length:
        claims = decode_json(payload[text_end + params_length : end], "REQUEST claims")
    # params: every value a str, as checked above (mypy cannot follow all()).
    return RequestMessage(method, path, template, params,  # type: ignore[arg-type]
                          query, list(zip(it, it)), claims,
                          deadline, bool(flags & _COMPACT_STREAMING), payload[end:])


def decode_response_compact(payload: bytes) -> ResponseMessage:
    """
    Decode a RESPONSE payload with a compact header.

    @raise MalformedPayload: bad lengths, status, text or header pairs.
    """
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
