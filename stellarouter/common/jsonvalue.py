"""
The types of JSON as C{json} and C{msgspec} decode it, for annotations:
L{JSONValue} is any JSON value (an object, an array, a string, a number, a
boolean or null, nested to any depth), L{JSONObject} one object.  Nothing
here checks a value at run time: code that reads a JSON value of unknown
shape narrows it with C{isinstance} as it goes, and code that knows a
shape (an OpenAPI document, a HELLO's endpoint descriptions, an admin API
answer) names it with a C{TypedDict} instead.
"""

from __future__ import annotations

from typing import Dict, List, Union

#: A JSON value, of whatever shape.
JSONValue = Union[None, bool, int, float, str, List["JSONValue"], Dict[str, "JSONValue"]]

#: A JSON object.
JSONObject = Dict[str, JSONValue]

__all__ = ["JSONObject", "JSONValue"]
