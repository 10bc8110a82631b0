"""
What a handler receives and returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred

from ..common.enums import CancelReason
from ..common.models import InstanceDescriptor


class HeaderMap:
    """
    Immutable, case-insensitive view of request headers (several values per
    name allowed, order kept).
    """

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: Sequence[Tuple[str, str]] = ()) -> None:
        self._pairs = tuple(pairs)
        index: Dict[str, List[str]] = {}
        for name, value in self._pairs:
            index.setdefault(name.lower(), []).append(value)
        self._index = index

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """
        The first value of C{name}, or C{default}.
        """
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> List[str]:
        """
        Every value of C{name}, in order.
        """
        return list(self._index.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"HeaderMap({list(self._pairs)!r})"


@dataclass
class RawRequestContext:
    """
    One request as a handler sees it.

    @ivar path_params: the template's parameters, percent-decoded.
    @ivar query: the raw query string (see L{query_params}).
    @ivar claims: verified claims from the gateway (empty when anonymous).
    @ivar body: the request body bytes.
    @ivar cancelled: fires with the L{CancelReason} if the gateway cancels
        (with C{None} if the gateway connection is lost).
    @ivar cancel_reason: the same reason, once cancelled.
    @ivar instance: the identity of the instance serving the request.
    @ivar deadline: absolute UNIX time after which nobody waits, or C{None}.
    @ivar correlation_id: the request's id, as in the gateway's logs.
    """

    method: str
    path: str
    path_params: Mapping[str, str]
    query: str
    headers: HeaderMap
    claims: Mapping[str, Any]
    body: bytes
    correlation_id: str
    deadline: Optional[float] = None
    cancelled: Deferred = field(default_factory=Deferred)
    cancel_reason: Optional[CancelReason] = None
    instance: Optional[InstanceDescriptor] = None

    @property
    def query_params(self) -> Dict[str, List[str]]:
        """
        The query string parsed into lists of values.
        """
        return parse_qs(self.query, keep_blank_values=True)


@dataclass(frozen=True)
class RawResponse:
    """
    A handler's answer.
    """

    status: int = 200
    headers: Sequence[Tuple[str, str]] = ()
    body: bytes = b""

    @classmethod
    def text(cls, text: str, status: int = 200) -> "RawResponse":
        """
        A C{text/plain; charset=utf-8} response.
        """
        return cls(status, (("Content-Type", "text/plain; charset=utf-8"),), text.encode())

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> "RawResponse":
        """
        An C{application/json} response.
        """
        return cls(
            status,
            (("Content-Type", "application/json"),),
            json.dumps(obj, separators=(",", ":")).encode("utf-8"),
        )


@dataclass(frozen=True)
class StreamingResponse:
    """
    A response whose body is produced piece by piece: C{body} is an async
    iterable (an C{async def} generator, say) or an iterable of C{bytes}.
    The SDK pulls the next piece only when the gateway has granted room
    for it, so a slow HTTP client slows the producer down instead of
    filling memory (protocol.md, "Flow control").
    """

    status: int = 200
    headers: Sequence[Tuple[str, str]] = ()
    body: Any = ()


@dataclass(frozen=True)
class JsonResponse:
    """
    A typed handler's answer when the status or headers differ from the
    endpoint's defaults.
    """

    body: Any
    status: int = 200
    headers: Sequence[Tuple[str, str]] = ()
