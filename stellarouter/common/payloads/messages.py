"""
The contents of a REQUEST and of a RESPONSE frame, as named tuples; how they
travel is L{stellarouter.common.payloads.codec}'s business.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import List, Mapping, NamedTuple, Never, Optional, Sequence, Tuple

from ..jsonvalue import JSONValue

#: Header pairs, in order, names as sent.
HeaderList = List[Tuple[str, str]]

#: The default of a message's mappings (shared, so it must not change).
EMPTY: Mapping[str, Never] = MappingProxyType({})


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
    claims: Mapping[str, JSONValue] = EMPTY
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

