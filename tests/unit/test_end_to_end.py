"""
The whole path in one process on a Clock: HTTP edge → resolver → routing →
in-memory transport → SDK → handler, and back.
"""

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType, TransportType
from stellarouter.config.microservice import RouterEndpointConfig
from stellarouter.microservice import JsonResponse, Microservice, RawResponse
from stellarouter.testing.harness import GATEWAY_ADDRESS, InMemoryDeployment


def make_app(version: str = "1.0.0") -> Any:
    app = Microservice("billing", version)
    app.calls: list = []  # type: ignore[attr-defined]
    app.pending: list = []  # type: ignore[attr-defined]
    app.cancelled: list = []  # type: ignore[attr-defined]

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong " + version)

    @app.endpoint("POST", "/echo")
    def echo(ctx: Any) -> RawResponse:
        app.calls.append(ctx)  # type: ignore[attr-defined]
        return RawResponse(200, [("Content-Type", "application/octet-stream"),
                                 ("X-Query", ctx.query)], ctx.body)

    @app.json("GET", "/invoices/{id}")
    def invoice(ctx: Any, _: None) -> dict:
        return {"id": ctx.path_params["id"]}

    @app.json("POST", "/invoices", status=201)
    async def create(ctx: Any, body: Any) -> JsonResponse:
        return JsonResponse({"created": body}, status=201, headers=[("Location", "/invoices/1")])

    @app.endpoint("GET", "/slow", timeout=2.0)
    def slow(ctx: Any) -> Deferred:
        d: Deferred = Deferred()
        app.pending.append((ctx, d))  # type: ignore[attr-defined]
        return d

    @app.endpoint("GET", "/slow-async", timeout=2.0)
    async def slow_async(ctx: Any) -> RawResponse:
        d: Deferred = Deferred()
        app.pending.append((ctx, d))  # type: ignore[attr-defined]
        try:
            return await d
        except CancelledError:
            app.cancelled.append(ctx.correlation_id)  # type: ignore[attr-defined]
            raise

    @app.endpoint("GET", "/boom")
    def boom(ctx: Any) -> RawResponse:
        raise RuntimeError("kaboom")

    @app.endpoint("GET", "/big")
    def big(ctx: Any) -> RawResponse:
        return RawResponse(200, [], bytes(range(256)) * 20000)

    return app


class EndToEndTests(SynchronousTestCase):
    #: Whether the microservice offers compact REQUEST/RESPONSE headers.
    compact_headers = True

    def setUp(self) -> None:
        self.deployment = InMemoryDeployment(max_frame_bytes=128 * 1024)
        self.app = make_app()
        self.service = self.deployment.add(self.app, router=RouterEndpointConfig(
            TransportType.INMEMORY, GATEWAY_ADDRESS, 128 * 1024,
            compact_headers=self.compact_headers))
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        self.deployment.stop()
        self.assertEqual(self.deployment.clock.getDelayedCalls(), [])

    def test_registered(self) -> None:
        """
        The microservice is registered and the gateway's /health on the
        admin listener lists it (the public one shows the status only).
        """
        response = self.deployment.request("GET", "/health")
        self.assertEqual((response.status, json.loads(response.body)), (200, {"status": "ok"}))
        response = self.deployment.admin_request("GET", "/health")
        self.assertEqual(response.status, 200)
        health = json.loads(response.body)
        self.assertEqual(health["services"], {"billing": {"instances": 1, "versions": ["1.0.0"]}})
        self.assertIsNotNone(self.service.sessions[0].accepted)
        # Both sides agreed on the header form (or on JSON).
        self.assertEqual(self.deployment.gateway.connections[0].compact_headers,
                         self.compact_headers)
        self.assertEqual(self.service.sessions[0].dispatcher.compact_headers,
                         self.compact_headers)

    def test_raw_handler(self) -> None:
        """
        A raw handler's status, headers and body come back unchanged, with a
        correlation id.
        """
        response = self.deployment.request("GET", "/ping")
        self.assertEqual((response.status, response.body), (200, b"pong 1.0.0"))
        self.assertEqual(response.header("content-type"), "text/plain; charset=utf-8")
        self.assertEqual(len(response.header("x-correlation-id")), 36)

    def test_body_query_and_headers_forwarded(self) -> None:
        """
        Body bytes, the query string and end-to-end headers reach the
        handler; hop-by-hop headers do not.
        """
        body = bytes(range(256))
        response = self.deployment.request(
            "POST", "/echo?a=1&b=%20", body,
            [("X-Trace", "t1"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "s")])
        self.assertEqual((response.status, response.body), (200, body))
        self.assertEqual(response.header("x-query"), "a=1&b=%20")
        ctx = self.app.calls[0]
        self.assertEqual(ctx.headers.get("x-trace"), "t1")
        self.assertNotIn("x-secret", ctx.headers)
        self.assertNotIn("connection", ctx.headers)
        self.assertEqual(ctx.query_params, {"a": ["1"], "b": [" "]})
        self.assertIsNotNone(ctx.deadline)

    def test_typed_handlers(self) -> None:
        """
        Typed handlers get path parameters and parsed JSON, and answer JSON
        with their status and headers.
        """
        response = self.deployment.request("GET", "/invoices/a%20b")
        self.assertEqual(json.loads(response.body), {"id": "a b"})
        response = self.deployment.request("POST", "/invoices", b'{"amount": 5}')
        self.assertEqual(response.status, 201)
        self.assertEqual(json.loads(response.body), {"created": {"amount": 5}})
        self.assertEqual(response.header("location"), "/invoices/1")
        self.assertEqual(response.header("content-type"), "application/json")

    def test_bad_json_is_400(self) -> None:
        """
        A typed endpoint answers 400 problem+json for a body that is not JSON.
        """
        response = self.deployment.request("POST", "/invoices", b"{nope")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.header("content-type"), "application/problem+json")

    def test_not_found_and_method_not_allowed(self) -> None:
        """
        Unknown paths are 404 and known paths with another method 405 with
        Allow, both problem+json.
        """
        response = self.deployment.request("GET", "/nope")
        self.assertEqual(response.status, 404)
        problem = json.loads(response.body)
        self.assertEqual(problem["type"], "https://stellarouter.dev/problems/not-found")
        self.assertEqual(problem["correlation_id"], response.header("x-correlation-id"))
        response = self.deployment.request("DELETE", "/ping")
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header("allow"), "GET, HEAD")
        self.assertEqual(response.header("content-type"), "application/problem+json")

    def test_head(self) -> None:
        """
        HEAD is served by the GET endpoint, without a body.
        """
        client = self.deployment.http()
        client.send("HEAD", "/ping")
        self.deployment.pump()
        raw = client.transport.value()
        self.assertTrue(raw.startswith(b"HTTP/1.1 200"))
        self.assertTrue(raw.endswith(b"\r\n\r\n"))

    def test_handler_exception_is_500_and_connection_survives(self) -> None:
        """
        A handler that raises gives 500 problem+json; the same connection
        keeps serving.
        """
        response = self.deployment.request("GET", "/boom")
        self.assertEqual(response.status, 500)
        self.assertNotIn(b"kaboom", response.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)
        self.assertEqual(len(self.deployment.gateway.connections), 1)

    def test_concurrent_requests_multiplexed(self) -> None:
        """
        Many requests in flight on one connection complete independently, in
        any order.
        """
        clients = []
        for _ in range(5):
            client = self.deployment.http()
            client.send("GET", "/slow")
            clients.append(client)
        self.deployment.pump()
        self.assertEqual(len(self.app.pending), 5)
        for i, (ctx, d) in reversed(list(enumerate(self.app.pending))):
            d.callback(RawResponse.text(f"done {i}"))
        self.deployment.pump()
        self.assertEqual([c.response().body for c in clients],
                         [f"done {i}".encode() for i in range(5)])

    def test_timeout_is_504_with_one_cancel(self) -> None:
        """
        When the endpoint timeout elapses the client gets 504 and the handler
        is cancelled with reason Timeout; its late result goes nowhere.
        """
        client = self.deployment.http()
        client.send("GET", "/slow")
        self.deployment.pump()
        ctx, d = self.app.pending[0]
        self.deployment.clock.advance(2.0)
        self.deployment.pump()
        response = client.response()
        self.assertEqual(response.status, 504)
        self.assertEqual(self.successResultOf(ctx.cancelled), CancelReason.TIMEOUT)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)

    def test_client_disconnect_cancels(self) -> None:
        """
        A client that goes away cancels its request at the microservice: the
        coroutine handler sees CancelledError and the context says why.
        """
        client = self.deployment.http()
        client.send("GET", "/slow-async")
        self.deployment.pump()
        ctx, d = self.app.pending[0]
        client.disconnect()
        self.deployment.pump()
        self.assertEqual(self.successResultOf(ctx.cancelled), CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(self.app.cancelled, [ctx.correlation_id])
        self.assertEqual(self.service.sessions[0].dispatcher.in_flight, 0)

    def test_connection_lost_is_502(self) -> None:
        """
        A microservice connection lost mid-request gives the client 502.
        """
        client = self.deployment.http()
        client.send("GET", "/slow")
        self.deployment.pump()
        self.deployment.network.sever_all()
        self.deployment.pump()
        self.assertEqual(client.response().status, 502)

    def test_no_instance_is_503(self) -> None:
        """
        While the only instance is DRAINING the endpoint is 503 with
        Retry-After.
        """
        from stellarouter.common.enums import InstanceHealthStatus

        self.deployment.gateway.connections[0].state.status = InstanceHealthStatus.DRAINING
        response = self.deployment.request("GET", "/ping")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header("retry-after"), "1")

    def test_large_bodies_split_into_frames(self) -> None:
        """
        Request and response bodies larger than one frame travel as stream
        frames and arrive whole.
        """
        body = bytes(range(256)) * 2000
        response = self.deployment.request("POST", "/echo", body)
        self.assertEqual(response.body, body)
        response = self.deployment.request("GET", "/big")
        self.assertEqual(response.body, bytes(range(256)) * 20000)

    def test_versions(self) -> None:
        """
        X-Stella-Version selects by exact equality; malformed is 400, unknown
        404 version-not-found; no header picks the highest.
        """
        self.deployment.add(make_app("1.1.0"))
        self.assertEqual(self.deployment.request("GET", "/ping").body, b"pong 1.1.0")
        self.assertEqual(self.deployment.request(
            "GET", "/ping", headers=[("X-Stella-Version", "1.0.0")]).body, b"pong 1.0.0")
        self.assertEqual(self.deployment.request(
            "GET", "/ping", headers=[("X-Stella-Version", "1.1")]).status, 400)
        response = self.deployment.request("GET", "/ping", headers=[("X-Stella-Version", "9.9.9")])
        self.assertEqual(response.status, 404)
        self.assertIn(b"version-not-found", response.body)

    def test_gateway_shutdown_cancels_in_flight(self) -> None:
        """
        Stopping the gateway sends CANCEL Shutdown for requests in flight and
        answers their clients 503.
        """
        client = self.deployment.http()
        client.send("GET", "/slow")
        self.deployment.pump()
        ctx, _ = self.app.pending[0]
        self.deployment.gateway.stopService()
        self.deployment.pump()
        self.assertEqual(client.response().status, 503)
        self.assertEqual(self.successResultOf(ctx.cancelled), CancelReason.SHUTDOWN)

    def test_frames_seen_by_gateway(self) -> None:
        """
        The gateway counts no late frames in normal traffic.
        """
        self.deployment.request("GET", "/ping")
        connection = self.deployment.gateway.connections[0]
        self.assertEqual(connection.in_flight.late_frames, 0)
        self.assertEqual(FrameType.REQUEST.value, 4)

    def test_reconnect_resends_hello(self) -> None:
        """
        After the connection breaks the microservice reconnects with backoff,
        sends HELLO again and is routable again; meanwhile the endpoint is
        remembered without an instance (503).
        """
        self.deployment.network.sever_all()
        self.deployment.pump()
        self.assertEqual(self.deployment.gateway.connections, [])
        self.assertEqual(self.deployment.request("GET", "/ping").status, 503)
        # After an accepted HELLO the first delay is initial_delay (0.1 s).
        self.deployment.clock.advance(0.1 - 1e-6)
        self.deployment.pump()
        self.assertEqual(self.deployment.gateway.connections, [])
        self.deployment.clock.advance(1e-6)
        self.deployment.pump()
        self.assertEqual(len(self.deployment.gateway.connections), 1)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)

    def test_health_endpoints(self) -> None:
        """
        live is always 200; ready and startup follow the start-up and
        shutdown of the gateway.
        """
        health = self.deployment.gateway.health
        for path in ("/health/live", "/health/ready", "/health/startup"):
            self.assertEqual(self.deployment.request("GET", path).status, 200, path)
        health.started = False
        self.assertEqual(self.deployment.request("GET", "/health/startup").status, 503)
        self.assertEqual(self.deployment.request("GET", "/health/ready").status, 503)
        health.started = True
        health.stopping = True
        self.assertEqual(self.deployment.request("GET", "/health/ready").status, 503)
        self.assertEqual(self.deployment.request("GET", "/health/live").status, 200)
        self.assertEqual(self.deployment.request("GET", "/health").status, 503)
        health.stopping = False

    def test_response_and_cancel_cross(self) -> None:
        """
        A client leaves while its response is already on the way: the CANCEL
        and the RESPONSE cross; the gateway drops and counts the late
        RESPONSE, the microservice ignores the CANCEL, and the connection
        serves the next request normally.
        """
        client = self.deployment.http()
        client.send("GET", "/slow")
        self.deployment.pump()
        ctx, d = self.app.pending[0]
        d.callback(RawResponse.text("crossing"))  # RESPONSE queued, not yet delivered
        client.disconnect()                        # CANCEL queued the other way
        self.deployment.pump()
        connection = self.deployment.gateway.connections[0]
        self.assertEqual(connection.in_flight.late_frames, 1)
        self.assertEqual(self.service.sessions[0].dispatcher.ignored_cancels, 1)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)
        self.assertEqual(connection.state.in_flight, 0)

    def test_round_robin_through_the_edge(self) -> None:
        """
        Requests through the HTTP edge alternate between two idle instances
        (each request is routed exactly once).
        """
        second = make_app()
        self.deployment.add(second)
        bodies = [self.deployment.request("POST", "/echo", b"x").status for _ in range(6)]
        self.assertEqual(bodies, [200] * 6)
        self.assertEqual((len(self.app.calls), len(second.calls)), (3, 3))


class JsonHeaderEndToEndTests(EndToEndTests):
    """
    The same path with a microservice that keeps REQUEST/RESPONSE headers
    JSON (C{routers[].compact_headers: false}, or an SDK from before compact
    headers).
    """

    compact_headers = False
