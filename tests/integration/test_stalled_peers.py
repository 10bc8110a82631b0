"""
Peers and clients that stop reading, against a real gateway process over
loopback (issue 18 item 3, issue 17 item 6): a raw microservice that
registers and never reads is cut off once its unsent bytes pass the cap; an
HTTP client that leaves without reading its download leaves nothing behind.
"""

import socket
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.frames import encode_frame
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import Hello, encode_hello
from stellarouter.transports.flush import discard_unsent

from .test_processes import ProcessTestCase

MIB = 1024 * 1024


def raw_peer(port: int, instance_id: str) -> socket.socket:
    """
    A microservice that sends HELLO for C{POST /sink} (1 s timeout) and then
    never reads (a small receive buffer, so the kernel holds little for it).
    """
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(("127.0.0.1", port))
    instance = InstanceDescriptor(instance_id, "sink", "1.0.0", "eu1")
    endpoint = EndpointDescriptor("sink", "1.0.0", "POST", "/sink", default_timeout=1.0)
    peer.sendall(encode_frame(Frame(FrameType.HELLO, new_correlation_id(),
                                    encode_hello(Hello(instance, (endpoint,))))))
    return peer


class StalledPeerTests(ProcessTestCase):
    timeout = 60

    async def test_peer_that_never_reads_is_cut_off(self) -> None:
        """
        1 MiB POSTs to a registered peer that never reads time out (504); once
        more than the cap waits unsent, the gateway logs it once, routes
        nothing more to the peer and closes its connection after the grace
        period.
        """
        gateway = await self.deployment.start_gateway(extra=(
            "buffers: {max_unsent_bytes_per_connection: 4194304, stalled_close_after: 1.0}"))
        peer = raw_peer(gateway.transport_port, "raw-1")
        self.addCleanup(peer.close)
        await gateway.wait_for(r"registered instance raw-1 ", reactor)
        stalled = gateway.wait_for(r"is stalled: (\d+) bytes wait", reactor, timeout=30)
        closed = gateway.wait_for(r"instance raw-1 \(sink 1.0.0\) disconnected: stalled",
                                  reactor, timeout=30)
        url = (gateway.base_url + "/sink").encode()
        codes: List[int] = []

        async def post() -> None:
            response = await treq.post(url, b"x" * MIB, pool=self.pool)
            codes.append(response.code)
            await response.content()

        # Waves of 8 concurrent POSTs (1 s each, they time out) until the
        # gateway calls the peer stalled, at most 12 waves.
        for _ in range(12):
            if stalled.called:
                break
            await DeferredList([Deferred.fromCoroutine(post()) for _ in range(8)])
        match = await stalled
        self.assertGreater(int(match.group(1)), 4 * MIB)
        await closed
        self.assertEqual(sum("is stalled" in line for line in gateway.lines), 1)
        self.assertTrue(codes)
        self.assertEqual(set(codes) - {504, 503, 404}, set())
        # Nothing is routed to it any more: answered at once, not after 1 s.
        response = await treq.post(url, b"x" * MIB, pool=self.pool)
        await response.content()
        self.assertIn(response.code, (404, 503))


class _Writer(Protocol):
    def connectionMade(self) -> None:
        self.factory.made.append(self)  # type: ignore[attr-defined]
        self.transport.write(b"x" * (8 * MIB))  # type: ignore[union-attr]

    def connectionLost(self, reason: Any) -> None:
        self.factory.dropped.append(discard_unsent(self.transport))  # type: ignore[attr-defined]
        self.factory.buffers.append(  # type: ignore[attr-defined]
            (self.transport.dataBuffer, self.transport._tempDataLen))  # type: ignore[union-attr]


class DiscardUnsentTests(TestCase):
    async def test_client_gone_without_reading(self) -> None:
        """
        When a client that read nothing leaves, what the server still had to
        send to it is dropped at once (a closed TCP transport otherwise keeps
        its write buffer until the garbage collector frees it).
        """
        factory = Factory.forProtocol(_Writer)
        factory.made, factory.dropped, factory.buffers = [], [], []  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        for _ in range(400):
            if factory.made:  # type: ignore[attr-defined]
                break
            await deferLater(reactor, 0.01)
        client.close()
        for _ in range(400):
            if factory.dropped:  # type: ignore[attr-defined]
                break
            await deferLater(reactor, 0.01)
        self.assertGreater(factory.dropped[0], MIB)  # type: ignore[attr-defined]
        self.assertEqual(factory.buffers, [(b"", 0)])  # type: ignore[attr-defined]
