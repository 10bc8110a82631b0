"""
Tests for the HTTP edge: body limits (through twisted.web's non-public
gotLength / handleContentChunk hooks, pinned here), request targets, the
health paths, and how upstream responses are written.
"""

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.testing.harness import InMemoryDeployment


def make_app() -> Microservice:
    app = Microservice("edge", "1.0.0")
    app.seen = []  # type: ignore[attr-defined]

    @app.endpoint("POST", "/upload")
    def upload(ctx: Any) -> RawResponse:
        app.seen.append(ctx)  # type: ignore[attr-defined]
        return RawResponse(200, [("Content-Type", "text/plain")], str(len(ctx.body)).encode())

    @app.endpoint("GET", "/plain")
    def plain(ctx: Any) -> RawResponse:
        app.seen.append(ctx)  # type: ignore[attr-defined]
        return RawResponse(200, [
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Server", "edge-svc"),
            ("Connection", "X-Hop"), ("X-Hop", "secret"), ("Proxy-Thing", "x"),
            ("X-Echo", ctx.headers.get("x-in", "")),
        ], b"plain")

    @app.endpoint("GET", "/streamed")
    def streamed(ctx: Any) -> StreamingResponse:
        return StreamingResponse(200, [("Date", "Mon, 01 Jan 2024 00:00:00 GMT")], [b"a", b"b"])

    @app.endpoint("DELETE", "/things/{id}")
    def delete(ctx: Any) -> RawResponse:
        return RawResponse(204, [], b"")

    @app.endpoint("HEAD", "/sized")
    def sized(ctx: Any) -> RawResponse:
        return RawResponse(200, [("Content-Length", "999")], b"")

    @app.endpoint("GET", "/sized")
    def sized_get(ctx: Any) -> RawResponse:
        return RawResponse(200, [], b"x" * 999)

    return app


class EdgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment()
        self.app = make_app()
        self.deployment.add(self.app)
        self.site = self.deployment.gateway.site
        self.site.max_request_bytes = 1000
        self.deployment.gateway.proxy.limits = type(self.deployment.gateway.proxy.limits)(1000)
        self.addCleanup(self.deployment.stop)

    def test_content_length_over_limit(self) -> None:
        """
        A declared Content-Length over the per-call limit is 413; the body is
        not buffered and nothing is dispatched.
        """
        client = self.deployment.http()
        client.channel.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)
        self.deployment.pump()
        response = client.response()
        self.assertEqual(response.status, 413)
        self.assertEqual(json.loads(response.body)["type"],
                         "https://stellarouter.dev/problems/payload-too-large")
        self.assertEqual(self.app.seen, [])

    def test_chunked_over_limit(self) -> None:
        """
        A chunked body that crosses the limit is discarded past it and
        answered 413.
        """
        client = self.deployment.http()
        chunk = b"%x\r\n%s\r\n" % (600, b"b" * 600)
        client.channel.dataReceived(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk + chunk + b"0\r\n\r\n")
        self.deployment.pump()
        self.assertEqual(client.response().status, 413)
        self.assertEqual(self.app.seen, [])

    def test_body_at_limit(self) -> None:
        """
        A body exactly at the limit goes through whole.
        """
        response = self.deployment.request("POST", "/upload", b"c" * 1000)
        self.assertEqual((response.status, response.body), (200, b"1000"))

    def test_absolute_form_target(self) -> None:
        """
        GET http://host/path is served as GET /path.
        """
        response = self.deployment.request("GET", "http://gateway.test/plain")
        self.assertEqual((response.status, response.body), (200, b"plain"))

    def test_health_errors_are_problems(self) -> None:
        """
        Other methods on the health paths are 405 problem+json; unknown
        health paths 404 problem+json.
        """
        response = self.deployment.request("POST", "/health")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header("allow"), "GET, HEAD")
        self.assertEqual(response.header("content-type"), "application/problem+json")
        response = self.deployment.request("GET", "/health/nope")
        self.assertEqual(response.status, 404)
        self.assertEqual(response.header("content-type"), "application/problem+json")

    def test_response_headers(self) -> None:
        """
        Upstream Date and Server replace the gateway's, headers named in
        Connection and Proxy-* are dropped, no default Content-Type is added,
        and Latin-1 values pass through unchanged.
        """
        response = self.deployment.request("GET", "/plain", headers=[("X-In", "caf\xe9")])
        headers = [(k.lower(), v) for k, v in response.headers]
        self.assertEqual([v for k, v in headers if k == "date"], ["Mon, 01 Jan 2024 00:00:00 GMT"])
        self.assertEqual([v for k, v in headers if k == "server"], ["edge-svc"])
        self.assertNotIn("x-hop", dict(headers))
        self.assertNotIn("proxy-thing", dict(headers))
        self.assertNotIn("content-type", dict(headers))
        self.assertEqual(response.header("x-echo"), "caf\xe9")

    def test_server_and_date_headers(self) -> None:
        """
        A proxied answer carries twisted.web's C{Server} header and a C{Date}
        for the site's clock, formatted once a second: the same within a
        second, the new time after it.
        """
        from twisted.web.http import datetimeToString
        from twisted.web.server import version

        clock = self.deployment.clock
        clock.advance(1_700_000_000.25 - clock.seconds())
        first = self.deployment.request("DELETE", "/things/1")
        self.assertEqual(first.header("Server"), version.decode())
        self.assertEqual(first.header("Date"), datetimeToString(1_700_000_000).decode())
        clock.advance(0.5)
        self.assertEqual(self.deployment.request("DELETE", "/things/2").header("Date"),
                         datetimeToString(1_700_000_000).decode())
        clock.advance(1.0)
        self.assertEqual(self.deployment.request("DELETE", "/things/3").header("Date"),
                         datetimeToString(1_700_000_001).decode())

    def test_own_headers_once_on_every_path(self) -> None:
        """
        C{Server}, C{Date} and C{X-Correlation-Id} appear exactly once on a
        whole answer, a streamed one (whose upstream C{Date} wins) and a
        problem answer of the gateway's own.
        """
        for method, path, status in (("DELETE", "/things/1", 204), ("GET", "/streamed", 200),
                                     ("GET", "/nowhere", 404)):
            client = self.deployment.http()
            client.send(method, path)
            for _ in range(5):
                self.deployment.pump()
            raw = client.transport.value().split(b"\r\n\r\n", 1)[0].lower()
            self.assertTrue(raw.startswith(b"http/1.1 %d" % status), raw[:30])
            for name in (b"server", b"date", b"x-correlation-id"):
                self.assertEqual(raw.count(b"\r\n" + name + b": "), 1, (path, name, raw))
            if path == "/streamed":
                self.assertIn(b"\r\ndate: mon, 01 jan 2024 00:00:00 gmt", raw)

    def test_host_address_asked_once_per_connection(self) -> None:
        """
        The gateway's HTTP channel asks its transport for the local address
        once, however many requests the connection carries (twisted.web's
        channel asks on every request: a system call each on TCP).
        """
        from stellarouter.gateway.edge import GatewayChannel

        client = self.deployment.http()
        self.assertIsInstance(client.channel, GatewayChannel)
        calls = []
        real = client.transport.getHost
        client.transport.getHost = lambda: calls.append(1) or real()  # type: ignore[method-assign]
        for n in range(3):
            client.send("DELETE", f"/things/{n}")
            self.deployment.pump()
            response = client.response()
            assert response is not None
            self.assertEqual(response.status, 204)
        self.assertEqual(len(calls), 1)

    def test_alpn_offers_http_1_1_only(self) -> None:
        """
        Over TLS the site offers only HTTP/1.1 in ALPN, the protocol its
        channel speaks, whether or not the h2 package is importable.
        """
        from twisted.web import http

        self.patch(http, "H2_ENABLED", True)
        self.assertEqual(self.site.acceptableProtocols(), [b"http/1.1"])

    def test_no_content(self) -> None:
        """
        204 goes out without Content-Length or body.
        """
        client = self.deployment.http()
        client.send("DELETE", "/things/1")
        self.deployment.pump()
        raw = client.transport.value()
        self.assertTrue(raw.startswith(b"HTTP/1.1 204"))
        self.assertNotIn(b"content-length", raw.lower())

    def test_http_1_0_closes(self) -> None:
        """
        An HTTP/1.0 request is answered with an HTTP/1.0 status line and its
        length, and the connection closes after the answer.
        """
        client = self.deployment.http()
        client.channel.dataReceived(b"GET /sized HTTP/1.0\r\nHost: x\r\n\r\n")
        self.deployment.pump()
        raw = client.transport.value()
        self.assertTrue(raw.startswith(b"HTTP/1.0 200 OK\r\n"), raw[:40])
        self.assertIn(b"\r\nContent-Length: 999\r\n", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n" + b"x" * 999))
        self.assertTrue(client.transport.disconnecting)

    def test_connection_close(self) -> None:
        """
        C{Connection: close} from the client is answered with
        C{Connection: close}, and the connection closes.
        """
        client = self.deployment.http()
        client.channel.dataReceived(
            b"DELETE /things/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.deployment.pump()
        raw = client.transport.value()
        self.assertTrue(raw.startswith(b"HTTP/1.1 204 No Content\r\n"), raw[:40])
        self.assertIn(b"\r\nConnection: close\r\n", raw)
        self.assertTrue(client.transport.disconnecting)

    def test_pipelined_requests(self) -> None:
        """
        Requests pipelined on one keep-alive connection are answered in
        order, each whole, and the connection stays open.
        """
        client = self.deployment.http()
        client.channel.dataReceived(
            b"GET /sized HTTP/1.1\r\nHost: x\r\n\r\n"
            b"DELETE /things/1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /sized HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(5):
            self.deployment.pump()
        raw = client.transport.value()
        first, rest = raw.split(b"x" * 999, 1)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"\r\nContent-Length: 999\r\n", first)
        second, third = rest.split(b"HTTP/1.1 200 OK\r\n", 1)
        self.assertTrue(second.startswith(b"HTTP/1.1 204 No Content\r\n"))
        self.assertTrue(second.endswith(b"\r\n\r\n"))
        self.assertIn(b"\r\nContent-Length: 999\r\n", third)
        self.assertTrue(third.endswith(b"\r\n\r\n"), "a HEAD answer has no body")
        self.assertEqual(raw.count(b"X-Correlation-Id: "), 3)
        self.assertFalse(client.transport.disconnecting)

    def test_explicit_head(self) -> None:
        """
        An explicit HEAD endpoint's Content-Length is kept.
        """
        client = self.deployment.http()
        client.send("HEAD", "/sized")
        self.deployment.pump()
        self.assertIn(b"Content-Length: 999\r\n", client.transport.value())


class FailClosedTests(SynchronousTestCase):
    def test_claims_without_token_validation(self) -> None:
        """
        An endpoint with claim requirements is refused 401 (WWW-Authenticate:
        Bearer) while the gateway cannot validate tokens: fail closed.
        """
        from stellarouter.common.models import ClaimRequirement

        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("secure", "1.0.0")
        app.endpoint("GET", "/secret", claims=[ClaimRequirement("scope", "read")])(
            lambda ctx: RawResponse.text("secret"))
        deployment.add(app)
        response = deployment.request("GET", "/secret",
                                             headers=[("Authorization", "Bearer x")])
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("www-authenticate"), "Bearer")
        self.assertNotIn(b"secret\"", response.body)


class BudgetTests(SynchronousTestCase):
    def test_per_connection_and_aggregate_budgets(self) -> None:
        """
        A request whose body would pass the per-connection or the aggregate
        in-flight budget is 503 with Retry-After; within budget it passes;
        the budget frees up as requests finish.
        """
        from twisted.internet.defer import Deferred

        from stellarouter.common.models import PayloadLimits

        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("budget", "1.0.0")
        pending: list = []
        app.endpoint("POST", "/hold")(lambda ctx: pending.append(Deferred()) or pending[-1])
        deployment.add(app)
        deployment.gateway.proxy.limits = PayloadLimits(1000, 1500, 10_000)
        first = deployment.http()
        first.send("POST", "/hold", b"a" * 1000)
        deployment.pump()
        response = deployment.request("POST", "/hold", b"b" * 600)
        self.assertEqual((response.status, response.header("retry-after")), (503, "1"))
        self.assertIn(b"payload-budget-exhausted", response.body)
        self.assertEqual(deployment.gateway.aggregate.value, 1000)
        deployment.gateway.proxy.limits = PayloadLimits(1000, 100_000, 1200)
        self.assertEqual(deployment.request("POST", "/hold", b"c" * 600).status, 503)
        pending[0].callback(RawResponse.text("done"))
        deployment.pump()
        self.assertEqual(first.response().status, 200)
        self.assertEqual(deployment.gateway.aggregate.value, 0)
        second = deployment.http()
        second.send("POST", "/hold", b"d" * 600)
        deployment.pump()
        self.assertEqual(len(pending), 2)
        pending[1].callback(RawResponse.text("done"))
        deployment.pump()


class IdleTimeoutTests(SynchronousTestCase):
    """
    The HTTP idle timeout of a gateway connection: closed after C{timeOut}
    seconds without a request, never while a request is being handled, with
    one timer per connection that requests only move.
    """

    def setUp(self) -> None:
        from twisted.internet.defer import Deferred

        self.deployment = InMemoryDeployment()
        app = make_app()
        self.held: list = []

        @app.endpoint("GET", "/held")
        def held(ctx: Any) -> Deferred:
            d: Deferred = Deferred()
            self.held.append(d)
            return d

        self.deployment.add(app)
        self.deployment.gateway.site.timeOut = 10
        self.clock = self.deployment.clock
        self.addCleanup(self.deployment.stop)

    def answer(self, client: Any, method: str, path: str) -> None:
        client.send(method, path)
        self.deployment.pump()
        response = client.response()
        assert response is not None
        self.assertLess(response.status, 300)

    def test_closed_when_idle(self) -> None:
        """
        A connection is closed C{timeOut} seconds after its last answer, not
        a moment earlier.
        """
        client = self.deployment.http()
        self.clock.advance(6)
        self.answer(client, "DELETE", "/things/1")
        self.clock.advance(9.999)
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(client.transport.disconnecting)

    def test_not_while_handling(self) -> None:
        """
        A request that takes longer than the idle timeout keeps the
        connection open; the countdown starts again after its answer.
        """
        client = self.deployment.http()
        client.send("GET", "/held")
        self.deployment.pump()
        self.clock.advance(25)
        self.assertFalse(client.transport.disconnecting)
        self.held[0].callback(RawResponse(200, [], b"late"))
        self.deployment.pump()
        self.assertEqual(client.response().status, 200)  # type: ignore[union-attr]
        self.clock.advance(9.5)
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(client.transport.disconnecting)

    def test_one_timer_per_connection(self) -> None:
        """
        Requests move the deadline without making a timer each; a connection
        that goes away leaves no timer behind.
        """
        made = []
        real = self.clock.callLater

        def counting(delay: float, f: Any, *a: Any, **kw: Any) -> Any:
            made.append(f)
            return real(delay, f, *a, **kw)

        self.clock.callLater = counting  # type: ignore[method-assign]
        client = self.deployment.http()
        for n in range(30):
            self.clock.advance(1)
            self.answer(client, "DELETE", f"/things/{n}")
        # 30 requests, 4 timers: one when the connection opened, and one each
        # time it came due with the deadline moved on (at 10, 19 and 28 s:
        # the last answer was 9 s before).
        self.assertEqual(made.count(client.channel._idle_due), 4)
        timer = client.channel._idle_call
        self.assertTrue(timer.active())
        client.disconnect()
        self.assertFalse(timer.active())
        self.assertIsNone(client.channel._idle_call)

    def test_channel_without_site_clock(self) -> None:
        """
        A L{GatewayChannel} not built by a L{GatewaySite} (no clock to read)
        keeps twisted.web's own idle timeout: reset by data, closed after
        C{timeOut} seconds of silence.
        """
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from stellarouter.gateway.edge import GatewayChannel

        clock = Clock()
        channel = GatewayChannel()
        channel.callLater = clock.callLater  # type: ignore[method-assign]
        channel.timeOut = 5
        transport = StringTransport()
        channel.makeConnection(transport)
        clock.advance(4)
        channel.dataReceived(b"GET /ping HTTP/1.1\r\n")  # incomplete: resets the timeout
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
