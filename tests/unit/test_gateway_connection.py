"""
Tests for the gateway side of a microservice connection: HELLO validation
and the frames it accepts.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType, InstanceHealthStatus
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameReceiver, IFrameSender
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import (
    COMPACT_HEADERS,
    COMPACT_MARKER,
    Heartbeat,
    Hello,
    ResponseMessage,
    decode_hello_ack,
    encode_endpoints_update,
    encode_heartbeat,
    encode_hello,
    encode_response,
)
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.errors import NotFound
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender


def hello(service: str = "billing", version: str = "1.0.0", paths=(("GET", "/ping"),),
          features: tuple = (), **instance: str) -> Frame:
    ident = dict(instance_id="b-1", service_name=service, version=version, region="eu1")
    ident.update(instance)
    desc = InstanceDescriptor(**ident)
    endpoints = tuple(EndpointDescriptor(service, version, m, p) for m, p in paths)
    return Frame(FrameType.HELLO, new_correlation_id(),
                 encode_hello(Hello(desc, endpoints, features=features)))


class GatewayConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = RoutingState()

    def connect(self) -> tuple:
        connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1"), self.clock)
        sender = FakeFrameSender()
        connection.connectionOpened(sender)
        return connection, sender

    def assertRejected(self, frame: Frame, reason: str) -> None:
        connection, sender = self.connect()
        connection.frameReceived(frame)
        self.assertIn(reason, sender.closed)
        ack = decode_hello_ack(sender.frames[-1].payload)
        self.assertFalse(ack.accepted)
        self.assertIn(reason, ack.reason)
        self.assertEqual(sender.frames[-1].correlation_id, frame.correlation_id)
        self.assertIsNone(connection.state)

    def test_interfaces(self) -> None:
        """
        The connection is an IFrameReceiver; the fake sender an IFrameSender.
        """
        connection, sender = self.connect()
        verifyObject(IFrameReceiver, connection)
        verifyObject(IFrameSender, sender)

    def test_accepted(self) -> None:
        """
        A valid HELLO registers the connection and is answered with the
        gateway's identity.
        """
        connection, sender = self.connect()
        frame = hello()
        connection.frameReceived(frame)
        ack = decode_hello_ack(sender.frames[0].payload)
        self.assertEqual((ack.accepted, ack.node_id, ack.region), (True, "gw-1", "eu1"))
        self.assertEqual(self.state.resolve("GET", "/ping").service_name, "billing")
        self.assertIsNone(sender.closed)
        connection.connectionClosed("bye")
        self.assertRaises(NotFound, self.state.resolve, "GET", "/ping")

    def test_bad_version(self) -> None:
        """
        A HELLO with a version that is not strict semver is refused.
        """
        self.assertRejected(hello(version="1.0"), "is not MAJOR.MINOR.PATCH")

    def test_missing_field(self) -> None:
        """
        A HELLO missing an identity field is refused, naming it.
        """
        obj = json.loads(hello().payload)
        del obj["instance"]["instance_id"]
        self.assertRejected(Frame(FrameType.HELLO, new_correlation_id(), json.dumps(obj).encode()),
                            "'instance_id'")

    def test_malformed_path(self) -> None:
        """
        A HELLO with a malformed path template is refused.
        """
        obj = json.loads(hello().payload)
        obj["endpoints"][0]["path"] = "/a//b"
        self.assertRejected(Frame(FrameType.HELLO, new_correlation_id(), json.dumps(obj).encode()),
                            "empty segment")

    def test_path_of_other_service(self) -> None:
        """
        A HELLO announcing a path owned by another service is refused.
        """
        first, _ = self.connect()
        first.frameReceived(hello())
        self.assertRejected(hello(service="audit"), "owned by service 'billing'")

    def test_not_json(self) -> None:
        """
        A HELLO that is not JSON is refused.
        """
        self.assertRejected(Frame(FrameType.HELLO, new_correlation_id(), b"\xff"), "not UTF-8 JSON")

    def test_other_frame_first(self) -> None:
        """
        Any frame other than HELLO first closes the connection.
        """
        self.assertRejected(Frame(FrameType.HEARTBEAT, new_correlation_id(), b"{}"),
                            "expected HELLO first")

    def test_second_hello(self) -> None:
        """
        A second HELLO on one connection closes it.
        """
        connection, sender = self.connect()
        connection.frameReceived(hello())
        connection.frameReceived(hello())
        self.assertIn("HELLO sent twice", sender.closed)

    def test_forbidden_frames(self) -> None:
        """
        A microservice may not send REQUEST or CANCEL.
        """
        for kind in (FrameType.REQUEST, FrameType.CANCEL, FrameType.REQUEST_STREAM_DATA):
            connection, sender = self.connect()
            connection.frameReceived(hello(instance_id=str(kind)))
            connection.frameReceived(Frame(kind, new_correlation_id(), b""))
            self.assertIn("may not send", sender.closed)
            connection.connectionClosed("closed")

    def test_heartbeat(self) -> None:
        """
        A heartbeat refreshes last_heartbeat and carries DRAINING; a
        malformed one is ignored.
        """
        connection, sender = self.connect()
        connection.frameReceived(hello())
        self.clock.advance(7)
        connection.frameReceived(Frame(FrameType.HEARTBEAT, new_correlation_id(), encode_heartbeat(
            Heartbeat("b-1", InstanceHealthStatus.DRAINING))))
        self.assertEqual(connection.state.last_heartbeat, 7)
        self.assertEqual(connection.state.status, InstanceHealthStatus.DRAINING)
        connection.frameReceived(Frame(FrameType.HEARTBEAT, new_correlation_id(), b"junk"))
        self.assertIsNone(sender.closed)

    def test_endpoints_update(self) -> None:
        """
        ENDPOINTS_UPDATE replaces the connection's endpoints; an invalid one
        closes the connection.
        """
        connection, sender = self.connect()
        connection.frameReceived(hello())
        connection.frameReceived(Frame(
            FrameType.ENDPOINTS_UPDATE, new_correlation_id(),
            encode_endpoints_update((EndpointDescriptor("billing", "1.0.0", "GET", "/v2"),))))
        self.assertRaises(NotFound, self.state.resolve, "GET", "/ping")
        self.assertEqual(self.state.resolve("GET", "/v2").template, "/v2")
        connection.frameReceived(Frame(FrameType.ENDPOINTS_UPDATE, new_correlation_id(), b"{}"))
        self.assertIn("invalid ENDPOINTS_UPDATE", sender.closed)

    def test_late_and_malformed_responses(self) -> None:
        """
        A RESPONSE for an unknown id is counted and dropped without closing
        the connection.
        """
        connection, sender = self.connect()
        connection.frameReceived(hello())
        connection.frameReceived(Frame(FrameType.RESPONSE, new_correlation_id(),
                                       encode_response(ResponseMessage(200))))
        connection.frameReceived(
            Frame(FrameType.RESPONSE_STREAM_DATA, new_correlation_id(), b"\x01"))
        self.assertEqual(connection.in_flight.late_frames, 2)
        self.assertIsNone(sender.closed)

    def test_response_before_hello(self) -> None:
        """
        A RESPONSE before the HELLO is refused like any other first frame.
        """
        self.assertRejected(Frame(FrameType.RESPONSE, new_correlation_id(),
                                  encode_response(ResponseMessage(200))), "expected HELLO first")

    def test_non_finite_timeout(self) -> None:
        """
        NaN and Infinity are not JSON: a HELLO using them is refused.
        """
        for constant in ("NaN", "Infinity"):
            text = hello().payload.decode().replace('"default_timeout":30.0',
                                                    f'"default_timeout":{constant}')
            self.assertRejected(Frame(FrameType.HELLO, new_correlation_id(), text.encode()),
                                "not allowed")

    def test_refused_update_is_answered(self) -> None:
        """
        An ENDPOINTS_UPDATE that is refused is answered with the reason
        before the connection closes.
        """
        connection, sender = self.connect()
        connection.frameReceived(hello())
        sender.take()
        connection.frameReceived(Frame(FrameType.ENDPOINTS_UPDATE, new_correlation_id(), b"{}"))
        self.assertIn("missing 'endpoints'", decode_hello_ack(sender.frames[0].payload).reason)

    def test_bad_response_header_fails_one_request(self) -> None:
        """
        A RESPONSE with a header HTTP cannot carry fails that request with
        502 and leaves the connection and the other requests alone.
        """
        from stellarouter.common.payloads import RequestMessage
        from stellarouter.gateway.errors import UpstreamProtocolError
        from stellarouter.testing.fakes import RecordingSink

        connection, sender = self.connect()
        connection.frameReceived(hello())
        bad_sink, good_sink = RecordingSink(), RecordingSink()
        bad = connection.send_request(RequestMessage("GET", "/ping", "/ping"), 5.0, bad_sink)
        good = connection.send_request(RequestMessage("GET", "/ping", "/ping"), 5.0, good_sink)
        header = json.dumps({"status": 200, "headers": [["Bad Name", "v"]]}).encode()
        connection.frameReceived(Frame(FrameType.RESPONSE, bad,
                                       len(header).to_bytes(4, "big") + header))
        connection.frameReceived(Frame(FrameType.RESPONSE, good,
                                       encode_response(ResponseMessage(200, [], b"ok"))))
        self.assertIsInstance(bad_sink.error, UpstreamProtocolError)
        self.assertEqual(good_sink.response.body, b"ok")
        self.assertIsNone(sender.closed)
        self.assertEqual(connection.state.in_flight, 0)
        self.clock.advance(10)

    def test_request_headers_too_large(self) -> None:
        """
        A request whose headers cannot fit in one frame is refused with 431
        before anything is sent or counted.
        """
        from stellarouter.common.payloads import RequestMessage
        from stellarouter.gateway.errors import RequestHeadersTooLarge
        from stellarouter.testing.fakes import RecordingSink

        connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1"), self.clock,
                                       max_frame_bytes=4096)
        sender = FakeFrameSender()
        connection.connectionOpened(sender)
        connection.frameReceived(hello())
        sender.take()
        message = RequestMessage("GET", "/ping", "/ping", headers=[("Cookie", "c" * 5000)])
        error = self.assertRaises(RequestHeadersTooLarge, connection.send_request, message, 5.0,
                                  RecordingSink())
        self.assertEqual(error.status, 431)
        self.assertEqual((sender.frames, connection.state.in_flight, len(connection.in_flight)),
                         ([], 0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_compact_headers_when_announced(self) -> None:
        """
        A microservice that announces C{compact-headers} gets compact
        REQUEST headers (also for a body sent as stream frames), and the HELLO
        answer lists the feature: the gateway reads compact RESPONSE headers.
        One that does not gets JSON and an answer without features; a
        feature the gateway does not know is ignored.
        """
        from stellarouter.common.payloads import RequestMessage, decode_request
        from stellarouter.testing.fakes import RecordingSink

        for features, compact in (((COMPACT_HEADERS, "later-thing"), True), ((), False),
                                  (("later-thing",), False)):
            connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1"), self.clock,
                                           max_frame_bytes=4096)
            sender = FakeFrameSender()
            connection.connectionOpened(sender)
            connection.frameReceived(hello(features=features))
            ack = decode_hello_ack(sender.take()[0].payload)
            self.assertEqual(ack.features, (COMPACT_HEADERS,) if compact else ())
            message = RequestMessage("GET", "/ping", "/ping", headers=[("Accept", "*/*")])
            connection.send_request(message, 5.0, RecordingSink())
            connection.send_request(message._replace(body=b"x" * 5000), 5.0, RecordingSink())
            for request in [f for f in sender.take() if f.type is FrameType.REQUEST]:
                self.assertEqual(request.payload[4] == COMPACT_MARKER, compact, features)
                self.assertEqual(decode_request(request.payload).headers, [("Accept", "*/*")])
            # Either RESPONSE form is read.
            for response_compact in (True, False):
                sink = RecordingSink()
                cid = connection.send_request(message, 5.0, sink)
                connection.frameReceived(Frame(FrameType.RESPONSE, cid, encode_response(
                    ResponseMessage(200, [("A", "b")], b"ok"), response_compact)))
                self.assertEqual(sink.response, ResponseMessage(200, [("A", "b")], b"ok"))
            connection.connectionClosed("test over")
