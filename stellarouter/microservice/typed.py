"""
Typed JSON bodies, read and written with C{msgspec}: a typed endpoint's
C{request_type} may be a dataclass, an attrs class, a C{TypedDict}, a
C{msgspec.Struct} (or a container of them, C{list[Item]}); its result is
encoded the same way.  A hand-written C{from_json(obj)} callable still
works: it gets the parsed JSON.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Callable, Mapping

import attrs
import msgspec

from .context import JsonResponse, RawResponse, StreamingResponse
from .errors import BadRequest

BodyReader = Callable[[bytes], object]

_JSON_HEADERS = (("Content-Type", "application/json"),)
#: Statuses without content: a typed endpoint sends neither body nor type.
_NO_CONTENT = frozenset({204, 304})
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
# msgspec's wording: "Expected `int`, got `str` - at `$.amount_cents`",
# "Object missing required field `customer` - at `$.lines[0]`".
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")


def is_typed_body(request_type: object) -> bool:
    """
    Whether C{request_type} is a type msgspec decodes (dataclass, attrs
    class, C{TypedDict}, C{msgspec.Struct}, or a generic alias such as
    C{list[Item]}), rather than a hand-written C{from_json} callable.
    """
    if typing.get_origin(request_type) is not None:
        return True
    if not isinstance(request_type, type):
        return False
    return (dataclasses.is_dataclass(request_type) or attrs.has(request_type)
            or typing.is_typeddict(request_type) or issubclass(request_type, msgspec.Struct))


def validation_detail(error: msgspec.ValidationError) -> str:
    """
    msgspec's validation message reworded path first:
    C{$.amount_cents: expected int, got str}.
    """
    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any text
    what, path = match["what"], match["path"] or "$"
    missing = _MISSING.match(what)
    if missing is not None:
        return f"{path}.{missing['field']}: required field missing"
    return f"{path}: {(what[:1].lower() + what[1:]).replace('`', '')}"


def body_reader(request_type: object) -> BodyReader:
    """
    The function that turns a typed endpoint's request body into the
    handler's payload.

    @param request_type: C{None} (the parsed JSON, or C{None} for an empty
        body), a type msgspec decodes (L{is_typed_body}), or a callable
        C{from_json(obj)} given the parsed JSON.
    @return: C{read(body) -> payload}, raising L{BadRequest} with a detail
        naming the field and the expectation when the body does not fit.
    @raise ValueError: C{request_type} is neither.
    """
    if request_type is None:
        return _read_any
    if is_typed_body(request_type):
        try:
            decode = msgspec.json.Decoder(request_type).decode
        except TypeError as e:
            raise ValueError(f"request_type {request_type!r} cannot be decoded: {e}") from None

        def read_typed(body: bytes) -> object:
            try:
                return decode(body)
            except msgspec.ValidationError as e:
                raise BadRequest(f"request body does not fit: {validation_detail(e)}") from None
            except (msgspec.DecodeError, RecursionError) as e:
                raise BadRequest(_not_json(body, e)) from None

        return read_typed
    if not callable(request_type):
        raise ValueError(f"request_type must be a type or a callable, not {request_type!r}")
    convert = request_type

    def read_with(body: bytes) -> object:
        payload = _read_any(body)
        try:
            return convert(payload)
        except BadRequest as e:
            raise BadRequest(f"request body does not fit: {e.detail}") from None
        except (TypeError, ValueError, KeyError) as e:
            raise BadRequest(f"request body does not fit: {e}") from None

    return read_with


def _read_any(body: bytes) -> object:
    if not body:
        return None
    try:
        return _decode_any(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise BadRequest(_not_json(body, e)) from None


def _not_json(body: bytes, error: Exception) -> str:
    if not body:
        return "request body is empty; expected JSON"
    if isinstance(error, RecursionError):
        return "request body is not valid JSON: nested too deeply"
    return f"request body is not valid JSON: {error}"


def encode_result(result: object, status: int) -> "RawResponse | StreamingResponse":
    """
    A typed handler's result as a response: a L{JsonResponse} with its
    status and headers, a L{RawResponse} or L{StreamingResponse} as it is,
    anything else (dataclass, attrs, Struct, dict, list, str, number,
    C{None}) as C{application/json} with C{status}.  A 204 or 304 has
    neither body nor C{Content-Type} (the result must be C{None}).

    @raise TypeError: a 204/304 result other than C{None}; C{result} is a tuple (C{({...}, 404)} is not a
        status: return C{JsonResponse(body, status=404)} or raise a
        L{Problem}; a list is a JSON array), or cannot be encoded.
    """
    if isinstance(result, JsonResponse):
        extra = result.headers
        extra_pairs = tuple(extra.items() if isinstance(extra, Mapping) else extra)
        if result.status in _NO_CONTENT:
            return RawResponse(result.status, extra_pairs, _empty(result.body))
        return RawResponse(result.status, _JSON_HEADERS + extra_pairs,
                           _encode(_check(result.body)))
    if isinstance(result, (RawResponse, StreamingResponse)):
        return result
    if status in _NO_CONTENT:
        return RawResponse(status, (), _empty(result))
    return RawResponse(status, _JSON_HEADERS, _encode(_check(result)))


def _empty(body: object) -> bytes:
    """
    The body of a 204 or 304: none (a result other than C{None} is a bug).
    """
    if body is not None:
        raise TypeError(f"a 204/304 response has no body; the handler returned {body!r}")
    return b""


def _check(body: object) -> object:
    if type(body) is tuple:
        raise TypeError(
            "a typed handler returned a tuple: for a status other than the endpoint's, "
            "return JsonResponse(body, status=...) or raise Problem(...); for a JSON array, "
            "return a list")
    return body


__all__ = ["body_reader", "encode_result", "is_typed_body", "validation_detail"]
