"""
Pins for the twisted.web private names the Klein bridge's channel relies on
(L{stellarouter.microservice._web.PRIVATE_NAMES}): a Twisted release that
renames or drops one fails here, by name.
"""

from io import BytesIO
from typing import List

from klein import Klein
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface.verify import verifyObject

from stellarouter.microservice import HeaderMap, RawRequestContext
from stellarouter.microservice._web import PRIVATE_NAMES, BridgeChannel, IChannelOwner
from stellarouter.microservice.klein_bridge import BridgedRequest, KleinBridge


class ChannelOwnerTests(SynchronousTestCase):
    def test_bridged_request_provides_the_interface(self) -> None:
        """
        A bridged request provides L{IChannelOwner}, what its channel calls.
        """
        bridge = KleinBridge(Klein(), Clock())
        ctx = RawRequestContext("GET", "/", {}, "", HeaderMap(), {}, b"", "cid")
        verifyObject(IChannelOwner, BridgedRequest(bridge, ctx))


class BridgePrivateNameTests(SynchronousTestCase):
    def test_names_exist(self) -> None:
        """
        Every private name the bridge's channel provides is one a connected
        twisted.web channel has (so twisted.web still calls it).
        """
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1)))
        self.addCleanup(channel.connectionLost, None)
        missing = [name for name in PRIVATE_NAMES if not hasattr(channel, name)]
        self.assertEqual(missing, [], f"twisted.web no longer has {missing}: "
                                      "see stellarouter/microservice/_web.py")
        self.assertEqual([n for n in PRIVATE_NAMES if not hasattr(BridgeChannel, n)], [])

    def test_bad_multipart_goes_through_the_hook(self) -> None:
        """
        twisted.web's request answers a multipart form it cannot parse
        through its channel's C{_respondToBadRequestAndDisconnect}.
        """
        calls: List[str] = []

        class Channel:
            transport = None
            site = Site(Resource())

            def getPeer(self) -> IPv4Address:
                return IPv4Address("TCP", "127.0.0.1", 1)

            getHost = getPeer

            def _respondToBadRequestAndDisconnect(self) -> None:
                calls.append("bad")

        request = Request(Channel())  # type: ignore[arg-type]
        request.requestHeaders.addRawHeader(b"Content-Type",
                                            b"multipart/form-data; boundary=xyz")
        request.content = BytesIO(b"garbage")
        request.content.seek(0, 2)
        request.requestReceived(b"POST", b"/", b"HTTP/1.1")
        self.assertEqual(calls, ["bad"])
