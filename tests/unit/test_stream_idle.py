"""
Tests for the idle timeout of streamed responses (issue 25, item 3): once a
response has started streaming, the endpoint's timeout counts from the last
bytes, in the SDK, the gateway and the test client.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, List


from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.config.microservice import EndpointOverrideConfig
from stellarouter.microservice import Microservice, StreamingResponse
from stellarouter.microservice.idle import IdleTimer
from stellarouter.testing.client import ServiceClient, StreamAborted
from stellarouter.testing.harness import InMemoryDeployment

EPSILON = 1e-6


class IdleTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.rang: List[float] = []
        self.timer = IdleTimer(self.clock, 2.0, lambda: self.rang.append(self.clock.seconds()))
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_rings_after_timeout_without_touch(self) -> None:
        """
        Untouched, it rings once at the timeout, not before.
        """
        self.clock.advance(2.0 - EPSILON)
        self.assertEqual(self.rang, [])
        self.clock.advance(EPSILON)
        self.assertEqual(self.rang, [2.0])

    def test_touch_moves_it(self) -> None:
        """
        A touch starts the idle time again: it rings a timeout after the
        last touch.
        """
        self.clock.advance(1.5)
        self.timer.touch()
        self.clock.advance(2.0 - EPSILON)
        self.assertEqual(self.rang, [])
        self.clock.advance(EPSILON)
        self.assertEqual(self.rang, [3.5])

    def test_stop(self) -> None:
        """
        A stopped timer never rings and leaves no delayed call.
        """
        self.timer.stop()
        self.clock.advance(10)
        self.assertEqual(self.rang, [])


def _ticks(clock: Clock, count: int, interval: float) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"tick %d\n" % i
            await deferLater(clock, interval, lambda: None)
    return body()


class SdkIdleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: List[str] = []
        service = Microservice("ticks", "1.0.0")

        @service.endpoint("GET", "/ticks", timeout=2.0)
        def ticks(ctx: Any) -> StreamingResponse:
            count = int(ctx.query_params["count"][0])
            interval = float(ctx.query_params["interval"][0])
            return StreamingResponse(200, [], _ticks(self.clock, count, interval))

        self.client = ServiceClient(service, self.clock)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_stream_longer_than_timeout_completes(self) -> None:
        """
        A stream that lasts 5 s on a 2 s endpoint, a byte every second,
        completes (the SDK and the client only cut an idle stream).
        """
        d = self.client.get("/ticks?count=5&interval=1")
        for _ in range(6):
            self.clock.advance(1)
        self.assertEqual(self.successResultOf(d).body.count(b"tick"), 5)

    def test_idle_stream_aborted_by_the_sdk(self) -> None:
        """
        A stream silent for the endpoint's timeout is aborted by the SDK
        (the client here would wait 60 s) exactly at it.
        """
        d = self.client.get("/ticks?count=2&interval=5", timeout=60.0)
        self.clock.advance(2.0 - EPSILON)
        self.assertNoResult(d)
        self.clock.advance(EPSILON)
        self.failureResultOf(d, StreamAborted)
        self.assertEqual(self.client.in_flight, 0)
        self.assertEqual(self.client.dispatcher.failed, 1)
        self.flushLoggedErrors()


class GatewayIdleTests(SynchronousTestCase):
    def test_stream_through_the_gateway_outlives_the_timeout(self) -> None:
        """
        Through a gateway, a streamed response that keeps moving completes
        past the endpoint's timeout, and one that stalls is cut at its
        timeout after its last bytes.
        """
        clock = Clock()
        service = Microservice("ticks", "1.0.0")

        @service.endpoint("GET", "/ticks", timeout=2.0)
        def ticks(ctx: Any) -> StreamingResponse:
            interval = float(ctx.query_params["interval"][0])
            return StreamingResponse(200, [], _ticks(clock, 4, interval))

        deployment = InMemoryDeployment(clock)
        self.addCleanup(deployment.stop)
        deployment.add(service)
        client = deployment.http()
        client.send("GET", "/ticks?interval=1")
        for _ in range(50):
            clock.advance(0.1)
        response = client.response()
        assert response is not None
        self.assertEqual((response.status, response.body.count(b"tick")), (200, 4))
        stalled = deployment.http()
        stalled.send("GET", "/ticks?interval=30")
        deployment.pump()
        clock.advance(2.0 - EPSILON)
        deployment.pump()
        self.assertFalse(stalled.transport.disconnecting)
        clock.advance(EPSILON)
        deployment.pump()
        self.assertTrue(stalled.transport.disconnecting or stalled.transport.disconnected)


    def test_yaml_timeout_is_the_sdk_idle_timeout(self) -> None:
        """
        The SDK's idle timeout is the endpoint's timeout as announced, YAML
        override included: a 2 s endpoint set to 5 s in YAML streams a byte
        every 3 s to the end.
        """
        clock = Clock()
        service = Microservice("ticks", "1.0.0")

        @service.endpoint("GET", "/ticks", timeout=2.0)
        def ticks(ctx: Any) -> StreamingResponse:
            return StreamingResponse(200, [], _ticks(clock, 3, 3.0))

        deployment = InMemoryDeployment(clock)
        self.addCleanup(deployment.stop)
        deployment.add(service, endpoints=[EndpointOverrideConfig("GET", "/ticks", timeout=5.0)])
        client = deployment.http()
        client.send("GET", "/ticks")
        for _ in range(120):
            clock.advance(0.1)
        response = client.response()
        assert response is not None
        self.assertEqual(response.body.count(b"tick"), 3)
