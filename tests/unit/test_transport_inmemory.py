"""
The transport contract over the in-memory transport, on a Clock.
"""

from typing import Any, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from stellarouter.common.enums import TransportType
from stellarouter.common.interfaces import IFrameSender
from stellarouter.testing.contract import TransportContractTests, observe
from stellarouter.transports.inmemory import (
    InMemoryNetwork,
    inmemory_client,
    inmemory_server,
)


class InMemoryTransportContractTests(TransportContractTests, TestCase):
    """
    The in-memory transport keeps the transport contract.
    """

    transport_type = TransportType.INMEMORY

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = InMemoryNetwork(self.clock)
        self.addCleanup(self._no_timers_left)

    def _no_timers_left(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def startServer(self, receiver_factory: Any) -> Tuple[Any, str]:
        server = inmemory_server(self.network, "gateway", receiver_factory, self.max_frame_bytes)
        await self.settle(server.start())
        return server, "gateway"

    def makeClient(self, address: str, receiver_factory: Any) -> Any:
        return inmemory_client(self.network, address, receiver_factory, self.max_frame_bytes,
                               initial_delay=0.1, jitter=lambda: 0)

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        for _ in range(1000):
            if waiter.called:
                break
            self.clock.advance(0.01)
        return self.successResultOf(waiter)

    def writeRaw(self, sender: IFrameSender, data: bytes) -> None:
        sender.transport.write(data)  # type: ignore[attr-defined]


class InMemoryNetworkTests(TestCase):
    def test_refused_without_listener(self) -> None:
        """
        Connecting to a name nobody listens on fails like a refused TCP
        connection.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.protocol import Factory

        network = InMemoryNetwork(Clock())
        self.failureResultOf(network.connect("nobody", Factory()), ConnectionRefusedError)

    def test_name_in_use(self) -> None:
        """
        Two servers cannot listen on one name.
        """
        network = InMemoryNetwork(Clock())
        first = inmemory_server(network, "gw", lambda: None)  # type: ignore[arg-type,return-value]
        second = inmemory_server(network, "gw", lambda: None)  # type: ignore[arg-type,return-value]
        self.successResultOf(first.start())
        self.failureResultOf(second.start(), ValueError)
