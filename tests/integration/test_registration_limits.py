"""
Registration caps and silent registrations against a real gateway process,
from raw sockets (issue 18, item 4): a HELLO of 28k endpoints is refused,
connections over the per-address cap are closed before their HELLO, and a
registration that never heartbeats is closed once UNHEALTHY long enough.
"""

import json
import socket
from typing import List

from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from stellarouter.common.enums import FrameType
from stellarouter.common.frames import FrameDecoder, encode_frame
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import decode_hello_ack

from .test_processes import ProcessTestCase

CONFIG = """
health: {degraded_after: 0.2, unhealthy_after: 0.4, sweep_interval: 0.1, ping_interval: 0.1,
         close_unhealthy_after: 0.5}
registration: {max_connections_per_peer_address: 3}
"""


def hello_frame(instance_id: str, count: int = 1) -> bytes:
    """
    A HELLO frame written as tersely as the protocol allows (only the
    required keys), as a hostile peer would to fit the most endpoints.
    """
    payload = json.dumps({
        "instance": {"instance_id": instance_id, "service_name": "silent",
                     "version": "1.0.0", "region": "eu1"},
        "endpoints": [{"method": "GET", "path": f"/s{i}"} for i in range(count)],
    }, separators=(",", ":")).encode()
    return encode_frame(Frame(FrameType.HELLO, new_correlation_id(), payload))


def read_until_closed(sock: socket.socket) -> List[Frame]:
    """
    Every frame the gateway sends until it closes the connection (bounded
    by the socket's timeout).
    """
    decoder = FrameDecoder()
    frames: List[Frame] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return frames
        frames.extend(decoder.feed(data))


class RegistrationLimitTests(ProcessTestCase):
    async def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.deployment.transport_port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    async def test_huge_hello_refused(self) -> None:
        """
        A HELLO of 28k endpoints (just under 1 MiB) is answered with a refusal
        naming the cap, and the connection closed.
        """
        await self.deployment.start_gateway(extra=CONFIG)
        sock = await self.connect()
        payload = hello_frame("huge", 28000)
        self.assertGreater(len(payload), 900_000)
        self.assertLess(len(payload), 1 << 20)
        sock.sendall(payload)
        frames = await deferToThread(read_until_closed, sock)
        ack = decode_hello_ack(frames[0].payload)
        self.assertFalse(ack.accepted)
        self.assertIn("announces 28000 endpoints; at most 1000", ack.reason)

    async def test_connections_per_address_and_silent_registrations(self) -> None:
        """
        With a cap of 3 connections per address, a fourth is closed at once,
        without a frame; three silent registrations are each closed once
        UNHEALTHY for 0.5 s, after which new connections are accepted again.
        """
        gateway = await self.deployment.start_gateway(extra=CONFIG)
        silent = []
        for i in range(3):
            sock = await self.connect()
            sock.sendall(hello_frame(f"silent-{i}"))
            silent.append(sock)
            await gateway.wait_for(rf"registered instance silent-{i} ", reactor)
        extra = await self.connect()
        self.assertEqual(await deferToThread(read_until_closed, extra), [])
        await gateway.wait_for(r"refused a connection from 127\.0\.0\.1", reactor)
        for sock in silent:
            frames = await deferToThread(read_until_closed, sock)
            self.assertEqual(frames[0].type, FrameType.HELLO)
        await gateway.wait_for(r"UNHEALTHY for \d+\.\ds", reactor)
        again = await self.connect()
        again.sendall(hello_frame("again"))
        await gateway.wait_for(r"registered instance again ", reactor)
