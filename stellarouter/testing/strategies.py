"""
Hypothesis strategies for the wire protocol's values: correlation ids,
frames of every type, header lists, REQUEST and RESPONSE messages, cancel
reasons and the ways a byte stream may be split into reads.  The codec and
decoder property tests draw from them, so "any frame" means the same thing
in every test.
"""

from __future__ import annotations

from typing import List, Tuple

from hypothesis import strategies as st

from ..common.enums import CancelReason, FrameType
from ..common.ids import CorrelationId
from ..common.jsonvalue import JSONValue
from ..common.models import Frame
from ..common.payloads import RequestMessage, ResponseMessage

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


def correlation_ids() -> st.SearchStrategy[CorrelationId]:
    """
    Any correlation id: any 16 bytes, not only version 4 UUIDs (a peer may
    send any id).
    """
    return st.binary(min_size=16, max_size=16).map(CorrelationId)


def frames(max_payload: int = 2048) -> st.SearchStrategy[Frame]:
    """
    Any frame: every type, any id, any payload bytes.
    """
    return st.builds(
        Frame,
        st.sampled_from(list(FrameType)),
        correlation_ids(),
        st.binary(max_size=max_payload),
    )


def header_pairs() -> st.SearchStrategy[List[Tuple[str, str]]]:
    """
    HTTP-ish header pairs (latin-1 safe names and values).
    """
    return st.lists(st.tuples(_token, st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30)), max_size=6)


def request_messages() -> st.SearchStrategy[RequestMessage]:
    """
    REQUEST contents with arbitrary fields and body.
    """
    return st.builds(
        RequestMessage,
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        path=_text.map(lambda t: "/" + t),
        template=_text.map(lambda t: "/" + t),
        path_params=st.dictionaries(_token, _text, max_size=3),
        query=_text,
        headers=header_pairs(),
        claims=st.dictionaries(_token, st.one_of(_text, st.lists(_text, max_size=3)), max_size=3),
        deadline=st.one_of(st.none(), st.floats(min_value=0, max_value=4e9)),
        streaming=st.booleans(),
        body=st.binary(max_size=512),
    )


def response_messages() -> st.SearchStrategy[ResponseMessage]:
    """
    RESPONSE contents with arbitrary fields and body.
    """
    return st.builds(
        ResponseMessage,
        status=st.integers(min_value=200, max_value=599),
        headers=header_pairs(),
        body=st.binary(max_size=512),
        streaming=st.booleans(),
    )


def cancel_reasons() -> st.SearchStrategy[CancelReason]:
    """
    Every cancel reason.
    """
    return st.sampled_from(list(CancelReason))


def json_values(max_leaves: int = 30) -> st.SearchStrategy[JSONValue]:
    """
    Any JSON value (objects with short keys, a few levels deep), as
    C{json.loads} would give it: for input that must never crash a reader.
    """
    scalars = st.none() | st.booleans() | st.integers() | st.floats(
        allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    keys = st.sampled_from(["$ref", "type", "schema", "endpoints", "components", "method",
                            "path", "request", "response", "status", "content_type", "tags",
                            "title", "items"]) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys, inner, max_size=5), max_leaves=max_leaves)


def splits(data_size: int) -> st.SearchStrategy[List[int]]:
    """
    Sorted cut points inside a byte string of C{data_size} bytes.
    """
    return st.lists(st.integers(min_value=0, max_value=data_size), max_size=20).map(sorted)
