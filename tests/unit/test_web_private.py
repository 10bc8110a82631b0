"""
Pins for the twisted.web private names the gateway uses, all of them in
L{stellarouter.gateway._web} (L{PRIVATE_NAMES}): a Twisted release that
renames or drops one fails here, by name, rather than somewhere obscure.
"""

from typing import Any, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from stellarouter.gateway._web import (
    CHANNEL_PRIVATE_NAMES,
    PRIVATE_NAMES,
    REQUEST_PRIVATE_NAMES,
)

#: Set only while a request line is being handled (see
#: L{test_request_line_during_got_length}).
_PER_REQUEST_LINE = ("_command", "_path", "_version")


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
        missing = [name for name in CHANNEL_PRIVATE_NAMES
                   if name not in _PER_REQUEST_LINE and not hasattr(channel, name)]
        self.assertEqual(missing, [], f"twisted.web's HTTPChannel no longer has {missing}: "
                                      "see stellarouter/gateway/_web/__init__.py")

    def test_request_names_exist(self) -> None:
        """
        Every private (or "not intended for users") name of twisted.web's
        request the gateway relies on exists.
        """
        request = http.Request(self.connected_channel())
        missing = [name for name in REQUEST_PRIVATE_NAMES if not hasattr(request, name)]
        self.assertEqual(missing, [], f"twisted.web's Request no longer has {missing}: "
                                      "see stellarouter/gateway/_web/__init__.py")
        self.assertEqual(set(PRIVATE_NAMES),
                         set(CHANNEL_PRIVATE_NAMES) | set(REQUEST_PRIVATE_NAMES))

    def test_request_line_during_got_length(self) -> None:
        """
        While a request's C{gotLength} runs, the channel holds the request
        line in C{_command}, C{_path} and C{_version} (a streaming
        endpoint's REQUEST goes out then).
        """
        seen: List[Any] = []

        class Recording(http.Request):
            def gotLength(self, length: Optional[int]) -> None:
                seen.append(tuple(getattr(self.channel, name, None)
                                  for name in _PER_REQUEST_LINE))
                super().gotLength(length)

        channel = self.connected_channel()
        channel.requestFactory = Recording  # type: ignore[assignment]
        channel.dataReceived(b"POST /up?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(seen, [(b"POST", b"/up?x=1", b"HTTP/1.1")],
                         "twisted.web's HTTPChannel no longer holds the request line in "
                         "_command/_path/_version during gotLength: see "
                         "stellarouter/gateway/_web/request.py (begin_upload)")

    def test_hooks_and_disconnected(self) -> None:
        """
        The channel feeds a request through C{gotLength},
        C{handleContentChunk} and C{requestReceived(command, path,
        version)}, and C{_disconnected} becomes true when the client leaves.
        """
        calls: List[Any] = []
        requests: List[http.Request] = []

        class Recording(http.Request):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                requests.append(self)

            def gotLength(self, length: Optional[int]) -> None:
                calls.append(("gotLength", length))
                super().gotLength(length)

            def handleContentChunk(self, data: bytes) -> None:
                calls.append(("handleContentChunk", data))
                super().handleContentChunk(data)

            def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
                calls.append(("requestReceived", command, path, version))

        channel = self.connected_channel()
        channel.requestFactory = Recording  # type: ignore[assignment]
        channel.dataReceived(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.assertEqual(calls, [("gotLength", 3), ("handleContentChunk", b"abc"),
                                 ("requestReceived", b"POST", b"/p", b"HTTP/1.1")],
                         "twisted.web's request hooks changed: see "
                         "stellarouter/gateway/_web/request.py (GatewayRequest)")
        self.assertFalse(requests[0]._disconnected)
        requests[0].connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(requests[0]._disconnected,
                        "twisted.web's Request no longer sets _disconnected when the "
                        "client leaves: see stellarouter/gateway/_web/request.py")

    def test_waiting_for_transport(self) -> None:
        """
        C{_waitingForTransport} tells that the client's connection is
        paused (L{transport_paused} reads it).
        """
        from stellarouter.gateway._web import transport_paused

        channel = self.connected_channel()
        self.assertFalse(transport_paused(channel))
        channel.pauseProducing()
        self.assertTrue(transport_paused(channel),
                        "twisted.web's HTTPChannel no longer sets _waitingForTransport: "
                        "see stellarouter/gateway/_web/channel.py")
        channel.resumeProducing()
        self.assertFalse(transport_paused(channel))

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
