"""
Streamed responses with flow control, in one process on a Clock: the body
arrives whole, a paused client pauses the producer after one window, other
requests on the same connection are not held up, failures and cancels end
the stream cleanly.
"""

import json
from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.payloads import STREAM_WINDOW
from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.testing.harness import InMemoryDeployment

CHUNK = 64 * 1024


def make_app(progress: List[int], closed: List[bool]) -> Microservice:
    app = Microservice("exporter", "1.0.0")

    @app.endpoint("GET", "/export")
    def export(ctx: Any) -> StreamingResponse:
        count = int(ctx.query_params.get("chunks", ["32"])[0])

        async def body() -> Any:
            try:
                for i in range(count):
                    progress.append(i)
                    yield bytes([i % 256]) * CHUNK
            finally:
                closed.append(True)

        return StreamingResponse(200, [("Content-Type", "application/octet-stream")], body())

    @app.endpoint("GET", "/broken")
    def broken(ctx: Any) -> StreamingResponse:
        def body() -> Any:
            yield b"a" * 1000
            raise RuntimeError("disk on fire")

        return StreamingResponse(200, [], body())

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong")

    return app


class StreamingResponseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.progress: List[int] = []
        self.closed: List[bool] = []
        self.deployment = InMemoryDeployment()
        self.service = self.deployment.add(make_app(self.progress, self.closed))
        self.addCleanup(self.deployment.stop)

    def test_whole_body(self) -> None:
        """
        A 2 MiB streamed body arrives whole and in order (chunked encoding).
        """
        response = self.deployment.request("GET", "/export?chunks=32")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("transfer-encoding"), "chunked")
        self.assertEqual(response.body, b"".join(bytes([i]) * CHUNK for i in range(32)))
        self.assertEqual(self.closed, [True])

    def test_paused_client_pauses_the_producer(self) -> None:
        """
        While the HTTP client does not read, the microservice stops after one
        window of credit; a /ping on the same connection still answers at
        once; when the client reads again the stream completes.
        """
        client = self.deployment.http()
        # The client reads nothing from the start (one clock turn in memory
        # would otherwise carry the whole exchange).
        client.transport.producer.pauseProducing()
        client.send("GET", "/export?chunks=64")
        self.deployment.pump(200)
        produced = len(self.progress)
        self.assertLess(produced * CHUNK, 4 * STREAM_WINDOW)
        self.assertLess(produced, 64)
        self.assertEqual(self.deployment.request("GET", "/ping").body, b"pong")
        self.assertEqual(len(self.progress), produced)
        client.transport.producer.resumeProducing()
        self.deployment.pump(500)
        response = client.response()
        self.assertEqual(len(response.body), 64 * CHUNK)
        self.assertEqual(self.closed, [True])

    def test_failing_body_aborts(self) -> None:
        """
        A body that fails after the headers went out cuts the client's
        response short; the connection to the microservice serves on.
        """
        client = self.deployment.http()
        client.send("GET", "/broken")
        self.deployment.pump()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)

    def test_client_gone_closes_the_body(self) -> None:
        """
        A client that leaves mid-stream cancels the request: the producer is
        closed (its finally runs) and nothing more is produced.
        """
        client = self.deployment.http()
        client.transport.producer.pauseProducing()
        client.send("GET", "/export?chunks=1000")
        self.deployment.pump(50)
        client.disconnect()
        self.deployment.pump(50)
        produced = len(self.progress)
        self.assertEqual(self.closed, [True])
        self.deployment.pump(50)
        self.assertEqual(len(self.progress), produced)
        self.assertEqual(self.service.sessions[0].dispatcher.in_flight, 0)


def make_upload_app(events: List[Any]) -> Microservice:
    import hashlib

    app = Microservice("uploads", "1.0.0")

    @app.endpoint("POST", "/invoices/{id}/attachments", streaming=True,
                  max_request_bytes=200_000)
    async def attach(ctx: Any) -> RawResponse:
        digest = hashlib.sha256()
        chunks = 0
        try:
            async for chunk in ctx.body:
                digest.update(chunk)
                chunks += 1
                events.append(("chunk", len(chunk)))
                if ctx.query_params.get("stall"):
                    gate: Deferred = Deferred()
                    events.append(("gate", gate))
                    await gate
        except Exception as e:
            events.append(("error", type(e).__name__, ctx.cancel_reason))
            raise
        return RawResponse.json({"sha256": digest.hexdigest(), "chunks": chunks,
                                 "bytes": ctx.body.received})

    @app.endpoint("POST", "/big/{id}/attachments", streaming=True)
    async def big(ctx: Any) -> RawResponse:
        return await attach(ctx)

    @app.endpoint("POST", "/early", streaming=True)
    def early(ctx: Any) -> RawResponse:
        return RawResponse.text("no thanks", status=403)

    return app


class StreamingRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Any] = []
        self.deployment = InMemoryDeployment()
        self.deployment.add(make_upload_app(self.events))
        self.addCleanup(self.deployment.stop)

    def send_head(self, client: Any, path: str, length: Any = None) -> None:
        size = (f"Content-Length: {length}" if length is not None
                else "Transfer-Encoding: chunked")
        client.channel.dataReceived(f"POST {path} HTTP/1.1\r\nHost: x\r\n{size}\r\n\r\n".encode())

    def test_upload_hashed_as_it_arrives(self) -> None:
        """
        A 3 MiB upload reaches the handler in pieces as it arrives, and the
        handler's sha256 matches the client's.
        """
        import hashlib

        body = bytes(range(256)) * (3 * 4096)
        client = self.deployment.http()
        self.send_head(client, "/big/7/attachments", len(body))
        for offset in range(0, len(body), 65536):
            client.channel.dataReceived(body[offset:offset + 65536])
            self.deployment.pump()
        self.deployment.pump()
        result = json.loads(client.response().body)
        self.assertEqual(result["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(result["bytes"], len(body))
        self.assertGreater(result["chunks"], 10)

    def test_slow_handler_pauses_the_client(self) -> None:
        """
        A handler that does not read makes the gateway stop reading from the
        client after one window of credit; reading again resumes it.
        """
        client = self.deployment.http()
        self.send_head(client, "/big/7/attachments?stall=1", 64 * 65536)
        for offset in range(64):
            if client.transport.producerState == "paused":
                break
            client.channel.dataReceived(b"z" * 65536)
            self.deployment.pump()
        self.assertEqual(client.transport.producerState, "paused")
        sent = sum(size for kind, size, *_ in [e for e in self.events if e[0] == "chunk"])
        self.assertLessEqual(sent, STREAM_WINDOW + 65536)
        for _ in range(20):
            gates = [e[1] for e in self.events if e[0] == "gate" and not e[1].called]
            for gate in gates:
                gate.callback(None)
            self.deployment.pump()
        self.assertEqual(client.transport.producerState, "producing")

    def test_chunked_upload_over_the_limit(self) -> None:
        """
        A chunked upload crossing the endpoint's max_request_bytes is
        stopped: CANCEL PayloadLimitExceeded reaches the handler and the
        client gets 413.
        """
        from stellarouter.common.enums import CancelReason

        client = self.deployment.http()
        self.send_head(client, "/invoices/7/attachments")
        for _ in range(5):
            client.channel.dataReceived(b"%x\r\n%s\r\n" % (60000, b"q" * 60000))
            self.deployment.pump()
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 413"))
        self.assertTrue(client.transport.disconnecting)
        errors = [e for e in self.events if e[0] == "error"]
        self.assertEqual(errors, [("error", "CancelledError", CancelReason.PAYLOAD_LIMIT_EXCEEDED)])

    def test_client_gone_mid_upload(self) -> None:
        """
        A client that leaves mid-upload cancels the handler (reason
        ClientDisconnected).
        """
        from stellarouter.common.enums import CancelReason

        client = self.deployment.http()
        self.send_head(client, "/big/7/attachments", 10 * 65536)
        client.channel.dataReceived(b"a" * 65536)
        self.deployment.pump()
        client.disconnect()
        self.deployment.pump()
        self.assertIn(("error", "CancelledError", CancelReason.CLIENT_DISCONNECTED), self.events)

    def test_early_answer(self) -> None:
        """
        A handler that answers before reading the body: the client gets the
        answer and the rest of its upload is read and dropped.
        """
        client = self.deployment.http()
        self.send_head(client, "/early", 6 * 65536)
        for _ in range(6):
            client.channel.dataReceived(b"e" * 65536)
            self.deployment.pump()
        response = client.response()
        self.assertEqual((response.status, response.body), (403, b"no thanks"))


class StreamLimitTests(SynchronousTestCase):
    def test_streamed_body_beyond_the_per_call_limit(self) -> None:
        """
        A streaming endpoint without its own limit takes a body larger than
        the per-call limit (it never sits in the gateway); a declared
        Content-Length over the endpoint's own limit is 413 before dispatch.
        """
        events: List[Any] = []
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(make_upload_app(events))
        deployment.gateway.proxy.limits = type(deployment.gateway.proxy.limits)(100_000)
        deployment.gateway.site.max_request_bytes = 100_000
        response = deployment.request("POST", "/big/1/attachments", b"b" * 300_000)
        self.assertEqual(json.loads(response.body)["bytes"], 300_000)
        response = deployment.request("POST", "/invoices/1/attachments", b"b" * 300_000)
        self.assertEqual(response.status, 413)
        self.assertEqual([e for e in events if e[0] == "error"], [])


def make_shape_app(events: List[Any]) -> Microservice:
    """
    One handler written for a whole body, one for an async stream.
    """
    app = Microservice("shapes", "1.0.0")

    @app.endpoint("POST", "/whole")
    def whole(ctx: Any) -> RawResponse:
        events.append(("whole", type(ctx.body).__name__))
        return RawResponse.json({"bytes": len(ctx.body)})

    @app.endpoint("POST", "/stream", streaming=True)
    async def stream(ctx: Any) -> RawResponse:
        events.append(("stream", type(ctx.body).__name__))
        size = 0
        async for chunk in ctx.body:
            size += len(chunk)
        return RawResponse.json({"bytes": size, "received": ctx.body.received})

    return app


class StreamingOverrideTests(SynchronousTestCase):
    """
    C{supports_streaming} in the microservice's YAML changes what HELLO
    announces (so how the gateway moves the body); each handler still gets
    the body shape its code declared.
    """

    def setUp(self) -> None:
        from stellarouter.config.microservice import EndpointOverrideConfig

        self.events: List[Any] = []
        self.deployment = InMemoryDeployment()
        self.deployment.add(make_shape_app(self.events), endpoints=[
            EndpointOverrideConfig("POST", "/whole", supports_streaming=True),
            EndpointOverrideConfig("POST", "/stream", supports_streaming=False)])
        self.addCleanup(self.deployment.stop)

    def test_announced(self) -> None:
        """
        HELLO announces the overridden flags.
        """
        endpoints = self.deployment.gateway.connections[0].state.endpoints
        self.assertTrue(endpoints[("POST", "/whole")].supports_streaming)
        self.assertFalse(endpoints[("POST", "/stream")].supports_streaming)

    def test_bytes_handler_made_streaming(self) -> None:
        """
        A 3 MiB upload to a bytes handler announced as streaming is streamed
        by the gateway with credit (more than one window) and handed to the
        handler whole.
        """
        body = b"w" * (3 * 1024 * 1024)
        client = self.deployment.http()
        client.channel.dataReceived(
            f"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        self.deployment.pump()
        # Routed when the headers arrived: the body streams, nothing buffered.
        self.assertEqual(len(self.deployment.gateway.connections[0].uploads), 1)
        for offset in range(0, len(body), 65536):
            # The microservice grants credit as the body arrives, so the
            # gateway never has to stop reading from the client.
            self.assertNotEqual(client.transport.producerState, "paused", offset)
            client.channel.dataReceived(body[offset:offset + 65536])
            self.deployment.pump()
        response = client.response()
        self.assertEqual((response.status, json.loads(response.body)), (200, {"bytes": len(body)}))
        self.assertEqual(self.events, [("whole", "bytes")])

    def test_stream_handler_made_buffered(self) -> None:
        """
        A streaming handler announced as non-streaming gets its (buffered,
        inline) body as the same async stream.
        """
        response = self.deployment.request("POST", "/stream", b"s" * 5000)
        self.assertEqual((response.status, json.loads(response.body)),
                         (200, {"bytes": 5000, "received": 5000}))
        self.assertEqual(self.events, [("stream", "BodyStream")])
        response = self.deployment.request("POST", "/stream", b"")
        self.assertEqual(json.loads(response.body), {"bytes": 0, "received": 0})


class GatewayBufferedOverrideTests(SynchronousTestCase):
    """
    The gateway's C{services[].endpoints[].supports_streaming: false} turns
    streaming off for an endpoint announced as streaming: the body is
    buffered (within the per-call limit) and sent whole; the streaming
    handler still reads it as a stream.
    """

    def setUp(self) -> None:
        from stellarouter.config.gateway import EndpointOverride, ServiceConfig

        self.events: List[Any] = []
        self.deployment = InMemoryDeployment(services=[ServiceConfig("uploads", endpoints=(
            EndpointOverride("POST", "/big/{id}/attachments", buffered=True),))])
        self.deployment.add(make_upload_app(self.events))
        self.addCleanup(self.deployment.stop)

    def upload(self, path: str, body: bytes) -> Any:
        client = self.deployment.http()
        client.channel.dataReceived(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        self.deployment.pump()
        early = len(self.deployment.gateway.connections[0].uploads)
        client.channel.dataReceived(body)
        self.deployment.pump()
        return early, client.response()

    def test_buffered(self) -> None:
        """
        Not routed when the headers arrive; answered once the body is in,
        with the handler's digest of the whole body.
        """
        import hashlib

        body = b"q" * 100_000
        early, response = self.upload("/big/1/attachments", body)
        self.assertEqual(early, 0)
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body)["sha256"], hashlib.sha256(body).hexdigest())
        # The endpoint without the override still streams.
        early, response = self.upload("/invoices/1/attachments", body)
        self.assertEqual((early, response.status), (1, 200))

    def test_per_call_limit_applies(self) -> None:
        """
        Buffered, the endpoint is bounded by the per-call limit (413; the
        body is read and dropped, never buffered or dispatched), which a
        streaming endpoint without its own limit is not
        (L{StreamingRequestTests.test_streamed_body_beyond_the_per_call_limit}).
        """
        size = self.deployment.config.payload_limits.max_request_bytes_per_call + 1
        early, response = self.upload("/big/1/attachments", b"z" * size)
        self.assertEqual((early, response.status), (0, 413))
        self.assertEqual(self.events, [])
