"""
Builds a transport server or client from its configured kind and address,
so the gateway and the SDK never name a concrete transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, cast

from twisted.internet.interfaces import IReactorTCP, IReactorTime

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.interfaces import ITransportClient, ITransportServer
from .inmemory import InMemoryNetwork, inmemory_client, inmemory_server
from .stream import ReceiverFactory
from .tcp import tcp_client, tcp_server
from .tls import tls_client, tls_server
from .udp import udp_client, udp_server
from .amqp import amqp_client, amqp_server
from ..common.addresses import MAX_DATAGRAM_BYTES
from .hello import Backoff

if TYPE_CHECKING:
    from typing_extensions import Unpack


class ServerTLS(Protocol):
    """
    What a TLS listener needs to know (the gateway's C{TLSListenerConfig}).
    """

    @property
    def certificate(self) -> str: ...
    @property
    def private_key(self) -> str: ...
    @property
    def client_ca(self) -> Optional[str]: ...
    @property
    def require_client_certificate(self) -> bool: ...


class ClientTLS(Protocol):
    """
    What a TLS client needs to know (the SDK's C{TLSRouterConfig}).
    """

    @property
    def server_name(self) -> str: ...
    @property
    def ca(self) -> str: ...
    @property
    def certificate(self) -> Optional[str]: ...
    @property
    def private_key(self) -> Optional[str]: ...


def make_server(
    kind: TransportType,
    listen: str,
    reactor: IReactorTime,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    network: Optional[InMemoryNetwork] = None,
    tls: Optional[ServerTLS] = None,
    idle_timeout: float = 90.0,
    node_id: str = "gateway",
    config_key: str = "transports",
) -> ITransportServer:
    """
    A server for C{kind} listening on C{listen}.

    @param reactor: provides C{IReactorTime} and the listening interface of
        C{kind} (C{IReactorTCP}, C{IReactorUDP}...).
    @param network: required for L{TransportType.INMEMORY}.
    @param tls: for L{TransportType.TLS}, an object with C{certificate},
        C{private_key}, C{client_ca}, C{require_client_certificate}.
    @param config_key: its configuration key (C{transports[0]}), named in
        the log lines of the transports that reconnect (RabbitMQ).
    @raise ValueError: an unsupported kind, or a bad address.
    """
    if kind is TransportType.TCP:
        return tcp_server(cast(IReactorTCP, reactor), listen, receiver_factory, max_frame_bytes)
    if kind is TransportType.UDP:
        return udp_server(reactor, listen, receiver_factory, max_frame_bytes, idle_timeout,
                          node_id)
    if kind is TransportType.RABBITMQ:
        return amqp_server(reactor, listen, receiver_factory, node_id, idle_timeout,
                           max_frame_bytes, config_key=config_key)
    if kind is TransportType.TLS:
        if tls is None:
            raise ValueError("the TLS transport needs a certificate and a private key")
        return tls_server(reactor, listen, receiver_factory, max_frame_bytes,
                          certificate=tls.certificate, private_key=tls.private_key,
                          client_ca=tls.client_ca,
                          require_client_certificate=tls.require_client_certificate)
    if kind is TransportType.INMEMORY:
        if network is None:
            raise ValueError("the in-memory transport needs an InMemoryNetwork")
        return inmemory_server(network, listen, receiver_factory, max_frame_bytes)
    raise ValueError(f"transport {kind.value!r} is not implemented yet")


def make_client(
    kind: TransportType,
    address: str,
    reactor: IReactorTime,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    network: Optional[InMemoryNetwork] = None,
    tls: Optional[ClientTLS] = None,
    config_key: str = "routers",
    **backoff: Unpack[Backoff],
) -> ITransportClient:
    """
    A reconnecting client for C{kind} dialling C{address}.

    @param reactor: provides C{IReactorTime} and the connecting interface
        of C{kind} (C{IReactorTCP}, C{IReactorUDP}...).
    @param network: required for L{TransportType.INMEMORY}.
    @param tls: for L{TransportType.TLS}, an object with C{server_name},
        C{ca}, C{certificate}, C{private_key}.
    @param config_key: its configuration key (C{routers[0]}), named in the
        RabbitMQ client's log lines.
    @param backoff: C{initial_delay}, C{max_delay}, C{jitter}.
    @raise ValueError: an unsupported kind, or a bad address.
    """
    if kind is TransportType.TCP:
        return tcp_client(reactor, address, receiver_factory, max_frame_bytes, **backoff)
    if kind is TransportType.UDP:
        return udp_client(reactor, address, receiver_factory,
                          min(max_frame_bytes, MAX_DATAGRAM_BYTES), **backoff)
    if kind is TransportType.RABBITMQ:
        return amqp_client(reactor, address, receiver_factory,
                           max_frame_bytes=max_frame_bytes, config_key=config_key, **backoff)
    if kind is TransportType.TLS:
        if tls is None:
            raise ValueError("the TLS transport needs a server name and a CA")
        return tls_client(reactor, address, receiver_factory, max_frame_bytes,
                          server_name=tls.server_name, ca=tls.ca, certificate=tls.certificate,
                          private_key=tls.private_key, **backoff)
    if kind is TransportType.INMEMORY:
        if network is None:
            raise ValueError("the in-memory transport needs an InMemoryNetwork")
        return inmemory_client(network, address, receiver_factory, max_frame_bytes, **backoff)
    raise ValueError(f"transport {kind.value!r} is not implemented yet")
