"""
Pins for the twisted.web private names the gateway's connection-level code
uses (L{stellarouter.gateway._web.PRIVATE_NAMES}): a Twisted release that
renames or drops one fails here, by name, rather than somewhere obscure.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from stellarouter.gateway._web import PRIVATE_NAMES


class PrivateNameTests(SynchronousTestCase):
    def connected_channel(self) -> http.HTTPChannel:
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1)))
        self.addCleanup(channel.connectionLost, None)
        return channel

    def test_names_exist(self) -> None:
        """
        Every private name the edge relies on exists on a connected
        twisted.web channel.
        """
        channel = self.connected_channel()
        missing = [name for name in PRIVATE_NAMES if not hasattr(channel, name)]
        self.assertEqual(missing, [], f"twisted.web no longer has {missing}: "
                                      "see stellarouter/gateway/_web.py")

    def test_bad_request_goes_through_the_hook(self) -> None:
        """
        twisted.web answers a malformed request through
        C{_respondToBadRequestAndDisconnect} (the edge overrides it).
        """
        channel = self.connected_channel()
        calls = []
        channel._respondToBadRequestAndDisconnect = (  # type: ignore[method-assign]
            lambda: calls.append("bad"))
        channel.dataReceived(b"NOT A REQUEST\r\n")
        self.assertEqual(calls[:1], ["bad"])

    def test_header_counters(self) -> None:
        """
        C{_receivedHeaderSize} and C{_receivedHeaderCount} count the head
        being read (the edge tells "too large" from "malformed" by them).
        """
        channel = self.connected_channel()
        channel.dataReceived(b"GET / HTTP/1.1\r\nA: b\r\nC: d\r\n")
        self.assertEqual(channel._receivedHeaderSize, len(b"GET / HTTP/1.1A: bC: d"))
        self.assertEqual(channel._receivedHeaderCount, 1)

    def test_continue_goes_through_the_hook(self) -> None:
        """
        twisted.web writes C{100 Continue} through C{_send100Continue},
        after the request's C{gotLength} (the edge silences it once it has
        refused the request there).
        """
        channel = self.connected_channel()
        calls = []
        channel._send100Continue = lambda: calls.append("continue")  # type: ignore
        channel.dataReceived(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 3\r\n\r\n")
        self.assertEqual(calls, ["continue"])
        self.assertEqual(channel.transport.value(), b"")  # type: ignore[union-attr]

    def test_request_state_names(self) -> None:
        """
        C{_transferDecoder} is set while a body arrives and C{_handlingRequest}
        once a request is complete (the edge's head deadline reads both).
        """
        channel = self.connected_channel()
        self.assertEqual((channel._handlingRequest, channel._transferDecoder), (False, None))
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na")
        self.assertIsNotNone(channel._transferDecoder)
        self.assertFalse(channel._handlingRequest)
        channel.requests[-1].process = lambda: None  # type: ignore[method-assign]
        channel.dataReceived(b"bc")
        self.assertEqual((channel._handlingRequest, channel._transferDecoder), (True, None))
