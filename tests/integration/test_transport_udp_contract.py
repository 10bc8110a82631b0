"""
The datagram transport contract over real UDP sockets on 127.0.0.1.
"""

import socket
from typing import Any, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from stellarouter.testing.contract import DatagramContractTests, observe
from stellarouter.transports.udp import udp_client, udp_server


class UDPContractTests(DatagramContractTests, TestCase):
    """
    UDP keeps the datagram contract over loopback sockets.
    """

    timeout = 20
    max_frame_bytes = 16 * 1024

    async def startServer(self, receiver_factory: Any) -> Tuple[Any, str]:
        server = udp_server(reactor, "udp:0:interface=127.0.0.1", receiver_factory,
                            self.max_frame_bytes)
        await server.start()
        self.port = server.port.getHost().port
        return server, f"udp:host=127.0.0.1:port={self.port}"

    def makeClient(self, address: str, receiver_factory: Any) -> Any:
        return udp_client(reactor, address, receiver_factory, self.max_frame_bytes)

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        waiter.addTimeout(5, reactor)
        result = await waiter
        await deferLater(reactor, 0, lambda: None)
        return result

    def sendRaw(self, data: bytes) -> None:
        # From a fresh socket: an address that never sent HELLO.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(data, ("127.0.0.1", self.port))
        sock.close()

    def roundTrip(self) -> Deferred:
        # Datagrams to ourselves on loopback arrive in order: a probe sent
        # after the others marks their arrival.
        return deferLater(reactor, 0.2, lambda: None)
