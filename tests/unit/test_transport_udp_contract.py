"""
The datagram transport contract over UDP on the fake datagram network.
"""

from typing import Any, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from stellarouter.testing.contract import DatagramContractTests, observe
from stellarouter.testing.datagrams import FakeDatagramReactor
from stellarouter.transports.udp import udp_client, udp_server


class FakeUDPContractTests(DatagramContractTests, TestCase):
    """
    UDP keeps the datagram contract on a fake network.
    """

    max_frame_bytes = 4096

    def setUp(self) -> None:
        self.reactor = FakeDatagramReactor()

    async def startServer(self, receiver_factory: Any) -> Tuple[Any, str]:
        server = udp_server(self.reactor, "udp:5200:interface=127.0.0.1", receiver_factory,
                            self.max_frame_bytes)
        await server.start()
        return server, "udp:host=127.0.0.1:port=5200"

    def makeClient(self, address: str, receiver_factory: Any) -> Any:
        return udp_client(self.reactor, address, receiver_factory, self.max_frame_bytes)

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        for _ in range(200):
            if waiter.called:
                break
            self.reactor.advance(0.01)
        return self.successResultOf(waiter)

    def sendRaw(self, data: bytes) -> None:
        # From an address that never sent HELLO.
        self.reactor.send(("127.0.0.1", 9), ("127.0.0.1", 5200), data)

    def roundTrip(self) -> Deferred:
        self.reactor.settle()
        return succeed(None)
