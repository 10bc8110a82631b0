"""
The transport contract over TLS on loopback, with certificates generated in
the test, and every rejection case of mutual TLS.
"""

import datetime
import os
from typing import Any, Dict, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from stellarouter import certs
from stellarouter.common.enums import TransportType
from stellarouter.common.interfaces import IFrameSender
from stellarouter.testing.contract import ReceiverLog, TransportContractTests, observe
from stellarouter.transports.tls import tls_client, tls_server


def make_pki(directory: str) -> Dict[str, Tuple[str, str]]:
    """
    A CA, a gateway certificate for localhost, a good client, a client from
    another CA, an expired client, a gateway certificate for the wrong name
    and an expired gateway certificate.
    """
    os.makedirs(directory, exist_ok=True)
    ca, other_ca = certs.make_ca(), certs.make_ca("someone else's CA")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    files = {"ca": certs.write(directory, "ca", ca)}
    for name, issued in {
        "gateway": certs.issue(ca, "localhost", ["localhost"], ["127.0.0.1"]),
        "client": certs.issue(ca, "billing"),
        "foreign": certs.issue(other_ca, "billing"),
        "expired": certs.issue(ca, "billing", not_before=past - datetime.timedelta(days=1),
                               not_after=past),
        "wrong-name": certs.issue(ca, "elsewhere.example"),
        "expired-gateway": certs.issue(ca, "localhost", not_before=past - datetime.timedelta(days=1),
                                       not_after=past),
    }.items():
        files[name] = certs.write(directory, name, issued)
    return files


class TLSTransportContractTests(TransportContractTests, TestCase):
    """
    The TLS transport (mutual TLS) keeps the transport contract.
    """

    transport_type = TransportType.TLS
    timeout = 30

    def setUp(self) -> None:
        self.pki = make_pki(os.path.abspath(self.mktemp()))

    async def startServer(self, receiver_factory: Any) -> Tuple[Any, str]:
        cert, key = self.pki["gateway"]
        server = tls_server(reactor, "tcp:0:interface=127.0.0.1", receiver_factory,
                            self.max_frame_bytes, certificate=cert, private_key=key,
                            client_ca=self.pki["ca"][0])
        await server.start()
        return server, f"tcp:host=127.0.0.1:port={server.port.getHost().port}"

    def makeClient(self, address: str, receiver_factory: Any, which: str = "client",
                   server_name: str = "localhost") -> Any:
        cert, key = self.pki[which] if which else (None, None)
        return tls_client(reactor, address, receiver_factory, self.max_frame_bytes,
                          server_name=server_name, ca=self.pki["ca"][0], certificate=cert,
                          private_key=key, initial_delay=0.02, jitter=lambda: 0)

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        waiter.addTimeout(5, reactor)
        result = await waiter
        await deferLater(reactor, 0, lambda: None)
        return result

    def writeRaw(self, sender: IFrameSender, data: bytes) -> None:
        sender.transport.write(data)  # type: ignore[attr-defined]

    async def test_peer_identity(self) -> None:
        """
        Each side sees the other's verified certificate names.
        """
        _, _, servers, clients = await self._connected()
        self.assertEqual(servers.receivers[0].connection.peer_identity, ("billing",))
        self.assertEqual(clients.receivers[0].connection.peer_identity, ("localhost",))

    async def test_no_nagle_delay(self) -> None:
        """
        Under TLS too, both ends' TCP sockets have C{TCP_NODELAY} set.
        """
        import socket

        _, _, servers, clients = await self._connected()
        for log in (servers, clients):
            tls = log.receivers[0].connection.transport
            sock = tls.transport.getHandle()  # the TCP transport under the TLS one
            self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class RejectionTests(TestCase):
    """
    Each mTLS failure closes that connection with a log line on the side that
    sees it; the microservice keeps retrying; the gateway keeps serving.
    """

    timeout = 30

    def setUp(self) -> None:
        self.pki = make_pki(os.path.abspath(self.mktemp()))
        self.logged: list = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    async def start(self, gateway: str = "gateway") -> Tuple[Any, str, ReceiverLog]:
        self.address = ""
        servers = ReceiverLog()
        cert, key = self.pki[gateway]
        server = tls_server(reactor, "tcp:0:interface=127.0.0.1", servers,
                            certificate=cert, private_key=key, client_ca=self.pki["ca"][0])
        await server.start()
        self.addCleanup(server.stop)
        return server, f"tcp:host=127.0.0.1:port={server.port.getHost().port}", servers

    def lines(self, text: str) -> list:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.logged if text in formatEvent(e)]

    async def wait_for_log(self, text: str, count: int = 1) -> None:
        for _ in range(500):
            if len(self.lines(text)) >= count:
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no log line with {text!r}")

    async def attempt(self, which: Any, server_name: str = "localhost",
                      gateway: str = "gateway") -> Tuple[ReceiverLog, ReceiverLog]:
        """
        Run a client with certificate C{which} until it failed twice (so it
        retried), then check that a good client still gets through.
        """
        server, address, servers = await self.start(gateway)
        clients = ReceiverLog()
        cert, key = self.pki[which] if which else (None, None)
        client = tls_client(reactor, address, clients, server_name=server_name,
                            ca=self.pki["ca"][0], certificate=cert, private_key=key,
                            initial_delay=0.02, jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        # Three attempts refused (so the client retried), each logged.
        await self.wait_for_log("TLS connection with", 3)
        self.assertEqual([r for r in servers.receivers if r.opened.called], [])
        if which != "client":
            # The client learns of the refusal after its handshake (TLS 1.3):
            # its connections were opened and closed again, and it retried.
            # (It may learn of the last close after the gateway logged it.)
            for _ in range(500):
                if len([r for r in clients.receivers if r.closed.called]) >= 2:
                    break
                await deferLater(reactor, 0.01, lambda: None)
            self.assertGreaterEqual(len([r for r in clients.receivers if r.closed.called]), 2)
        else:
            self.assertEqual([r for r in clients.receivers if r.opened.called], [])
        if gateway == "gateway":
            await self.good_client_still_served(address, servers)
        return servers, clients

    async def good_client_still_served(self, address: str, servers: ReceiverLog) -> None:
        clients = ReceiverLog()
        cert, key = self.pki["client"]
        client = tls_client(reactor, address, clients, server_name="localhost",
                            ca=self.pki["ca"][0], certificate=cert, private_key=key)
        client.start()
        self.addCleanup(client.stop)
        opened = observe(clients.opened(1))
        opened.addTimeout(5, reactor)
        await opened

    async def test_client_from_another_ca(self) -> None:
        """
        A client certificate from another CA is refused.
        """
        await self.attempt("foreign")
        self.assertTrue(self.lines("TLS error"))
        self.assertTrue(self.lines("certificate verify failed") or self.lines("unknown ca"))

    async def test_no_client_certificate(self) -> None:
        """
        No client certificate when one is required is refused.
        """
        await self.attempt(None)

    async def test_expired_client_certificate(self) -> None:
        """
        An expired client certificate is refused.
        """
        await self.attempt("expired")

    async def test_server_name_mismatch(self) -> None:
        """
        A gateway certificate for another name is refused by the client.
        """
        await self.attempt("client", server_name="gateway.internal")

    async def test_expired_server_certificate(self) -> None:
        """
        An expired gateway certificate is refused by the client.
        """
        await self.attempt("client", gateway="expired-gateway")

    async def test_plain_tcp_client(self) -> None:
        """
        A plain TCP client talking frames to the TLS port is dropped with a
        log line, and the gateway keeps serving TLS clients.
        """
        server, address, servers = await self.start()
        port = server.port.getHost().port
        proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
        proto.transport.write(b"\x00\x00\x00\x11\x01" + b"\x00" * 16)
        await self.wait_for_log("failed before the handshake completed")
        proto.transport.loseConnection()
        await self.good_client_still_served(address, servers)
