"""
The JSON underneath every payload: one compact encoder, a decoder that
refuses NaN and Infinity, and field readers that word a wrong shape as
L{MalformedPayload}.  Private to the package.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from struct import Struct
from typing import Callable, Dict, List, Mapping, NoReturn, Tuple, Type, TypeGuard, TypeVar, Union

from ..errors import MalformedPayload
from ..jsonvalue import JSONObject, JSONValue

T = TypeVar("T")
D = TypeVar("D")

#: The u32 big-endian length before a REQUEST/RESPONSE header (and a credit amount).
LENGTH = Struct(">I")
INF = float("inf")
#: JSON string literal of a str, escaped as json.dumps(ensure_ascii=False) does.
json_string = encode_basestring
#: One compact JSON text (no spaces, UTF-8 kept).
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


# NaN and Infinity are not JSON; Python's decoder accepts them unless told.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)
_loads = _DECODER.decode
# The decoder's own scanner (C), called directly for a document that starts
# and ends with its value, as every encoder here writes them: json.loads adds
# two Python calls and two whitespace regex matches per document.  Anything
# else (whitespace around, trailing data, an error) goes through _loads, so
# what is accepted and every error are exactly json's.
_scan: Callable[[str, int], Tuple[JSONValue, int]] = getattr(_DECODER, "scan_once")


def encode_json(obj: Mapping[str, object]) -> bytes:
    """
    C{obj} as compact UTF-8 JSON.
    """
    return dumps(obj).encode("utf-8")


def decode_json(payload: bytes, what: str) -> JSONObject:
    """
    The JSON object in C{payload}.

    @raise MalformedPayload: not UTF-8, not JSON (NaN and Infinity
        included), nested deeper than the interpreter recurses, or not an
        object.
    """
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
    except RecursionError:
        raise MalformedPayload(f"{what} payload nests JSON too deeply") from None
    if not isinstance(obj, dict):
        raise MalformedPayload(f"{what} payload is not a JSON object")
    return obj


def json_field(obj: Mapping[str, object], name: str, kind: Type[T], what: str) -> T:
    """
    C{obj[name]}, which must be a C{kind} (an int is accepted for a float,
    a bool never for anything else).

    @raise MalformedPayload: missing, or of another type.
    """
    if name not in obj:
        raise MalformedPayload(f"{what} is missing {name!r}")
    value = obj[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MalformedPayload(f"{what}.{name} must be {kind.__name__}")
    return value


def json_optional(obj: Mapping[str, object], name: str, kind: Type[T], what: str,
                  default: D) -> Union[T, D]:
    """
    L{json_field}, or C{default} when C{name} is absent or null.
    """
    if obj.get(name) is None:
        return default
    return json_field(obj, name, kind, what)




def is_string_list(value: object) -> TypeGuard[List[str]]:
    """
    Whether C{value} is a list of strings.
    """
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def is_string_map(value: object) -> TypeGuard[Dict[str, str]]:
    """
    Whether C{value} is a dict of strings (to strings: JSON keys are).
    """
    return isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
