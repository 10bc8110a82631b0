"""
Tests for the Klein bridge (issue 25): C{Microservice.mount_klein} serves an
unmodified Klein app (C{examples/migration/notes_app.py}) through the SDK,
on a L{ServiceClient} and behind an in-memory gateway, on a Clock.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, List, Sequence, Tuple

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from twisted.web.static import File

from examples.migration.notes_app import NotesAPI
from stellarouter.common import models
from stellarouter.common.enums import CancelReason
from stellarouter.microservice import HeaderMap, Microservice, RawResponse
from stellarouter.microservice.klein_bridge import (
    HIGH_WATER,
    MAX_BUFFERED,
    RequestCancelled,
    route_templates,
)
from stellarouter.testing.client import ServiceClient, ServiceResponse, StreamAborted
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import InMemoryHttpClient

#: What the gateway adds to every request it forwards.
FORWARDED = [("Host", "notes.example:8443"), ("X-Forwarded-For", "203.0.113.7"),
             ("X-Forwarded-Proto", "https")]
FORM = ("Content-Type", "application/x-www-form-urlencoded")


class BridgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.api = NotesAPI(self.clock)
        self.service = Microservice("notes", "2.0.0")
        self.service.mount_klein(self.api.app, timeout=2.0, reactor=self.clock)
        self.client = ServiceClient(self.service, self.clock)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def send(self, method: str, path: str, body: bytes = b"",
             headers: Sequence[Tuple[str, str]] = (), **kwargs: Any) -> Deferred:
        return self.client.request(method, path, body=body,
                                   headers=FORWARDED + list(headers), **kwargs)

    def call(self, method: str, path: str, body: bytes = b"",
             headers: Sequence[Tuple[str, str]] = ()) -> ServiceResponse:
        d = self.send(method, path, body, headers)
        self.clock.advance(0)
        return self.successResultOf(d)

    def create(self, text: str = "hello", tag: str = "a") -> ServiceResponse:
        return self.call("POST", "/notes", f"text={text}&tag={tag}".encode(), [FORM])

    def test_routes_become_endpoints(self) -> None:
        """
        Each route is one endpoint per method: C{<x>} → C{{x}},
        C{<path:x>} and C{branch=True} → a catch-all, any method for a
        route that lists none, HEAD left to the gateway's GET fallback.
        """
        endpoints = route_templates(self.api.app)
        for expected in [("GET", "/notes"), ("POST", "/notes"), ("GET", "/notes/{note_id}"),
                         ("DELETE", "/notes/{note_id}"), ("GET", "/files/{*name}"),
                         ("GET", "/docs"), ("GET", "/docs/{*__rest__}"),
                         ("PATCH", "/whoami")]:
            self.assertIn(expected, endpoints)
        self.assertNotIn(("HEAD", "/notes"), endpoints)
        self.assertEqual(len(endpoints), len(set(endpoints)))
        self.assertEqual({(d.method, d.path) for d in self.service.descriptors()},
                         set(endpoints))

    def test_form_post_cookie_location(self) -> None:
        """
        A form post reaches C{request.args}; C{setResponseCode},
        C{addCookie} and a C{Location} built from C{URLPath} (the client's
        scheme, host and port) come back.
        """
        response = self.create()
        self.assertEqual((response.status, response.json()), (201, {"id": 1}))
        self.assertEqual(response.headers.get("Location"), "https://notes.example:8443/notes/1")
        self.assertEqual(response.headers.get("Set-Cookie"), "last_note=1; Path=/; HttpOnly")
        self.assertEqual(response.headers.get("Content-Type"), "application/json")

    def test_query_args_and_headers(self) -> None:
        """
        Query arguments reach C{request.args}; a header the app sets comes
        back.
        """
        self.create("one", "a")
        self.create("two", "b")
        response = self.call("GET", "/notes?tag=b")
        self.assertEqual(response.json(), [{"id": 2, "tag": "b", "text": "two"}])
        self.assertEqual(response.headers.get("X-Total-Count"), "1")

    def test_handle_errors(self) -> None:
        """
        An exception a C{handle_errors} handler takes is its answer (404),
        not a 500; another one (ValueError) gets its own (400).
        """
        response = self.call("GET", "/notes/9")
        self.assertEqual((response.status, response.json()), (404, {"error": "no note 9"}))
        response = self.call("POST", "/notes", b"tag=x", [FORM])
        self.assertEqual((response.status, response.json()), (400, {"error": "a note needs text"}))

    def test_get_header(self) -> None:
        """
        C{getHeader} reads the request's headers.
        """
        self.create()
        self.assertEqual(self.call("DELETE", "/notes/1").status, 409)
        self.assertEqual(self.call("DELETE", "/notes/1", headers=[("X-Confirm", "yes")]).status,
                         204)
        self.assertEqual(self.api.notes, {})

    def test_cookie_and_redirect(self) -> None:
        """
        C{getCookie} reads the request's cookies; C{redirect} answers 302
        with C{Location}.
        """
        response = self.call("GET", "/last", headers=[("Cookie", "last_note=7")])
        self.assertEqual((response.status, response.headers.get("Location")),
                         (302, "/notes/7"))
        self.assertEqual(self.call("GET", "/last").status, 404)

    def test_deferred(self) -> None:
        """
        A handler's Deferred is waited for; its result is the response.
        """
        self.create("a rather long note text")
        d = self.send("GET", "/notes/1/summary")
        self.clock.advance(0.5 - 1e-6)
        self.assertNoResult(d)
        self.clock.advance(1e-6)
        self.assertEqual(self.successResultOf(d).json(), {"summary": "a rather long note t"})

    def test_template(self) -> None:
        """
        A twisted.web template element is rendered.
        """
        self.create("<b>")
        response = self.call("GET", "/notes/1/page")
        self.assertIn(b"<h1>Note 1</h1><p>&lt;b&gt;</p>", response.body)

    def test_client_address_scheme_host(self) -> None:
        """
        C{getClientAddress}, C{isSecure} and C{URLPath} are the client's, as
        the gateway forwarded them.
        """
        self.assertEqual(self.call("GET", "/whoami", headers=[("User-Agent", "curl")]).json(),
                         {"client": "203.0.113.7", "secure": True,
                          "url": "https://notes.example:8443/whoami", "agent": "curl"})

    def test_path_and_branch(self) -> None:
        """
        A C{<path:x>} route and a C{branch=True} route get the whole rest of
        the path.
        """
        self.assertEqual(self.call("GET", "/files/a/b/c.txt").json(), {"name": "a/b/c.txt"})
        self.assertEqual(self.call("GET", "/docs/guide/intro").body, b"docs: /guide/intro")

    def test_not_done_yet_streams(self) -> None:
        """
        A resource that writes and returns C{NOT_DONE_YET} streams: the
        headers and first rows come before the response is finished.
        """
        self.create()
        d = self.send("GET", "/export?count=2&interval=1", stream=True)
        self.clock.advance(0)
        response = self.successResultOf(d)
        self.assertEqual(response.headers.get("Content-Type"), "application/x-ndjson")
        self.assertIsNotNone(response.stream)
        body = Deferred.fromCoroutine(response.stream.read())
        self.assertNoResult(body)
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(body),
                         b'{"id": 1, "tag": "a", "text": "hello"}\n{"tick": 0}\n{"tick": 1}\n')

    def test_stream_longer_than_the_timeout_completes(self) -> None:
        """
        A C{request.write} stream that lasts 5 s on an endpoint with a 2 s
        timeout completes: the timeout counts from the last bytes once the
        response has started.
        """
        d = self.send("GET", "/feed?count=5&interval=1")
        for _ in range(6):
            self.clock.advance(1)
        response = self.successResultOf(d)
        self.assertEqual((response.status, response.body.count(b"data: tick")), (200, 5))

    def test_idle_stream_is_aborted(self) -> None:
        """
        A stream that brings nothing for the endpoint's timeout is aborted
        by the SDK (even if the gateway waits longer), and the app's
        C{notifyFinish} fails with reason TIMEOUT.
        """
        d = self.send("GET", "/feed?count=2&interval=3", timeout=60.0)
        self.clock.advance(0)
        self.clock.advance(2.0 - 1e-6)
        self.assertNoResult(d)
        self.clock.advance(1e-6)
        self.failureResultOf(d, StreamAborted)
        [error] = self.api.stopped
        self.assertIsInstance(error, RequestCancelled)
        self.assertEqual(error.reason, CancelReason.TIMEOUT)

    def test_cancel_reaches_notify_finish(self) -> None:
        """
        A client that leaves mid-stream cancels the request: the app's
        C{notifyFinish} fails and it stops writing (no timer left).
        """
        self.create()
        d = self.send("GET", "/export?count=100&interval=1")
        self.clock.advance(1)
        d.cancel()
        self.failureResultOf(d)
        [error] = self.api.stopped
        self.assertIsInstance(error, RequestCancelled)
        self.assertEqual(error.reason, CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(self.client.in_flight, 0)

    def test_cancel_reaches_a_pending_deferred(self) -> None:
        """
        A client that leaves while the handler's Deferred is pending
        cancels the request before any byte was written.
        """
        self.create()
        d = self.send("GET", "/notes/1/summary")
        self.clock.advance(0.1)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.client.in_flight, 0)


class _BigBody:
    """
    A push producer writing C{total} bytes in 64 KiB pieces when resumed.
    """

    def __init__(self, request: Any, total: int) -> None:
        self.request = request
        self.left = total
        self.paused = False
        self.pauses = 0
        #: Fires when everything is written (Klein then finishes).
        self.done: Deferred = Deferred()
        request.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.run()

    def stopProducing(self) -> None:
        self.left = 0

    def run(self) -> None:
        while self.left and not self.paused:
            piece = min(self.left, 64 * 1024)
            self.left -= piece
            self.request.write(b"x" * piece)
        if not self.left and not self.paused and not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(None)


class ProducerAndRefusalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.app = Klein()
        self.producers: List[_BigBody] = []
        self.errors: List[BaseException] = []
        app = self.app

        @app.route("/big")
        def big(request: Any) -> Any:
            producer = _BigBody(request, 3 * 1024 * 1024)
            self.producers.append(producer)
            producer.run()
            return producer.done

        @app.route("/file")
        def file(request: Any) -> Any:
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(os.urandom(1024) * 2048)
            self.file_bytes = open(path, "rb").read()
            return File(path)

        @app.route("/socket")
        def socket(request: Any) -> bytes:
            return request.transport.getPeerCertificate()  # type: ignore[no-any-return]

        @app.route("/hangup")
        def hangup(request: Any) -> bytes:
            request.loseConnection()
            return b""

        @app.route("/upload", methods=["POST"])
        def upload(request: Any) -> bytes:
            return b"%d" % len(request.content.read())

        self.service = Microservice("files", "1.0.0")
        self.service.mount_klein(app, reactor=self.clock)
        self.client = ServiceClient(self.service, self.clock)

    def test_push_producer_follows_credit(self) -> None:
        """
        A push producer registered on the request is paused while the
        gateway's credit is spent and resumed as it comes back; the whole
        body arrives.
        """
        d = self.client.get("/big")
        for _ in range(20):
            self.clock.advance(0)
        response = self.successResultOf(d)
        self.assertEqual(len(response.body), 3 * 1024 * 1024)
        [producer] = self.producers
        self.assertGreater(producer.pauses, 0)

    def test_pull_producer(self) -> None:
        """
        A static file (twisted.web's pull producer) is sent whole.
        """
        d = self.client.get("/file")
        for _ in range(20):
            self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).body, self.file_bytes)

    def test_raw_socket_refused(self) -> None:
        """
        C{request.transport} and C{loseConnection} are refused with an error
        saying why (a logged 500), never silently wrong.
        """
        for path in ["/socket", "/hangup"]:
            d = self.client.get(path)
            self.clock.advance(0)
            self.assertEqual(self.successResultOf(d).status, 500)
        messages = [str(e.value) for e in self.flushLoggedErrors()]
        self.assertTrue(any("no socket to the client" in m for m in messages), messages)
        self.assertTrue(any("cannot close the client's connection" in m for m in messages))

    def test_bad_multipart_is_400(self) -> None:
        """
        A multipart form twisted.web cannot parse is answered 400.
        """
        d = self.client.post("/upload", body=b"garbage", headers=[
            ("Content-Type", "multipart/form-data; boundary=xyz")])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).status, 400)

    def test_body_in_request_content(self) -> None:
        """
        A body that came as stream frames is buffered into
        C{request.content}.
        """
        body = os.urandom(3 * 1024 * 1024)
        d = self.client.post("/upload", body=iter([body[:HIGH_WATER], body[HIGH_WATER:]]))
        for _ in range(20):
            self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).body, b"%d" % len(body))


class GatewayComparisonTests(SynchronousTestCase):
    """
    The table-driven comparison in memory: the same requests to the notes
    app served by Klein directly and through a gateway and the bridge give
    the same status, headers (but the documented ones) and bodies.
    (C{tests/integration/test_klein_bridge.py} does it over sockets.)
    """

    #: Headers that differ by design: framing, the gateway's own, time.
    IGNORED = {"content-length", "transfer-encoding", "x-correlation-id", "x-stella-version",
               "date", "server"}

    REQUESTS: List[Tuple[str, str, bytes, List[Tuple[str, str]]]] = [
        ("POST", "/notes", b"text=first&tag=a", [FORM]),
        ("POST", "/notes", b"text=second&tag=b", [FORM]),
        ("POST", "/notes", b"tag=b", [FORM]),
        ("GET", "/notes", b"", []),
        ("GET", "/notes?tag=b&limit=1", b"", []),
        ("GET", "/notes/1", b"", []),
        ("GET", "/notes/99", b"", []),
        ("GET", "/notes/abc", b"", []),
        ("DELETE", "/notes/2", b"", []),
        ("DELETE", "/notes/2", b"", [("X-Confirm", "yes")]),
        ("GET", "/last", b"", [("Cookie", "last_note=1")]),
        ("GET", "/last", b"", []),
        ("GET", "/notes/1/page", b"", []),
        ("GET", "/files/a/b%20c/d.txt", b"", []),
        ("GET", "/docs/x/y", b"", []),
        ("GET", "/whoami", b"", [("User-Agent", "table")]),
    ]

    def serve(self, via_gateway: bool) -> List[Tuple[int, List[Tuple[str, str]], bytes]]:
        clock = Clock()
        api = NotesAPI(clock)
        answers = []
        if via_gateway:
            service = Microservice("notes", "2.0.0")
            service.mount_klein(api.app, reactor=clock)
            deployment = InMemoryDeployment(clock)
            self.addCleanup(deployment.stop)
            deployment.add(service)
            send = deployment.request
        else:
            site = Site(api.app.resource(), reactor=clock)

            def send(method: str, path: str, body: bytes = b"", headers: Any = ()) -> Any:
                # As a client of the gateway, which listens on port 80 here.
                client = InMemoryHttpClient(site, StringTransport(
                    hostAddress=IPv4Address("TCP", "10.0.0.2", 80),
                    peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
                client.send(method, path, body, headers)
                clock.advance(0)
                return client.response()
        for method, path, body, headers in self.REQUESTS:
            response = send(method, path, body, headers)
            kept = sorted((n.lower(), v) for n, v in response.headers
                          if n.lower() not in self.IGNORED)
            answers.append((response.status, kept, response.body))
        return answers

    def test_same_answers(self) -> None:
        """
        Every request of the table gets the same answer both ways.
        """
        direct = self.serve(False)
        bridged = self.serve(True)
        for request, one, other in zip(self.REQUESTS, direct, bridged):
            self.assertEqual(one, other, f"{request[0]} {request[1]}")


class SdkApiTests(SynchronousTestCase):
    def test_json_with_headers(self) -> None:
        """
        C{RawResponse.json} takes a status and extra headers (pairs or a
        mapping); a C{Content-Type} among them replaces the default.
        """
        self.assertEqual(
            RawResponse.json({"id": 1}, status=201, headers={"Location": "/n/1"}),
            RawResponse(201, (("Content-Type", "application/json"), ("Location", "/n/1")),
                        b'{"id":1}'))
        self.assertEqual(
            RawResponse.json([], headers=[("Content-Type", "application/x+json"),
                                          ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]).headers,
            (("Content-Type", "application/x+json"), ("Set-Cookie", "a=1"),
             ("Set-Cookie", "b=2")))

    def test_json_headers_reach_the_client(self) -> None:
        """
        A handler's C{RawResponse.json(..., headers=...)} goes out with
        those headers (the 500 of issue 25).
        """
        service = Microservice("s", "1.0.0")

        @service.endpoint("POST", "/items")
        def create(ctx: Any) -> RawResponse:
            return RawResponse.json({"id": 1}, status=201,
                                    headers=[("Location", "/items/1"), ("X-Total-Count", "1")])

        client = ServiceClient(service)
        response = self.successResultOf(client.post("/items"))
        self.assertEqual((response.status, response.headers.get("Location"),
                          response.headers.get("X-Total-Count")), (201, "/items/1", "1"))

    def test_all_headers(self) -> None:
        """
        C{HeaderMap.items()} (and iterating it) gives every header in order,
        as received, a repeated one once per value.
        """
        headers = HeaderMap([("Accept", "a"), ("X-Y", "1"), ("x-y", "2")])
        self.assertEqual(headers.items(), [("Accept", "a"), ("X-Y", "1"), ("x-y", "2")])
        self.assertEqual(list(headers), headers.items())



class OlderGatewayTests(SynchronousTestCase):
    def test_older_gateway_refuses_clearly(self) -> None:
        """
        A gateway that does not know catch-all templates refuses the HELLO
        naming the segment, and the SDK's log says what to do.
        """
        clock = Clock()
        service = Microservice("notes", "2.0.0")
        service.mount_klein(NotesAPI(clock).app, reactor=clock)
        # The gateway's own validation, as before issue 25: no {*name}.
        self.patch(models, "_CATCH_ALL_PARAM", re.compile(r"(?!)"))
        deployment = InMemoryDeployment(clock)
        self.addCleanup(deployment.stop)
        with capturedLogs() as events:
            deployment.add(service)
        rejections = [formatEvent(e) for e in events if "rejected HELLO" in e["log_format"]]
        self.assertTrue(rejections, [formatEvent(e) for e in events])
        self.assertIn("malformed segment '{*name}'", rejections[0])
        self.assertIn("does not know catch-all templates", rejections[0])
        self.assertEqual(deployment.request("GET", "/notes").status, 404)


class OverflowTests(SynchronousTestCase):
    def test_writer_without_producer_is_bounded(self) -> None:
        """
        An app that writes more than L{MAX_BUFFERED} bytes its client has
        not taken, without a producer, has its response abandoned (logged,
        the stream aborted, C{notifyFinish} failed) instead of filling
        memory.
        """
        clock = Clock()
        app = Klein()
        finished: List[Any] = []

        @app.route("/flood")
        def flood(request: Any) -> Deferred:
            request.notifyFinish().addBoth(finished.append)
            for _ in range(MAX_BUFFERED // (1024 * 1024) + 2):
                request.write(b"x" * 1024 * 1024)
            return Deferred()

        service = Microservice("flood", "1.0.0")
        service.mount_klein(app, reactor=clock)
        client = ServiceClient(service, clock)
        d = client.get("/flood", stream=True)
        clock.advance(0)
        response = self.successResultOf(d)
        self.failureResultOf(Deferred.fromCoroutine(response.stream.read()), StreamAborted)
        [failure] = finished
        self.assertIsInstance(failure.value, RequestCancelled)
        self.assertEqual(client.in_flight, 0)
        self.assertEqual(len(self.flushLoggedErrors(BufferError)), 1)


class ProducerStopTests(SynchronousTestCase):
    def test_cancel_stops_the_producer(self) -> None:
        """
        A request cancelled while a producer is registered stops the
        producer (a file being sent is closed), as a lost connection does.
        """
        clock = Clock()
        app = Klein()
        producers: List[_BigBody] = []

        @app.route("/big")
        def big(request: Any) -> Any:
            producer = _BigBody(request, 64 * 1024 * 1024)
            producers.append(producer)
            producer.run()
            return producer.done

        service = Microservice("big", "1.0.0")
        service.mount_klein(app, reactor=clock)
        client = ServiceClient(service, clock)
        d = client.get("/big", stream=True)
        clock.advance(0)
        response = self.successResultOf(d)
        response.close()
        [producer] = producers
        self.assertEqual(producer.left, 0)
        self.assertEqual(client.in_flight, 0)


class RouteTemplateTests(SynchronousTestCase):
    def templates(self, *rules: str, **kwargs: Any) -> List[Tuple[str, str]]:
        app = Klein()
        for index, rule in enumerate(rules):
            app.route(rule, endpoint=f"e{index}", **kwargs)(lambda request: b"")
        return route_templates(app)

    def test_rule_shapes(self) -> None:
        """
        The root, converters, a segment mixing text and a parameter, and a
        C{<path:...>} that is not last (Klein matches the rest) all give a
        template.
        """
        self.assertEqual(self.templates("/", "/a/<int:x>", "/f-<name>.txt", "/p/<path:rest>/edit",
                                        methods=["GET"]),
                         [("GET", "/"), ("GET", "/a/{x}"), ("GET", "/{name}"),
                          ("GET", "/p/{*rest}")])

    def test_same_shape_once(self) -> None:
        """
        Two routes of one shape (C{<int:id>} and C{<name>}) are one endpoint.
        """
        self.assertEqual(self.templates("/n/<int:id>", "/n/<name>", methods=["GET"]),
                         [("GET", "/n/{id}")])

    def test_unannounceable_route(self) -> None:
        """
        A route whose text is no path template is refused, naming it.
        """
        with self.assertRaises(ValueError) as caught:
            self.templates("/a b", methods=["GET"])
        self.assertIn("'/a b'", str(caught.exception))
