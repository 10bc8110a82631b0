"""
Which frame connections send their output at the end of a read
(L{stellarouter.transports.flush}), and that they do it once per read.
"""

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase


class StreamFlushTests(SynchronousTestCase):
    def test_microservice_side_flushes(self) -> None:
        """
        Frame connections that a microservice dials send what was written
        while handling a read at the end of it; the gateway's accepted ones
        leave it to the reactor's next turn (where one write carries the
        REQUESTs of every HTTP request of the turn).
        """
        from stellarouter.transports.tcp import tcp_client, tcp_server

        client = tcp_client(reactor, "tcp:host=127.0.0.1:port=1", lambda: None)
        server = tcp_server(reactor, "tcp:0:interface=127.0.0.1", lambda: None)
        self.assertTrue(client.factory.buildProtocol(None).flush_after_frames)
        self.assertFalse(server._factory.buildProtocol(None).flush_after_frames)

    def test_flushed_after_the_frames_of_a_read(self) -> None:
        """
        With C{flush_after_frames}, the answers written while the frames of
        one read were handled are flushed once, after the last of them.
        """
        from stellarouter.common.enums import FrameType, TransportType
        from stellarouter.common.frames import encode_frame
        from stellarouter.common.ids import new_correlation_id
        from stellarouter.common.models import Frame
        from stellarouter.transports import stream

        flushed: List[bytes] = []
        written: List[bytes] = []

        class Receiver:
            def connectionOpened(self, sender: Any) -> None:
                self.sender = sender

            def frameReceived(self, frame: Frame) -> None:
                self.sender.sendFrame(frame)

            def connectionClosed(self, reason: str) -> None:
                pass

        class Transport(StringTransport):
            def write(self, data: bytes) -> None:
                written.append(data)
                super().write(data)

        original = stream.flush
        stream.flush = lambda t: flushed.append(b"".join(written))  # type: ignore[assignment]
        self.addCleanup(setattr, stream, "flush", original)
        frames = [Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}") for _ in range(3)]
        for flag, expected in ((True, [b"".join(encode_frame(f) for f in frames)]), (False, [])):
            del flushed[:], written[:]
            protocol = stream.FrameStreamProtocol(Receiver(), TransportType.TCP)
            protocol.flush_after_frames = flag
            protocol.makeConnection(Transport())
            protocol.dataReceived(b"".join(encode_frame(f) for f in frames))
            self.assertEqual(flushed, expected)
