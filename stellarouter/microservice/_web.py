"""
The twisted.web channel of the Klein bridge (L{stellarouter.microservice.klein_bridge}):
what a real L{twisted.web.server.Request} talks to when its bytes come from
a REQUEST frame and go out as a RESPONSE.

L{BridgeChannel} provides the part of L{twisted.web.http.HTTPChannel} that
a request uses: the addresses (from the gateway's forwarded headers), the
site, C{writeHeaders} / C{write} / C{writeSequence}, producer registration,
C{requestDone}.  What a channel behind the gateway cannot do (the raw
socket, closing the client's connection) raises L{NotBehindGateway} with a
message saying why, instead of doing something silently wrong.

Every twisted.web private name the bridge uses lives in this module, listed
in L{PRIVATE_NAMES} and pinned by C{tests/unit/test_klein_bridge_private.py}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, NoReturn, Optional, Sequence, Tuple, Union

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.web.http_headers import Headers
from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.web.server import Request, Site

#: The private names of twisted.web this module relies on.
#: C{_respondToBadRequestAndDisconnect} is the channel method
#: L{twisted.web.http.Request.requestReceived} calls for a multipart form it
#: cannot parse (an C{HTTPChannel} answers C{400 Bad Request} and closes;
#: the bridge answers 400).
PRIVATE_NAMES = ("_respondToBadRequestAndDisconnect",)

Address = Union[IPv4Address, IPv6Address]


class NotBehindGateway(NotImplementedError):
    """
    A Klein app used what a request has only on its own socket: the client's
    connection is the gateway's (docs/router/migration.md, "What the bridge
    refuses").
    """


class IChannelOwner(Interface):
    """
    What a L{BridgeChannel} reports to: one bridged request
    (L{stellarouter.microservice.klein_bridge.BridgedRequest}).
    """

    def headers_written(code: int, headers: Headers) -> None:
        """
        The request wrote its status and headers (once).

        @param code: the status code.
        @param headers: the response headers, without C{Transfer-Encoding}.
        """

    def body_written(data: bytes) -> None:
        """
        The request wrote body bytes (plain, never chunk-encoded).
        """

    def finished() -> None:
        """
        The response is complete (C{request.finish()}).
        """

    def producer_registered(producer: Union[IPushProducer, IPullProducer],
                            streaming: bool) -> None:
        """
        The app registered a producer on the request.

        @param streaming: C{True} for a push producer (paused and resumed),
            C{False} for a pull producer (asked for more).
        """

    def producer_unregistered() -> None:
        """
        The app unregistered its producer.
        """

    def bad_request() -> None:
        """
        twisted.web could not parse the request (a malformed multipart
        form): answer 400.
        """


class RefusedTransport:
    """
    C{request.transport} behind the gateway: any use raises
    L{NotBehindGateway} (there is no socket to the client here).
    """

    def __getattr__(self, name: str) -> NoReturn:
        raise NotBehindGateway(
            f"request.transport.{name}: a bridged Klein request has no socket to the client "
            "(the gateway holds the client's connection); use request.getClientAddress(), "
            "request.isSecure() and the request headers")


class BridgeChannel:
    """
    The channel of one bridged request.

    @ivar site: the L{twisted.web.server.Site} serving the Klein app.
    @ivar factory: C{None} (a request logs through its channel's factory;
        the SDK logs the request itself).
    """

    transport = RefusedTransport()
    factory = None

    def __init__(self, owner: IChannelOwner, site: Site, peer: Address, host: Address,
                 secure: bool) -> None:
        """
        @param owner: told what the request writes.
        @param peer: the client's address (as the gateway saw it).
        @param host: the address the client asked for (C{Host}).
        @param secure: the client used HTTPS to reach the gateway.
        """
        self.owner = owner
        self.site = site
        self.request: Optional[Request] = None
        self._peer = peer
        self._host = host
        self._secure = secure

    def getPeer(self) -> Address:
        return self._peer

    def getHost(self) -> Address:
        return self._host

    def isSecure(self) -> bool:
        return self._secure

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes,
                     headers: Union[Headers, Sequence[Tuple[bytes, bytes]]]) -> None:
        """
        The status line and headers: the gateway frames the body itself
        (C{Content-Length} or chunked), so the request writes it plain.
        """
        if self.request is not None:
            # twisted.web chunk-encodes an HTTP/1.1 body without a length;
            # the gateway does its own framing, so the body goes out plain.
            self.request.chunked = False
        if not isinstance(headers, Headers):
            pairs = headers
            headers = Headers()
            for name, value in pairs:
                headers.addRawHeader(name, value)
        headers.removeHeader(b"Transfer-Encoding")
        self.owner.headers_written(int(code), headers)

    def write(self, data: bytes) -> None:
        self.owner.body_written(data)

    def writeSequence(self, data: List[bytes]) -> None:
        self.owner.body_written(b"".join(data))

    def registerProducer(self, producer: Union[IPushProducer, IPullProducer],
                         streaming: bool) -> None:
        self.owner.producer_registered(producer, streaming)

    def unregisterProducer(self) -> None:
        self.owner.producer_unregistered()

    def requestDone(self, request: Request) -> None:
        self.owner.finished()

    def loseConnection(self) -> None:
        raise NotBehindGateway(
            "request.loseConnection(): a bridged Klein request cannot close the client's "
            "connection (the gateway holds it); finish the response, or raise an error for "
            "a 500")

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        twisted.web could not parse the request's multipart form: 400.
        """
        self.owner.bad_request()


def address_of(host: Optional[str], port: int) -> Address:
    """
    An address for C{host} (an IP address or a name; C{None}: unknown,
    C{0.0.0.0}).
    """
    if host is not None and ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host or "0.0.0.0", port)
