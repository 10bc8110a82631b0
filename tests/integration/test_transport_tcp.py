"""
The transport contract over real TCP sockets on 127.0.0.1.
"""

import socket
from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from stellarouter.common.enums import TransportType
from stellarouter.common.interfaces import IFrameSender
from stellarouter.testing.contract import TransportContractTests, observe
from stellarouter.gateway.tracked import peer_address
from stellarouter.transports.tcp import tcp_client, tcp_server


class TCPTransportContractTests(TransportContractTests, TestCase):
    """
    The TCP transport keeps the transport contract over loopback sockets.
    """

    transport_type = TransportType.TCP
    timeout = 20

    async def startServer(self, receiver_factory: Any) -> Tuple[Any, str]:
        server = tcp_server(reactor, "tcp:0:interface=127.0.0.1", receiver_factory,
                            self.max_frame_bytes)
        await server.start()
        port = server.port.getHost().port
        return server, f"tcp:host=127.0.0.1:port={port}"

    def makeClient(self, address: str, receiver_factory: Any) -> Any:
        return tcp_client(reactor, address, receiver_factory, self.max_frame_bytes,
                          initial_delay=0.02, jitter=lambda: 0)

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        waiter.addTimeout(5, reactor)
        result = await waiter
        # Resume on a fresh reactor turn, not inside the protocol callback
        # that fired the Deferred (ClientService is still "connecting" while
        # our connectionMade runs).
        await deferLater(reactor, 0, lambda: None)
        return result

    def writeRaw(self, sender: IFrameSender, data: bytes) -> None:
        sender.transport.write(data)  # type: ignore[attr-defined]


class TCPNoDelayTests(TestCase):
    timeout = 20

    async def test_no_nagle_delay(self) -> None:
        """
        Both ends of a frame connection turn Nagle's algorithm off
        (C{TCP_NODELAY}): small frames are not held back until the previous
        one is acknowledged (seen as a p99 of ~2.5 ms at one connection).
        """
        import socket

        waiting: List[Deferred] = [Deferred(), Deferred()]
        both = [waiting[0], waiting[1]]

        class Receiver:
            def connectionOpened(self, sender: Any) -> None:
                waiting.pop(0).callback(sender)

            def frameReceived(self, frame: Any) -> None:
                pass

            def connectionClosed(self, reason: str) -> None:
                pass

        server = tcp_server(reactor, "tcp:0:interface=127.0.0.1", Receiver)
        await server.start()
        self.addCleanup(server.stop)
        port = server.port.getHost().port
        client = tcp_client(reactor, f"tcp:host=127.0.0.1:port={port}", Receiver,
                            initial_delay=0.02, jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        for d in both:
            sender = await d.addTimeout(5, reactor)
            sock = sender.transport.getHandle()
            self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        # Leave the connection callbacks before stopping the client.
        await deferLater(reactor, 0, lambda: None)


class IPv6AddressTests(TestCase):
    timeout = 20

    async def test_addresses_in_brackets(self) -> None:
        """
        On IPv6 loopback the listening address and a peer's read
        C{[::1]:PORT} (third outside test, session 12: C{tcp:::1:41827},
        whose port cannot be told from the address), and the peer's host
        for the per-address cap is C{::1}.
        """
        peers: List[Any] = []

        class Receiver:
            def connectionOpened(self, sender: Any) -> None:
                peers.append(sender.peer)

            def frameReceived(self, frame: Any) -> None:
                pass

            def connectionClosed(self, reason: str) -> None:
                pass

        server = tcp_server(reactor, "tcp6:0:interface=\\:\\:1", Receiver)
        where = await server.start()
        self.addCleanup(server.stop)
        port = server.port.getHost().port
        self.assertEqual(where, f"tcp:[::1]:{port}")
        peer = socket.create_connection(("::1", port))  # (a raw peer is enough)
        self.addCleanup(peer.close)
        for _ in range(100):
            if peers:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(peers), 1)
        self.assertTrue(peers[0].startswith("[::1]:"), peers[0])
        self.assertEqual(peer_address(peers[0]), "::1")
