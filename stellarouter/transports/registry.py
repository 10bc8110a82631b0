"""
Builds a transport server or client from its configured kind and address,
so the gateway and the SDK never name a concrete transport.
"""

from __future__ import annotations

from typing import Any, Optional

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.interfaces import ITransportClient, ITransportServer
from .inmemory import InMemoryNetwork, inmemory_client, inmemory_server
from .stream import ReceiverFactory
from .tcp import tcp_client, tcp_server


def make_server(
    kind: TransportType,
    listen: str,
    reactor: Any,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    network: Optional[InMemoryNetwork] = None,
) -> ITransportServer:
    """
    A server for C{kind} listening on C{listen}.

    @param network: required for L{TransportType.INMEMORY}.
    @raise ValueError: an unsupported kind, or a bad address.
    """
    if kind is TransportType.TCP:
        return tcp_server(reactor, listen, receiver_factory, max_frame_bytes)
    if kind is TransportType.INMEMORY:
        if network is None:
            raise ValueError("the in-memory transport needs an InMemoryNetwork")
        return inmemory_server(network, listen, receiver_factory, max_frame_bytes)
    raise ValueError(f"transport {kind.value!r} is not implemented yet")


def make_client(
    kind: TransportType,
    address: str,
    reactor: Any,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    network: Optional[InMemoryNetwork] = None,
    **backoff: Any,
) -> ITransportClient:
    """
    A reconnecting client for C{kind} dialling C{address}.

    @param network: required for L{TransportType.INMEMORY}.
    @param backoff: C{initial_delay}, C{max_delay}, C{jitter}.
    @raise ValueError: an unsupported kind, or a bad address.
    """
    if kind is TransportType.TCP:
        return tcp_client(reactor, address, receiver_factory, max_frame_bytes, **backoff)
    if kind is TransportType.INMEMORY:
        if network is None:
            raise ValueError("the in-memory transport needs an InMemoryNetwork")
        return inmemory_client(network, address, receiver_factory, max_frame_bytes, **backoff)
    raise ValueError(f"transport {kind.value!r} is not implemented yet")
