"""
The TLS transport: the stream protocol over TLS (pyOpenSSL via
C{twisted.internet.ssl}, host names checked with C{service_identity}),
optionally with client certificates (mutual TLS).

The receiver is only given the connection once the handshake has completed
(C{IHandshakeListener.handshakeCompleted}), so nothing is said to or
accepted from a peer whose certificate was not verified.  A handshake that
fails (unknown CA, expired certificate, wrong host name, no client
certificate, a plain TCP client) is logged on the side that sees it and
closes only that connection; the microservice retries with backoff.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional, Tuple, cast

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall, IHandshakeListener, IOpenSSLClientConnectionCreator, IReactorTime, ISSLTransport)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.untrusted import shown_if_needed
from .stream import (
    FrameStreamProtocol,
    ReceiverFactory,
    StreamTransportClient,
    StreamTransportServer,
)
from .hello import Backoff

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Twisted 26 passes pyOpenSSL X509 objects to pyOpenSSL 26 itself and so
# triggers this deprecation warning from its own code; only this one is
# hidden.
warnings.filterwarnings(
    "ignore", message="Passing pyOpenSSL X509 objects is deprecated",
    category=DeprecationWarning)

#: The default TLS port of the gateway's transport listener.
DEFAULT_PORT = 5101


#: The longest certificate name kept as it is (longer ones are cut).
MAX_NAME_CHARS = 256


def certificate_names(
    certificate: object,
) -> Tuple[str, ...]:
    """
    The identity of a peer certificate: its subject common name, then its
    DNS subject alternative names; a name that is not printable or is over
    L{MAX_NAME_CHARS} characters escaped and cut (L{shown_if_needed}).

    @param certificate: what C{ISSLTransport.getPeerCertificate} gives: a
        pyOpenSSL or C{cryptography} certificate, or C{None} (no certificate).
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if isinstance(certificate, crypto.X509):
        cert = certificate.to_cryptography()
    elif isinstance(certificate, x509.Certificate):
        cert = certificate
    else:
        return ()
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [n for n in san.get_values_for_type(x509.DNSName) if n not in names]
    except x509.ExtensionNotFound:
        pass
    # A name is logged, compared with allowed_client_names and shown by the
    # admin API: one holding a control character (a CA may sign anything)
    # is kept escaped, so it can neither match a configured name nor forge
    # a log line.
    return tuple(shown_if_needed(name, MAX_NAME_CHARS) for name in map(str, names))


@implementer(IHandshakeListener)
class TLSFrameStreamProtocol(FrameStreamProtocol):
    """
    The stream protocol under TLS: opens the connection to its receiver only
    after a successful handshake, with the peer's certificate identity.
    """

    log = Logger()
    _handshaken = False
    _deadline: Optional[IDelayedCall] = None
    #: Seconds a peer has to complete the handshake.
    handshake_timeout = 10.0

    def open(self) -> None:
        # Wait for handshakeCompleted, but not forever.
        clock = getattr(self.factory, "clock", None)
        if clock is not None:
            self._deadline = clock.callLater(self.handshake_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._handshaken and self.transport is not None:
            self.log.warn("TLS handshake with {peer} not done within {timeout:g}s; closing",
                          peer=self.peer, timeout=self.handshake_timeout)
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self._handshaken = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self.peer_identity = certificate_names(
            cast(ISSLTransport, self.transport).getPeerCertificate())
        self.log.info("TLS handshake with {peer} done; peer certificate: {identity}",
                      peer=self.peer, identity=", ".join(self.peer_identity) or "none")
        super().open()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if not self._handshaken:
            self.log.warn("TLS connection with {peer} failed before the handshake completed: "
                          "{reason}", peer=self.peer or "?", reason=_describe_tls_error(reason))
        elif reason.check(SSL.Error):
            # With TLS 1.3 a client learns that the server refused its
            # certificate only after its side of the handshake completed.
            self.log.warn("TLS connection with {peer} refused by the peer: {reason}",
                          peer=self.peer or "?", reason=_describe_tls_error(reason))
        super().connectionLost(Failure(ConnectionError(_describe_tls_error(reason)))
                               if reason.check(SSL.Error) else reason)


def _describe_tls_error(reason: Failure) -> str:
    error = reason.value
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        parts = [item[2] if isinstance(item, tuple) and len(item) > 2 else str(item)
                 for item in error.args[0]]
        return "TLS error: " + "; ".join(parts)
    return reason.getErrorMessage()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_options(
    certificate: str,
    private_key: str,
    client_ca: Optional[str] = None,
    require_client_certificate: bool = True,
) -> ssl.CertificateOptions:
    """
    Server-side TLS options from PEM files.

    @param client_ca: the CA that signs acceptable client certificates;
        without it no client certificate is asked for.
    @param require_client_certificate: refuse clients without one (when
        C{client_ca} is given).
    """
    own = ssl.PrivateCertificate.loadPEM(_read(certificate) + b"\n" + _read(private_key))
    trust = ssl.Certificate.loadPEM(_read(client_ca)) if client_ca else None
    if trust is None:
        return ssl.CertificateOptions(
            privateKey=own.privateKey.original, certificate=own.original,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    return ssl.CertificateOptions(
        privateKey=own.privateKey.original, certificate=own.original,
        verify=True, caCerts=[trust.original],
        requireCertificate=require_client_certificate,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def client_options(
    server_name: str,
    ca: str,
    certificate: Optional[str] = None,
    private_key: Optional[str] = None,
) -> IOpenSSLClientConnectionCreator:
    """
    Client-side TLS options: trust C{ca}, check the server's name, and
    present a client certificate when given.
    """
    client_certificate = None
    if certificate and private_key:
        client_certificate = ssl.PrivateCertificate.loadPEM(
            _read(certificate) + b"\n" + _read(private_key))
    return ssl.optionsForClientTLS(
        server_name, trustRoot=ssl.Certificate.loadPEM(_read(ca)),
        clientCertificate=client_certificate)


def tls_server(
    reactor: IReactorTime,
    listen: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    *,
    certificate: str,
    private_key: str,
    client_ca: Optional[str] = None,
    require_client_certificate: bool = True,
) -> StreamTransportServer:
    """
    A TLS L{ITransportServer} on a TCP server endpoint string.

    @raise OSError: an unreadable certificate or key file.
    @raise ValueError: a bad endpoint string.
    """
    options = server_options(certificate, private_key, client_ca, require_client_certificate)
    return StreamTransportServer(
        serverFromString(reactor, listen), receiver_factory, TransportType.TLS,
        max_frame_bytes, protocol_class=TLSFrameStreamProtocol,
        wrap=lambda factory: TLSMemoryBIOFactory(options, False, factory), clock=reactor,
    )


def tls_client(
    reactor: IReactorTime,
    address: str,
    receiver_factory: ReceiverFactory,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    *,
    server_name: str,
    ca: str,
    certificate: Optional[str] = None,
    private_key: Optional[str] = None,
    **backoff: Unpack[Backoff],
) -> StreamTransportClient:
    """
    A TLS L{ITransportClient} on a TCP client endpoint string, reconnecting
    with backoff.

    @param server_name: the name the gateway's certificate must carry.
    @raise OSError: an unreadable certificate, key or CA file.
    """
    endpoint = wrapClientTLS(client_options(server_name, ca, certificate, private_key),
                             clientFromString(reactor, address))
    return StreamTransportClient(
        endpoint, receiver_factory, reactor, TransportType.TLS, max_frame_bytes,
        protocol_class=TLSFrameStreamProtocol, **backoff,
    )
