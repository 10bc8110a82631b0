"""
What a handler receives and returns: L{RawRequestContext} (method, path,
parameters, headers as a case-insensitive L{HeaderMap}, claims, and the body
whole or as a L{BodyStream} fed by the dispatcher under flow control), and
the answers it may give (L{RawResponse}, L{StreamingResponse},
L{JsonResponse}).  These are the SDK's public data types; the dispatcher
builds the first and encodes the others into RESPONSE frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import (
    Any, AsyncIterable, Callable, Dict, Iterable, Iterator, List, Mapping, Optional,
    Sequence, Tuple, Union,
)
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred

from ..common.enums import CancelReason
from ..common.jsonvalue import JSONValue
from ..common.models import InstanceDescriptor
from .chunks import ChunkQueue


class HeaderMap:
    """
    Immutable, case-insensitive view of request headers (several values per
    name allowed, order kept).

    Iterating it (C{for name, value in ctx.headers}) or L{items} gives every
    header as received: C{(name, value)} pairs in order, names as the client
    spelled them, a repeated header once per value.
    """

    __slots__ = ("_pairs", "_lookup")

    def __init__(self, pairs: Sequence[Tuple[str, str]] = ()) -> None:
        self._pairs = tuple(pairs)
        # Built on the first lookup: many handlers never read a header.
        self._lookup: Optional[Dict[str, List[str]]] = None

    @property
    def _index(self) -> Dict[str, List[str]]:
        index = self._lookup
        if index is None:
            index = {}
            for name, value in self._pairs:
                index.setdefault(name.lower(), []).append(value)
            self._lookup = index
        return index

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

    def items(self) -> List[Tuple[str, str]]:
        """
        Every header: C{(name, value)} pairs in the order received, a
        repeated header once per value.
        """
        return list(self._pairs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"HeaderMap({list(self._pairs)!r})"


class BodyStream(ChunkQueue):
    """
    The body of a request to a streaming endpoint, as it arrives: iterate
    it with C{async for chunk in ctx.body}, or C{await ctx.body.read()}.
    The gateway sends more only as the handler takes what came (credit), so
    a slow handler slows the upload down instead of filling memory.

    @ivar received: bytes received so far.
    """

    def __init__(self, grant: Callable[[int], None], window: int) -> None:
        """
        @param grant: gives the gateway room for C{amount} more bytes.
        @param window: bytes the gateway may send before the first grant.
        """
        super().__init__()
        self._grant = grant
        self._window = window
        self._consumed = 0
        self.received = 0

    # fed by the SDK

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self.received += len(chunk)
            super().feed(chunk)

    # read by the handler

    def __aiter__(self) -> BodyStream:
        return self

    def _taken(self, size: int) -> None:
        # Room for what the handler took, half a window at a time.
        self._consumed += size
        if self._consumed >= self._window // 2:
            amount, self._consumed = self._consumed, 0
            self._grant(amount)

    async def read(self) -> bytes:
        """
        The whole (rest of the) body.
        """
        return b"".join([chunk async for chunk in self])


@dataclass
class RawRequestContext:
    """
    One request as a handler sees it.

    @ivar path_params: the template's parameters, percent-decoded.
    @ivar query: the raw query string (see L{query_params}).
    @ivar claims: verified claims from the gateway (empty when anonymous).
    @ivar body: the request body bytes, or a L{BodyStream} for a
        streaming endpoint.
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
    claims: Mapping[str, JSONValue]
    #: bytes, or a BodyStream for a streaming endpoint: the endpoint's
    #: registration decides, so a handler uses it without narrowing it.
    body: Any
    correlation_id: str
    deadline: Optional[float] = None
    cancelled: "Deferred[Optional[CancelReason]]" = field(default_factory=Deferred)
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

    @ivar headers: C{(name, value)} pairs in order, or a mapping of names
        to values.
    """

    status: int = 200
    headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = ()
    body: bytes = b""

    @classmethod
    def text(cls, text: str, status: int = 200) -> "RawResponse":
        """
        A C{text/plain; charset=utf-8} response.
        """
        return cls(status, (("Content-Type", "text/plain; charset=utf-8"),), text.encode())

    @classmethod
    def json(cls, obj: object, status: int = 200,
             headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = ()
             ) -> "RawResponse":
        """
        An C{application/json} response.

        @param headers: more headers (C{Location}, C{Set-Cookie}, ...), as
            C{(name, value)} pairs or a mapping; a C{Content-Type} among
            them replaces C{application/json}.
        """
        extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        own = [] if any(isinstance(pair, (tuple, list)) and len(pair) == 2
                        and isinstance(pair[0], str) and pair[0].lower() == "content-type"
                        for pair in extra) else [("Content-Type", "application/json")]
        return cls(
            status,
            tuple(own + extra),
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
    headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = ()
    body: Union[Iterable[bytes], AsyncIterable[bytes]] = ()


@dataclass(frozen=True)
class JsonResponse:
    """
    A typed handler's answer when the status or headers differ from the
    endpoint's defaults.
    """

    body: object
    status: int = 200
    headers: Union[Sequence[Tuple[str, str]], Mapping[str, str]] = ()
