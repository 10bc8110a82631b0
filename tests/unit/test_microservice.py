"""
Tests for the microservice SDK: registration, the dispatcher, the session.
"""

from typing import Any, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stellarouter.common.enums import CancelReason, FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameReceiver, IRawStellaEndpoint
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import (
    COMPACT_HEADERS,
    COMPACT_MARKER,
    HelloAck,
    RequestMessage,
    decode_hello,
    decode_response,
    decode_stream_data,
    encode_cancel,
    encode_hello_ack,
    encode_request,
    encode_response,
    encode_stream_data,
    ResponseMessage,
)
from stellarouter.config.microservice import MicroserviceConfig
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.microservice.service import MicroserviceService
from stellarouter.microservice.session import RouterSession
from stellarouter.testing.fakes import FakeFrameSender


#: The header the SDK adds to every response.
VERSION = ("X-Stella-Version", "1.0.0")


def request(template: str, method: str = "GET", body: bytes = b"", streaming: bool = False,
            deadline: Optional[float] = None) -> Frame:
    return Frame(FrameType.REQUEST, new_correlation_id(), encode_request(RequestMessage(
        method, template, template, body=body, streaming=streaming, deadline=deadline)))


class RegistrationTests(SynchronousTestCase):
    def test_descriptors(self) -> None:
        """
        Decorated handlers become endpoint descriptors with the service's
        identity, in registration order, paths normalised.
        """
        app = Microservice("Billing", "2.0.1")

        @app.endpoint("get", "/a/", timeout=3)
        def a(ctx: Any) -> RawResponse:
            return RawResponse()

        @app.json("POST", "/b/{id}")
        def b(ctx: Any, body: Any) -> Any:
            return body

        self.assertEqual(app.descriptors(), (
            EndpointDescriptor("billing", "2.0.1", "GET", "/a", 3.0),
            EndpointDescriptor("billing", "2.0.1", "POST", "/b/{id}"),
        ))

    def test_invalid(self) -> None:
        """
        Bad identities, paths, timeouts and duplicates are refused at
        registration.
        """
        self.assertRaises(ValueError, Microservice, "bad name", "1.0.0")
        self.assertRaises(ValueError, Microservice, "ok", "1.0")
        app = Microservice("ok", "1.0.0")
        app.endpoint("GET", "/x")(lambda ctx: None)
        self.assertRaises(ValueError, app.endpoint("GET", "/x/"), lambda ctx: None)
        self.assertRaises(ValueError, app.endpoint("GET", "x"), lambda ctx: None)
        self.assertRaises(ValueError, app.endpoint("GET", "/y", timeout=0), lambda ctx: None)

    def test_class_endpoint(self) -> None:
        """
        A class providing IRawStellaEndpoint is registered and served.
        """
        @implementer(IRawStellaEndpoint)
        class Hello:
            descriptor = EndpointDescriptor("", "", "GET", "/hello")

            def handle(self, ctx: Any) -> RawResponse:
                return RawResponse.text("hi")

        app = Microservice("svc", "1.0.0")
        endpoint = Hello()
        verifyObject(IRawStellaEndpoint, endpoint)
        app.add(endpoint)
        self.assertEqual(app.descriptors()[0].service_name, "svc")
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock()).request_received(request("/hello"))
        self.assertEqual(decode_response(sender.frames[0].payload).body, b"hi")

    def test_service_needs_a_router(self) -> None:
        """
        A microservice refuses to start without a router, saying so.
        """
        error = self.assertRaises(ValueError, MicroserviceService, Microservice("s", "1.0.0"),
                                  MicroserviceConfig("eu1", ()), Clock())
        self.assertIn("at least one router", str(error))


class DispatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Microservice("svc", "1.0.0")
        self.sender = FakeFrameSender()
        self.clock = Clock()
        self.clock.advance(1000)
        self.dispatcher = RequestDispatcher(self.app, self.sender, self.clock, max_frame_bytes=2048,
                                            max_request_bytes=10_000)
        self.pending: list = []

        @self.app.endpoint("POST", "/echo")
        def echo(ctx: Any) -> RawResponse:
            return RawResponse(200, [], ctx.body)

        @self.app.endpoint("GET", "/wait")
        def wait(ctx: Any) -> Deferred:
            d: Deferred = Deferred()
            self.pending.append((ctx, d))
            return d

        @self.app.endpoint("GET", "/none")
        def none(ctx: Any) -> None:
            return None

    def responses(self) -> list:
        return [decode_response(f.payload) for f in self.sender.take() if f.type is FrameType.RESPONSE]

    def test_unknown_endpoint(self) -> None:
        """
        A REQUEST for an endpoint the app does not have is answered 404.
        """
        self.dispatcher.request_received(request("/nope"))
        self.assertEqual(self.responses()[0].status, 404)

    def test_malformed_request(self) -> None:
        """
        A malformed REQUEST payload is answered 400, never raised.
        """
        self.dispatcher.request_received(
            Frame(FrameType.REQUEST, new_correlation_id(), b"\x00\x00"))
        self.assertEqual(self.responses()[0].status, 400)

    def test_bad_handler_result(self) -> None:
        """
        A handler returning something other than a RawResponse gives 500.
        """
        self.dispatcher.request_received(request("/none"))
        self.assertEqual(self.responses()[0].status, 500)

    def test_cancel_and_late_result(self) -> None:
        """
        CANCEL fires ctx.cancelled and cancels the Deferred; a result that
        comes later is discarded and counted; a CANCEL for an unknown id is a
        no-op.
        """
        frame = request("/wait")
        self.dispatcher.request_received(frame)
        ctx, d = self.pending[0]
        self.dispatcher.cancel(frame.correlation_id, CancelReason.TIMEOUT)
        self.assertEqual(self.successResultOf(ctx.cancelled), CancelReason.TIMEOUT)
        self.assertTrue(d.called)
        self.dispatcher.cancel(frame.correlation_id, CancelReason.TIMEOUT)
        self.dispatcher.cancel(new_correlation_id(), CancelReason.TIMEOUT)
        self.assertEqual(self.dispatcher.ignored_cancels, 2)
        self.assertEqual((self.responses(), self.dispatcher.in_flight), ([], 0))

    def test_head_answered_before_a_stream(self) -> None:
        """
        A CANCEL marked C{head_only} for a request not streaming its answer
        (a peer's mistake) is an ordinary CANCEL of its reason; for an
        unknown id it is a no-op.
        """
        frame = request("/wait")
        self.dispatcher.request_received(frame)
        ctx, d = self.pending[0]
        self.dispatcher.head_answered(frame.correlation_id, CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(self.successResultOf(ctx.cancelled), CancelReason.CLIENT_DISCONNECTED)
        self.assertTrue(d.called)
        self.dispatcher.head_answered(new_correlation_id(), CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(self.dispatcher.ignored_cancels, 1)
        self.assertEqual((self.responses(), self.dispatcher.in_flight, self.dispatcher.served),
                         ([], 0, 0))

    def test_handler_ignoring_cancellation(self) -> None:
        """
        A handler whose Deferred ignores cancellation does not block later
        requests, and its eventual result is discarded.
        """
        gate: Deferred = Deferred()
        later: Deferred = Deferred()

        async def stubborn(ctx: Any) -> RawResponse:
            try:
                await gate
            except CancelledError:
                pass  # ignores the cancellation and carries on
            await later
            return RawResponse.text("too late")

        self.app.endpoint("GET", "/stubborn")(stubborn)
        frame = request("/stubborn")
        self.dispatcher.request_received(frame)
        self.dispatcher.cancel(frame.correlation_id, CancelReason.CLIENT_DISCONNECTED)
        self.dispatcher.request_received(request("/echo", "POST", b"next"))
        self.assertEqual(self.responses()[0].body, b"next")
        later.callback(None)
        self.assertEqual(self.responses(), [])
        self.assertEqual(self.dispatcher.in_flight, 0)

    def test_deadline(self) -> None:
        """
        The handler sees the absolute deadline; a REQUEST that arrives at or
        past its deadline is answered 504 without calling the handler.
        """
        self.dispatcher.request_received(request("/wait", deadline=1000.5))
        self.assertEqual(self.pending[0][0].deadline, 1000.5)
        self.dispatcher.request_received(request("/wait", deadline=1000.0))
        self.assertEqual(len(self.pending), 1)
        self.assertEqual(self.responses()[0].status, 504)
        self.assertEqual(self.dispatcher.expired, 1)

    def test_large_response_split(self) -> None:
        """
        A response body larger than a frame goes as stream frames that
        reassemble to the body.
        """
        body = bytes(range(256)) * 40
        self.dispatcher.request_received(request("/echo", "POST", body))
        frames = self.sender.take()
        head = decode_response(frames[0].payload)
        self.assertTrue(head.streaming)
        chunks = [decode_stream_data(f.payload) for f in frames[1:]]
        self.assertTrue(all(len(f.payload) + 17 <= 2048 for f in frames))
        self.assertEqual(b"".join(c for c, _, _ in chunks), body)
        self.assertEqual([end for _, end, _ in chunks], [False] * (len(chunks) - 1) + [True])

    def test_request_body_reassembled(self) -> None:
        """
        A request whose body comes in stream frames is dispatched once the
        last chunk arrives, with the whole body.
        """
        frame = request("/echo", "POST", streaming=True)
        cid = frame.correlation_id
        self.dispatcher.request_received(frame)
        self.dispatcher.stream_data_received(Frame(FrameType.REQUEST_STREAM_DATA, cid,
                                                   encode_stream_data(b"ab")))
        self.assertEqual(self.responses(), [])
        self.dispatcher.stream_data_received(Frame(FrameType.REQUEST_STREAM_DATA, cid,
                                                   encode_stream_data(b"c", end=True)))
        self.assertEqual(self.responses()[0].body, b"abc")

    def test_request_body_over_limit(self) -> None:
        """
        A reassembled body over the limit is answered 413 and dropped.
        """
        frame = request("/echo", "POST", streaming=True)
        self.dispatcher.request_received(frame)
        self.dispatcher.stream_data_received(Frame(
            FrameType.REQUEST_STREAM_DATA, frame.correlation_id,
            encode_stream_data(b"x" * 10_001)))
        self.assertEqual(self.responses()[0].status, 413)


class ContextTests(SynchronousTestCase):
    def test_handler_sees_the_request(self) -> None:
        """
        The context a handler receives holds each part of the REQUEST frame
        in its own field, the correlation id as text and the serving
        instance.
        """
        instance = InstanceDescriptor("svc-1", "svc", "1.0.0", "eu1")
        app = Microservice("svc", "1.0.0")
        seen: list = []
        app.endpoint("POST", "/items/{id}")(lambda ctx: seen.append(ctx) or RawResponse())
        clock = Clock()
        dispatcher = RequestDispatcher(app, FakeFrameSender(), clock, instance=instance)
        frame = Frame(FrameType.REQUEST, new_correlation_id(), encode_request(RequestMessage(
            "POST", "/items/a%2Fb", "/items/{id}", {"id": "a/b"}, "q=1",
            [("X-A", "1"), ("x-a", "2")], {"sub": "alice"}, 30.0, False, b"body")))
        dispatcher.request_received(frame)
        [ctx] = seen
        self.assertEqual(
            (ctx.method, ctx.path, ctx.path_params, ctx.query, list(ctx.headers),
             ctx.headers.get_all("X-A"), ctx.claims, ctx.body, ctx.correlation_id,
             ctx.deadline, ctx.instance, ctx.cancel_reason, ctx.cancelled.called),
            ("POST", "/items/a%2Fb", {"id": "a/b"}, "q=1", [("X-A", "1"), ("x-a", "2")],
             ["1", "2"], {"sub": "alice"}, b"body", str(frame.correlation_id), 30.0, instance,
             None, False))


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.app = Microservice("svc", "1.0.0")
        self.app.endpoint("GET", "/ping")(lambda ctx: RawResponse.text("pong"))
        self.session = RouterSession(self.app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                     "test-router", self.clock, heartbeat_interval=5.0)
        self.sender = FakeFrameSender()
        self.session.connectionOpened(self.sender)

    def test_interface(self) -> None:
        """
        The session is an IFrameReceiver.
        """
        verifyObject(IFrameReceiver, self.session)

    def test_hello_then_heartbeats(self) -> None:
        """
        The session sends HELLO first; once accepted it sends a heartbeat
        every interval, and stops when the connection closes.
        """
        hello_frame = self.sender.take()[0]
        hello = decode_hello(hello_frame.payload)
        self.assertEqual(hello.instance.instance_id, "i-1")
        self.assertEqual([e.path for e in hello.endpoints], ["/ping"])
        self.session.frameReceived(Frame(FrameType.HELLO, hello_frame.correlation_id,
                                         encode_hello_ack(HelloAck(True, None, "gw", "eu1"))))
        self.clock.advance(5.0 - 1e-6)
        self.assertEqual(self.sender.take(), [])
        self.clock.advance(1e-6)
        self.assertEqual([f.type for f in self.sender.take()], [FrameType.HEARTBEAT])
        self.session.connectionClosed("done")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ping_echoed(self) -> None:
        """
        A gateway HEARTBEAT ping is echoed unchanged.
        """
        self.sender.take()
        ping = Frame(FrameType.HEARTBEAT, new_correlation_id(), b'{"ping": 1.5}')
        self.session.frameReceived(ping)
        self.assertEqual(self.sender.take(), [ping])

    def test_rejected(self) -> None:
        """
        A rejected HELLO is logged; no heartbeats start.
        """
        self.session.frameReceived(Frame(FrameType.HELLO, new_correlation_id(), encode_hello_ack(
            HelloAck(False, "nope", "gw", "eu1"))))
        self.assertIsNone(self.session.accepted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rejection_reason_logged_escaped(self) -> None:
        """
        A refusal reason holding a newline or ESC (a peer that is not one of
        our gateways) is logged escaped: one printable line.
        """
        with capturedLogs() as events:
            self.session.frameReceived(Frame(FrameType.HELLO, new_correlation_id(),
                                             encode_hello_ack(HelloAck(
                                                 False, "nope\n{\"x\":1}\x1b[2J", "gw", "eu1"))))
        [line] = [formatEvent(e) for e in events if "rejected HELLO" in formatEvent(e)]
        self.assertTrue(line.endswith('nope\\n{"x":1}\\x1b[2J'), line)

    def test_requests_and_cancel(self) -> None:
        """
        REQUEST frames are served; a malformed CANCEL is ignored.
        """
        self.sender.take()
        self.session.frameReceived(request("/ping"))
        self.assertEqual(decode_response(self.sender.take()[0].payload).body, b"pong")
        self.session.frameReceived(Frame(FrameType.CANCEL, new_correlation_id(), b"??"))
        self.session.frameReceived(Frame(FrameType.CANCEL, new_correlation_id(),
                                         encode_cancel(CancelReason.SHUTDOWN)))
        self.assertIsNone(self.sender.closed)

    def test_compact_headers(self) -> None:
        """
        HELLO announces C{compact-headers}; RESPONSE headers are compact
        once the gateway's answer lists the feature, JSON before and when it
        does not.  REQUEST headers are read in either form.
        """
        for ack_features, compact in (((COMPACT_HEADERS,), True), ((), False)):
            sender = FakeFrameSender()
            session = RouterSession(self.app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                    "test-router", self.clock)
            session.connectionOpened(sender)
            hello_frame = sender.take()[0]
            self.assertIn(COMPACT_HEADERS, decode_hello(hello_frame.payload).features)
            session.frameReceived(request("/ping"))
            self.assertEqual(sender.take()[0].payload[4:5], b"{")
            session.frameReceived(Frame(FrameType.HELLO, hello_frame.correlation_id,
                                        encode_hello_ack(HelloAck(True, None, "gw", "eu1",
                                                                  ack_features))))
            for request_compact in (False, True):
                session.frameReceived(Frame(FrameType.REQUEST, new_correlation_id(),
                                            encode_request(RequestMessage("GET", "/ping", "/ping"),
                                                           request_compact)))
                payload = sender.take()[0].payload
                self.assertEqual(payload[4] == COMPACT_MARKER, compact)
                self.assertEqual(decode_response(payload).body, b"pong")
            session.connectionClosed("done")

    def test_compact_headers_off(self) -> None:
        """
        With C{compact_headers=False} the session does not announce it and
        answers in JSON even when the gateway reads compact headers.
        """
        sender = FakeFrameSender()
        session = RouterSession(self.app, InstanceDescriptor("i-1", "svc", "1.0.0", "eu1"),
                                "test-router", self.clock, compact_headers=False)
        session.connectionOpened(sender)
        hello_frame = sender.take()[0]
        self.assertNotIn(COMPACT_HEADERS, decode_hello(hello_frame.payload).features)
        session.frameReceived(Frame(FrameType.HELLO, hello_frame.correlation_id, encode_hello_ack(
            HelloAck(True, None, "gw", "eu1", (COMPACT_HEADERS,)))))
        session.frameReceived(request("/ping"))
        self.assertEqual(sender.take()[0].payload[4:5], b"{")
        session.connectionClosed("done")

    def test_unexpected_frame(self) -> None:
        """
        A frame the gateway never sends closes the connection.
        """
        self.session.frameReceived(Frame(FrameType.RESPONSE, new_correlation_id(), b""))
        self.assertIn("unexpected RESPONSE", self.sender.closed)


class InvalidResponseTests(SynchronousTestCase):
    """
    A handler bug answers 500 for that request only; the connection stays.
    """

    def test_invalid_results(self) -> None:
        """
        A str body, a bad status, a bad header name or value, a non-pair
        header, sync or async, each give 500 problem+json and nothing else.
        """
        bad = [
            RawResponse(200, (), "text"),  # type: ignore[arg-type]
            RawResponse(100, (), b""),
            RawResponse(True, (), b""),  # type: ignore[arg-type]
            RawResponse(200, [("Bad Name", "v")], b""),
            RawResponse(200, [("X-Evil", "a\r\nInjected: yes")], b""),
            RawResponse(200, [("X-Euro", "€")], b""),
            RawResponse(200, ["oops"], b""),  # type: ignore[list-item]
        ]
        for index, result in enumerate(bad):
            for wrap in (lambda r: r, lambda r: _later(r)):
                app = Microservice("svc", "1.0.0")
                app.endpoint("GET", "/x")(lambda ctx, r=result, w=wrap: w(r))
                sender = FakeFrameSender()
                RequestDispatcher(app, sender, Clock()).request_received(request("/x"))
                frames = sender.take()
                self.assertEqual(len(frames), 1, index)
                response = decode_response(frames[0].payload)
                self.assertEqual(response.status, 500, index)
                self.assertIsNone(sender.closed)

    def test_valid_results_of_other_types(self) -> None:
        """
        A body as C{bytearray} or C{memoryview}, header pairs as lists, names
        and values as C{str} subclasses, and a status as an C{int} subclass
        are sent as given, not refused.
        """
        class Text(str):
            pass

        class Status(int):
            pass

        good = [
            RawResponse(200, (), bytearray(b"r")),
            RawResponse(200, [["X-A", "1"]], memoryview(b"r")),
            RawResponse(200, ((Text("X-A"), Text("1")),), b"r"),
            RawResponse(Status(201), [("X-A", "1")], b"r"),
        ]
        for index, result in enumerate(good):
            app = Microservice("svc", "1.0.0")
            app.endpoint("GET", "/x")(lambda ctx, r=result: r)
            sender = FakeFrameSender()
            RequestDispatcher(app, sender, Clock()).request_received(request("/x"))
            response = decode_response(sender.take()[0].payload)
            self.assertEqual((response.status, response.body), (int(result.status), b"r"), index)
            self.assertEqual(response.headers, ([("X-A", "1")] if index else []) + [VERSION],
                             index)

    def test_headers_as_a_mapping(self) -> None:
        """
        A handler may give its response headers as a mapping of names to
        values (raw, JSON and streaming responses alike); a bad name in a
        mapping is refused like a bad pair.
        """
        from stellarouter.microservice import JsonResponse, StreamingResponse

        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/raw")(
            lambda ctx: RawResponse(200, {"X-A": "1", "Content-Type": "text/plain"}, b"r"))
        app.json("GET", "/json")(
            lambda ctx, payload: JsonResponse({"ok": True}, headers={"X-A": "1"}))
        app.endpoint("GET", "/stream")(
            lambda ctx: StreamingResponse(200, {"X-A": "1"}, [b"s"]))
        app.endpoint("GET", "/bad")(lambda ctx: RawResponse(200, {"Bad Name": "v"}, b""))
        expected = {"/raw": [("X-A", "1"), ("Content-Type", "text/plain")],
                    "/json": [("Content-Type", "application/json"), ("X-A", "1")],
                    "/stream": [("X-A", "1")]}
        for path, headers in expected.items():
            sender = FakeFrameSender()
            RequestDispatcher(app, sender, Clock()).request_received(request(path))
            response = decode_response(sender.take()[0].payload)
            self.assertEqual((response.status, response.headers), (200, headers + [VERSION]),
                             path)
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock()).request_received(request("/bad"))
        self.assertEqual(decode_response(sender.take()[0].payload).status, 500)

    def test_headers_too_large_for_a_frame(self) -> None:
        """
        Response headers that cannot fit in one frame give a 500, never an
        oversized frame; an empty body still ends its stream.
        """
        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/x")(lambda ctx: RawResponse(200, [("X-Big", "a" * 5000)], b""))
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock(), max_frame_bytes=4096).request_received(
            request("/x"))
        frames = sender.take()
        self.assertTrue(all(len(f.payload) + 17 <= 4096 for f in frames))
        self.assertEqual(decode_response(frames[0].payload).status, 500)

    def test_empty_body_stream_ends(self) -> None:
        """
        A response whose headers just miss one frame streams with an end
        frame even though the body is empty.
        """
        def size(n: int) -> int:
            return len(encode_response(ResponseMessage(200, [("X-Big", "a" * n), VERSION],
                                                       b""))) + 17

        n = next(n for n in range(3900, 4100) if size(n) == 4097)
        app = Microservice("svc", "1.0.0")
        app.endpoint("GET", "/x")(lambda ctx: RawResponse(200, [("X-Big", "a" * n)], b""))
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock(), max_frame_bytes=4096).request_received(
            request("/x"))
        frames = sender.take()
        self.assertTrue(decode_response(frames[0].payload).streaming)
        self.assertEqual([f.type for f in frames[1:]], [FrameType.RESPONSE_STREAM_DATA])
        self.assertEqual(decode_stream_data(frames[1].payload), (b"", True, False))


def _later(result: object) -> Deferred:
    d: Deferred = Deferred()
    d.callback(result)
    return d
