"""
Streamed responses with flow control, in one process on a Clock: the body
arrives whole, a paused client pauses the producer after one window, other
requests on the same connection are not held up, failures and cancels end
the stream cleanly.
"""

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
