"""
The TCP transport: length-prefixed frames over TCP, addresses given as
Twisted endpoint strings (C{tcp:5100:interface=127.0.0.1} to listen,
C{tcp:host=127.0.0.1:port=5100} to connect).
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IReactorTCP, IReactorTime

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from .stream import ReceiverFactory, StreamTransportClient, StreamTransportServer

#: The default TCP port of the gateway's transport listener.
DEFAULT_PORT = 5100


def tcp_server(
    reactor: IReactorTCP,
    listen: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> StreamTransportServer:
    """
    A TCP L{ITransportServer}.

    @param reactor: provides C{IReactorTCP}.
    @param listen: a server endpoint string, e.g. C{tcp:5100:interface=127.0.0.1}.
    @raise ValueError: an endpoint string Twisted cannot parse.
    """
    return StreamTransportServer(
        serverFromString(reactor, listen),
        receiver_factory,
        TransportType.TCP,
        max_frame_bytes,
    )


def tcp_client(
    reactor: IReactorTime,
    address: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    **backoff: object,
) -> StreamTransportClient:
    """
    A TCP L{ITransportClient} that reconnects with backoff.

    @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
    @param address: a client endpoint string, e.g. C{tcp:host=127.0.0.1:port=5100}.
    @raise ValueError: an endpoint string Twisted cannot parse.
    """
    return StreamTransportClient(
        clientFromString(reactor, address),
        receiver_factory,
        reactor,
        TransportType.TCP,
        max_frame_bytes,
        **backoff,  # type: ignore[arg-type]
    )
