"""
The transport contract over real TCP sockets on 127.0.0.1.
"""

from typing import Any, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from stellarouter.common.enums import TransportType
from stellarouter.common.interfaces import IFrameSender
from stellarouter.testing.contract import TransportContractTests, observe
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
