"""
Tests for the HTTP edge at the connection level (issue 17, items 1, 3, 10
and 11, and the HTTP part of its "Keep" list): early 413, the request-head
deadline, the client-connection cap, problem+json for every refusal, the
listen backlog, and the smuggling and pipelining defences kept as they are.
"""

import json
from typing import Any, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.config.gateway import GatewayConfig, HttpConfig, NodeConfig, \
    parse_gateway_config
from stellarouter.config import ConfigError
from stellarouter.gateway._web import (
    LINGER_BYTES,
    LINGER_SECONDS,
    REFUSALS_IN_FLIGHT,
    RefusalLog,
    client_connection_cap,
)
from stellarouter.gateway.errors import BadRequest
from stellarouter.gateway.problems import MAX_LOGGED_DETAIL
from stellarouter.gateway.service import GatewayService
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import (
    HalfCloseTransport,
    HttpResponse,
    InMemoryHttpClient,
    parse_responses,
)

PROBLEM = "application/problem+json"


def make_app(seen: List[Any]) -> Microservice:
    app = Microservice("edgehttp", "1.0.0")

    @app.endpoint("POST", "/upload")
    def upload(ctx: Any) -> RawResponse:
        seen.append(len(ctx.body))
        return RawResponse.text(str(len(ctx.body)))

    @app.endpoint("POST", "/small", max_request_bytes=100)
    def small(ctx: Any) -> RawResponse:
        seen.append(len(ctx.body))
        return RawResponse.text(str(len(ctx.body)))

    @app.endpoint("POST", "/stream", streaming=True, max_request_bytes=2000)
    async def stream(ctx: Any) -> RawResponse:
        body = await ctx.body.read()
        seen.append(len(body))
        return RawResponse.text(str(len(body)))

    @app.endpoint("GET", "/n/{i}")
    def numbered(ctx: Any) -> RawResponse:
        return RawResponse.text(ctx.path_params["i"])

    @app.endpoint("GET", "/held")
    def held(ctx: Any) -> Deferred:
        d: Deferred = Deferred()
        seen.append(d)
        return d

    @app.json("POST", "/json")
    def echo_json(ctx: Any, payload: Any) -> Any:
        return {"ok": True}

    return app


class EdgeTestCase(SynchronousTestCase):
    """
    A gateway in memory with one microservice; per-call limit 1000 bytes.
    """

    def setUp(self) -> None:
        self.seen: List[Any] = []
        self.deployment = InMemoryDeployment()
        self.deployment.add(make_app(self.seen))
        self.gateway = self.deployment.gateway
        self.site = self.gateway.site
        self.site.max_request_bytes = 1000
        self.gateway.proxy.limits = type(self.gateway.proxy.limits)(1000)
        self.clock = self.deployment.clock
        self.addCleanup(self.deployment.stop)

    def send(self, data: bytes, client: Optional[InMemoryHttpClient] = None
             ) -> InMemoryHttpClient:
        client = client or self.deployment.http()
        client.channel.dataReceived(data)
        self.deployment.pump()
        return client

    def assertRefused(self, client: InMemoryHttpClient, status: int, kind: str) -> HttpResponse:
        """
        The connection got exactly one answer, C{status} problem+json of
        C{kind} with a correlation id, and is being closed.
        """
        responses = parse_responses(client.transport.value())
        self.assertEqual([r.status for r in responses], [status], client.transport.value())
        response = responses[0]
        self.assertEqual(response.header("content-type"), PROBLEM)
        self.assertEqual(response.header("connection"), "close")
        problem = json.loads(response.body)
        self.assertEqual(problem["type"], "https://stellarouter.dev/problems/" + kind)
        self.assertEqual(problem["status"], status)
        self.assertEqual(problem["correlation_id"], response.header("x-correlation-id"))
        self.assertTrue(client.transport.disconnecting)
        return response


class EarlyPayloadTooLargeTests(EdgeTestCase):
    """
    Item 1: 413 as soon as the size is known, then nothing more is read.
    """

    def test_declared_length_refused_before_the_body(self) -> None:
        """
        C{Content-Length: 999999999999} with no body yet is answered 413 at
        once (not after the declared length, not at the idle timeout).
        """
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 999999999999\r\n\r\n")
        self.assertRefused(client, 413, "payload-too-large")
        self.assertEqual(self.seen, [])

    def test_no_100_continue_when_oversized(self) -> None:
        """
        An oversized request that expects C{100-continue} gets 413 and no
        C{100 Continue}.
        """
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 5000\r\n\r\n")
        self.assertNotIn(b"100 Continue", client.transport.value())
        self.assertRefused(client, 413, "payload-too-large")

    def test_100_continue_within_the_limit(self) -> None:
        """
        A request within the limit that expects C{100-continue} still gets
        it, then its answer.
        """
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 5\r\n\r\n")
        self.assertEqual(client.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.transport.clear()
        self.send(b"abcde", client)
        self.assertEqual(client.response().body, b"5")  # type: ignore[union-attr]

    def test_chunked_refused_when_it_crosses(self) -> None:
        """
        A chunked body is answered 413 as soon as it crosses the limit,
        before its last chunk; what follows is not parsed.
        """
        chunk = b"%x\r\n%s\r\n" % (600, b"b" * 600)
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        self.assertRefused(client, 413, "payload-too-large")
        self.send(b"0\r\n\r\nGET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n", client)
        self.assertEqual(len(parse_responses(client.transport.value())), 1)
        self.assertEqual(self.seen, [])

    def test_endpoint_limit_refused_from_the_headers(self) -> None:
        """
        A buffered endpoint's own smaller limit (C{max_request_bytes}) is
        enforced from the declared length too.
        """
        client = self.send(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        self.assertRefused(client, 413, "payload-too-large")
        response = self.deployment.request("POST", "/small", b"s" * 100)
        self.assertEqual((response.status, response.body), (200, b"100"))

    def test_streaming_endpoint_limit_refused_from_the_headers(self) -> None:
        """
        A streaming endpoint's limit is enforced from the declared length:
        413 at once, and nothing reaches the microservice.
        """
        client = self.send(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2001\r\n\r\n")
        self.assertRefused(client, 413, "payload-too-large")
        self.assertEqual(self.seen, [])

    def test_streaming_chunked_refused_when_it_crosses(self) -> None:
        """
        A chunked upload to a streaming endpoint is answered 413 (problem,
        with the request's correlation id) when it crosses the endpoint's
        limit, and the stream is cancelled.
        """
        chunk = b"%x\r\n%s\r\n" % (1500, b"c" * 1500)
        client = self.send(b"POST /stream HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        self.assertRefused(client, 413, "payload-too-large")
        self.assertEqual(self.gateway.connections[0].uploads, {})


class LingerTests(EdgeTestCase):
    """
    After a refusal the client's bytes in flight are drained, bounded.
    """

    def half_closing_client(self) -> InMemoryHttpClient:
        return InMemoryHttpClient(self.site, HalfCloseTransport())

    def test_drained_then_cut_after_the_byte_bound(self) -> None:
        """
        Our side is half-closed after the answer; at most L{LINGER_BYTES}
        more are read and dropped, then the connection is cut.
        """
        client = self.half_closing_client()
        self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
                  client)
        transport: Any = client.transport
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.aborted)
        client.channel.dataReceived(b"x" * LINGER_BYTES)
        self.assertFalse(transport.aborted)
        client.channel.dataReceived(b"x")
        self.assertTrue(transport.aborted)
        self.assertRefused(client, 413, "payload-too-large")

    def test_cut_after_the_time_bound(self) -> None:
        """
        A client that keeps the connection open after a refusal is cut
        after L{LINGER_SECONDS}.
        """
        before = set(self.clock.getDelayedCalls())
        client = self.half_closing_client()
        self.send(b"GARBAGE\r\n\r\n", client)
        transport: Any = client.transport
        self.clock.advance(LINGER_SECONDS - 0.001)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.001)
        self.assertTrue(transport.aborted)
        client.channel.connectionLost(None)
        self.assertEqual(set(self.clock.getDelayedCalls()) - before, set())


class RefusalLogTests(SynchronousTestCase):
    """
    Refusals are logged, but a flood of them is not a flood of lines.
    """

    def test_at_most_per_second(self) -> None:
        """
        At most C{per_second} refusal lines a second; the rest are counted
        and the count is logged with the next second's first line.
        """
        log = RefusalLog(per_second=3)
        error = BadRequest("malformed")
        with capturedLogs() as events:
            for i in range(10):
                log.refused(100.5, "peer", error, f"cid-{i}")
            self.assertEqual([e["cid"] for e in events], ["cid-0", "cid-1", "cid-2"])
            log.refused(101.0, "peer", error, "cid-next")
        self.assertEqual(events[3]["count"], 7)
        self.assertEqual(events[4]["cid"], "cid-next")
        self.assertEqual(log.suppressed, 0)

    def test_refusal_detail_is_escaped_and_bounded(self) -> None:
        """
        A refusal's detail (which may quote the client's path) is logged
        escaped and cut to L{MAX_LOGGED_DETAIL} characters.
        """
        log = RefusalLog()
        with capturedLogs() as events:
            log.refused(1.0, "peer", BadRequest("no endpoint matches /a\n{" + "x" * 20000), "c")
        line = formatEvent(events[0])
        self.assertIn("/a\\n{", line)
        self.assertTrue(line.isprintable(), line)
        self.assertLess(len(line), MAX_LOGGED_DETAIL + 100)

    def test_refusals_go_to_the_site_log(self) -> None:
        """
        A connection's refusal is logged with its status, detail and
        correlation id.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        client = deployment.http()
        with capturedLogs() as events:
            client.channel.dataReceived(b"BAD\r\n\r\n")
        refused = [e for e in events if e.get("log_format", "").startswith("refused")]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["status"], 400)
        self.assertIn(refused[0]["cid"].encode(), client.transport.value())


class HeadDeadlineTests(EdgeTestCase):
    """
    Item 3: the request head has a deadline from its first byte.
    """

    def setUp(self) -> None:
        super().setUp()
        self.site.head_timeout = 10.0
        self.site.timeOut = 60

    def test_trickled_head_gets_408(self) -> None:
        """
        A head sent one byte every 2 s (each byte resets the idle timeout)
        is answered 408 exactly 10 s after its first byte.
        """
        start = self.clock.seconds()
        client = self.send(b"G")
        for byte in b"ET /":
            self.clock.advance(2.0)
            self.send(bytes([byte]), client)
        self.assertEqual(client.transport.value(), b"")
        self.clock.advance(start + 10.0 - self.clock.seconds() - 0.001)
        self.assertEqual(client.transport.value(), b"")
        self.clock.advance(0.001)
        self.assertRefused(client, 408, "request-head-timeout")

    def test_deadline_per_request(self) -> None:
        """
        Each request on a keep-alive connection gets the whole deadline
        from its own first byte; time spent idle between requests does not
        count (that is the idle timeout's).
        """
        client = self.send(b"GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(client.response().status, 200)  # type: ignore[union-attr]
        self.clock.advance(30)
        self.send(b"GET /n/2 HTTP/1.1\r\n", client)
        self.clock.advance(9.9)
        self.send(b"Host: x\r\n\r\n", client)
        self.assertEqual(client.response().body, b"2")  # type: ignore[union-attr]
        self.clock.advance(20)
        self.assertFalse(client.transport.disconnecting)

    def test_not_while_the_body_arrives(self) -> None:
        """
        The deadline covers the head only: a body may take longer.
        """
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        self.clock.advance(15)
        self.send(b"cd", client)
        self.assertEqual(client.response().body, b"4")  # type: ignore[union-attr]

    def test_pipelined_head_waits_without_its_clock_running(self) -> None:
        """
        A head pipelined behind a request that takes 20 s to answer is not
        timed while that request is handled: its deadline runs from the
        answer on (its bytes are parsed only then).
        """
        client = self.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\nGET /n/7 HTTP/1.1\r\n")
        self.clock.advance(20)
        self.assertEqual(client.transport.value(), b"")
        self.seen.pop().callback(RawResponse.text("late"))
        self.deployment.pump()
        self.assertEqual(client.response().body, b"late")  # type: ignore[union-attr]
        self.clock.advance(9.9)
        self.send(b"Host: x\r\n\r\n", client)
        self.assertEqual(client.response().body, b"7")  # type: ignore[union-attr]

    def test_no_deadline_without_idle_timeout(self) -> None:
        """
        The head deadline rides on the idle timeout's hooks: a site without
        an idle timeout has no head deadline either (documented).
        """
        self.site.timeOut = None
        client = self.send(b"GET /n/1 HTTP/1.1\r\n")
        self.clock.advance(100)
        self.assertEqual(client.transport.value(), b"")

    def test_one_timer_per_connection(self) -> None:
        """
        Requests in a row move one deadline; they do not each schedule a
        timer.
        """
        client = self.deployment.http()
        before = len(self.clock.getDelayedCalls())
        for i in range(5):
            self.send(b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i, client)
        # (+ 3: the connection's one timer, and the gateway's and the
        # microservice's access log flush timers, each armed once per buffer
        # of lines, not per request)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), before + 3)
        client.disconnect()


class ConnectionCapTests(EdgeTestCase):
    """
    Item 3: a cap on client connections, so the process keeps descriptors
    for its microservices.
    """

    def connect(self) -> StringTransport:
        transport = StringTransport()
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        self.addCleanup(lambda: protocol.connectionLost(None) if not transport.disconnecting
                        else None)
        transport.protocol = protocol  # type: ignore[attr-defined]
        return transport

    def test_over_the_cap_503(self) -> None:
        """
        Past C{max_connections}, a new connection is answered 503
        problem+json with C{Retry-After} and closed; once one closes, the
        next is served.
        """
        self.site.max_connections = 2
        first, second = self.connect(), self.connect()
        third = self.connect()
        response = parse_responses(third.value())[0]
        self.assertEqual((response.status, response.header("retry-after")), (503, "1"))
        self.assertEqual(json.loads(response.body)["type"],
                         "https://stellarouter.dev/problems/too-many-connections")
        self.assertTrue(third.disconnecting)
        self.assertEqual(self.site.open_connections, 2)
        first.protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertEqual(self.site.open_connections, 1)
        fourth = self.connect()
        fourth.protocol.dataReceived(b"GET /n/4 HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore
        self.deployment.pump()
        self.assertEqual(parse_responses(fourth.value())[0].body, b"4")
        self.assertFalse(second.disconnecting)

    def test_refusals_in_flight_bounded(self) -> None:
        """
        At most L{REFUSALS_IN_FLIGHT} connections over the cap are being
        answered at once (each holds a descriptor); beyond, the site
        declines the connection (the port closes it at once).
        """
        self.site.max_connections = 0
        refusals = [self.connect() for _ in range(REFUSALS_IN_FLIGHT)]
        self.assertIsNone(self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
        refusals[0].protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertIsNotNone(self.connect().protocol)  # type: ignore[attr-defined]

    def test_automatic_cap(self) -> None:
        """
        Without C{max_connections} the cap is the open-files limit less the
        reserve, never less than half the limit.
        """
        self.assertEqual(client_connection_cap(None, 1024, 256), 768)
        self.assertEqual(client_connection_cap(None, 200, 256), 100)
        self.assertEqual(client_connection_cap(None, 1, 256), 1)
        self.assertEqual(client_connection_cap(50, 1024, 256), 50)

    def test_service_applies_the_cap(self) -> None:
        """
        The gateway service sets its site's cap, head deadline and head
        limits from C{http}.
        """
        config = GatewayConfig(node=NodeConfig(region="eu1"), http=HttpConfig(
            max_connections=7, request_head_timeout=3.5, max_header_bytes=4096))
        service = GatewayService(config, MemoryReactorClock())
        site = service.site
        self.assertEqual((site.max_connections, site.head_timeout, site.max_header_bytes),
                         (7, 3.5, 4096))
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.assertEqual((channel.MAX_LENGTH, channel.totalHeadersSize), (4096, 4096))


class ProblemAnswerTests(EdgeTestCase):
    """
    Item 10: every answer the edge writes is problem+json with a
    correlation id and the RFC's status.
    """

    def test_twisted_400_is_a_problem(self) -> None:
        """
        twisted.web's own 400 (a malformed request line) is problem+json
        with a correlation id, and the connection closes.
        """
        self.assertRefused(self.send(b"NOT A REQUEST LINE AT ALL\r\n\r\n"), 400, "bad-request")

    def test_request_line_too_long_414(self) -> None:
        """
        A request line over 16 KiB is 414 (it used to close silently).
        """
        client = self.send(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertRefused(client, 414, "request-line-too-long")

    def test_request_line_too_long_without_line_end(self) -> None:
        """
        An unterminated request line is refused once it passes the limit.
        """
        client = self.send(b"GET /" + b"a" * 17000)
        self.assertRefused(client, 414, "request-line-too-long")

    def test_one_header_too_long_431(self) -> None:
        """
        One header line over 16 KiB is 431.
        """
        client = self.send(b"GET /n/1 HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
        self.assertRefused(client, 431, "request-headers-too-large")

    def test_all_headers_too_large_431(self) -> None:
        """
        Headers that together pass 16 KiB are 431 (twisted.web: 400).
        """
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        client = self.send(b"GET /n/1 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertRefused(client, 431, "request-headers-too-large")

    def test_too_many_headers_431(self) -> None:
        """
        More header fields than twisted.web's C{maxHeaders} is 431.
        """
        headers = b"".join(b"X-%d: a\r\n" % i for i in range(501))
        client = self.send(b"GET /n/1 HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertRefused(client, 431, "request-headers-too-large")

    def test_configured_header_limit(self) -> None:
        """
        C{max_header_bytes} moves the limit.
        """
        self.site.max_header_bytes = 2048
        client = self.send(b"GET /n/1 HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        self.assertRefused(client, 431, "request-headers-too-large")

    def test_transfer_encoding_identity(self) -> None:
        """
        C{Transfer-Encoding: identity} (alone or with a Content-Length) is
        400 and close (RFC 9112 6.3: chunked must be the final coding);
        twisted.web accepted it.
        """
        for extra in (b"", b"Content-Length: 3\r\n"):
            client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: identity\r\n" + extra + b"\r\nabc")
            self.assertRefused(client, 400, "bad-request")
        self.assertEqual(self.seen, [])

    def test_other_transfer_codings(self) -> None:
        """
        Any other Transfer-Encoding than a lone C{chunked} is 400 and close.
        """
        for coding in (b"gzip", b"gzip, chunked", b"chunked, chunked", b"chunked, identity"):
            client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                               + coding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            self.assertRefused(client, 400, "bad-request")
        self.assertEqual(self.seen, [])

    def test_asterisk_target(self) -> None:
        """
        C{GET *} is a 400 problem (asterisk-form is for OPTIONS only);
        C{OPTIONS *} is 200; both carry a correlation id.
        """
        response = self.deployment.request("GET", "*")
        self.assertEqual((response.status, response.header("content-type")), (400, PROBLEM))
        self.assertEqual(json.loads(response.body)["correlation_id"],
                         response.header("x-correlation-id"))
        response = self.deployment.request("OPTIONS", "*")
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertIsNotNone(response.header("x-correlation-id"))

    def test_health_answers_carry_a_correlation_id(self) -> None:
        """
        Every C{/health*} answer has an C{X-Correlation-Id}.
        """
        for path in ("/health", "/health/live", "/health/ready", "/health/startup"):
            for method in ("GET", "HEAD"):
                response = self.deployment.request(method, path)
                self.assertEqual(len(response.header("x-correlation-id") or ""), 36, path)

    def test_gateway_bug_is_a_problem(self) -> None:
        """
        An exception of ours while handling a request is a 500 problem with
        a correlation id (twisted.web: text/html "Processing Failed"), and
        it is logged.
        """
        def broken(*args: Any) -> None:
            raise ZeroDivisionError("bug")

        self.gateway.proxy.render = broken  # type: ignore[method-assign]
        response = self.deployment.request("GET", "/n/1")
        self.assertEqual((response.status, response.header("content-type")), (500, PROBLEM))
        self.assertIsNotNone(response.header("x-correlation-id"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_sdk_deeply_nested_json_400(self) -> None:
        """
        The SDK answers a JSON body nested deeper than Python recurses with
        400, not 500.
        """
        self.site.max_request_bytes = 1 << 20
        self.gateway.proxy.limits = type(self.gateway.proxy.limits)(1 << 20)
        response = self.deployment.request("POST", "/json", b"[" * 100000 + b"]" * 100000)
        self.assertEqual(response.status, 400, response.body)


class SmugglingTests(EdgeTestCase):
    """
    Keep: ambiguous framing is 400 and close, with one answer; a request
    smuggled behind it is never served.
    """

    SMUGGLED = b"GET /n/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    def assertOneRefusal(self, head: bytes) -> None:
        client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\n" + head
                           + b"\r\n0\r\n\r\n" + self.SMUGGLED)
        self.assertRefused(client, 400, "bad-request")
        # (Not a hex digit in it: a correlation id cannot contain it by chance.)
        self.assertNotIn(b"smuggled", client.transport.value())
        self.assertEqual(self.seen, [])

    def test_content_length_and_transfer_encoding(self) -> None:
        """
        Content-Length with Transfer-Encoding, in either order.
        """
        self.assertOneRefusal(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")
        self.assertOneRefusal(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")

    def test_bad_content_lengths(self) -> None:
        """
        Duplicate (equal or not), signed, hex and list Content-Lengths.
        """
        for value in (b"Content-Length: 5\r\nContent-Length: 5\r\n",
                      b"Content-Length: 5\r\nContent-Length: 6\r\n",
                      b"Content-Length: +5\r\n", b"Content-Length: -5\r\n",
                      b"Content-Length: 0x5\r\n", b"Content-Length: 5, 5\r\n"):
            self.assertOneRefusal(value)

    def test_bad_chunks(self) -> None:
        """
        A chunk size that is not hex, signed, or a chunk without its CRLF.
        """
        for body in (b"zz\r\nabc\r\n0\r\n\r\n", b"-3\r\nabc\r\n0\r\n\r\n",
                     b"3\r\nabcX\r\n0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n"):
            client = self.send(b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + body + self.SMUGGLED)
            self.assertRefused(client, 400, "bad-request")
        self.assertEqual(self.seen, [])

    def test_nul_cr_lf_in_header_values(self) -> None:
        """
        NUL or a bare CR in a header value, and a bare LF line end that
        would split a header.
        """
        for head in (b"X-A: a\x00b\r\n", b"X-A: a\rb\r\n"):
            self.assertOneRefusal(head)


class PipeliningTests(EdgeTestCase):
    """
    Keep: 1,000 pipelined requests are answered in order.
    """

    def test_thousand_in_order(self) -> None:
        """
        1,000 requests sent at once on one connection get 1,000 answers in
        the order sent.
        """
        client = self.send(b"".join(b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                                    for i in range(1000)))
        for _ in range(100):
            self.deployment.pump()
        bodies = [r.body for r in parse_responses(client.transport.value())]
        self.assertEqual(bodies, [b"%d" % i for i in range(1000)])


class BacklogTests(SynchronousTestCase):
    """
    Item 11: a configurable listen backlog, 1024 by default.
    """

    def listen(self, http: HttpConfig) -> Any:
        reactor = MemoryReactorClock()
        service = GatewayService(GatewayConfig(node=NodeConfig(region="eu1"), http=http),
                                 reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return reactor.tcpServers[0]

    def test_default_backlog(self) -> None:
        """
        The HTTP port listens with a backlog of 1024 (Twisted's default is
        50).
        """
        port, factory, backlog, interface = self.listen(HttpConfig(listen="tcp:8080"))
        self.assertEqual((port, backlog), (8080, 1024))

    def test_configured_backlog(self) -> None:
        """
        C{http.backlog} sets it; a backlog in the endpoint string wins.
        """
        self.assertEqual(self.listen(HttpConfig(listen="tcp:8080", backlog=4096))[2], 4096)
        self.assertEqual(self.listen(HttpConfig(listen="tcp:8080:backlog=7", backlog=4096))[2],
                         7)

    def test_settings_parsed_and_checked(self) -> None:
        """
        The new C{http} keys are read, and out-of-range values named.
        """
        base = {"node": {"region": "eu1"},
                "transports": [{"type": "tcp", "listen": "tcp:0"}]}
        config = parse_gateway_config(dict(base, http={
            "backlog": 2048, "max_connections": 10, "request_head_timeout": 5,
            "max_header_bytes": 8192, "reserved_descriptors": 64}))
        self.assertEqual(config.http, HttpConfig(
            backlog=2048, max_connections=10, request_head_timeout=5.0,
            max_header_bytes=8192, reserved_descriptors=64))
        with self.assertRaises(ConfigError) as caught:
            parse_gateway_config(dict(base, http={
                "backlog": 0, "max_connections": 0, "request_head_timeout": 0,
                "max_header_bytes": 10}))
        for key in ("http.backlog", "http.max_connections", "http.request_head_timeout",
                    "http.max_header_bytes"):
            self.assertIn(key, str(caught.exception))
