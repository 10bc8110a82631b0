"""
Graceful drain of a microservice, in one process on a Clock: DRAINING,
the gateway's acknowledgement, in-flight requests finishing, the grace
period.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, InstanceHealthStatus
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment


def make_app() -> Any:
    app = Microservice("drainy", "1.0.0")
    app.pending = []  # type: ignore[attr-defined]

    @app.endpoint("GET", "/slow")
    def slow(ctx: Any) -> Deferred:
        d: Deferred = Deferred()
        app.pending.append((ctx, d))  # type: ignore[attr-defined]
        return d

    @app.endpoint("GET", "/who")
    def who(ctx: Any) -> RawResponse:
        return RawResponse.text(ctx.instance.instance_id)

    return app


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment()
        self.app = make_app()
        self.a = self.deployment.add(self.app, instance_id="a", drain_grace_period=10.0)
        self.b = self.deployment.add(self.app, instance_id="b")
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        self.deployment.stop()
        self.assertEqual(self.deployment.clock.getDelayedCalls(), [])

    def slow_on(self, instance_id: str) -> tuple:
        """
        Send /slow requests until one is pending on C{instance_id}.
        """
        for _ in range(4):
            client = self.deployment.http()
            client.send("GET", "/slow")
            self.deployment.pump()
            ctx, d = self.app.pending[-1]
            if ctx.instance.instance_id == instance_id:
                return client, ctx, d
        raise AssertionError(f"no request reached {instance_id}")

    def gateway_status(self, instance_id: str) -> InstanceHealthStatus:
        for connection in self.deployment.gateway.connections:
            if connection.state.instance.instance_id == instance_id:
                return connection.state.status
        raise LookupError(instance_id)

    def test_drain_finishes_in_flight_and_stops_new(self) -> None:
        """
        A stopping instance reports DRAINING, gets no new request, finishes
        the one in flight, then disconnects; no client sees an error.
        """
        client, ctx, d = self.slow_on("a")
        stopped = self.a.stopService()
        self.deployment.pump()
        self.assertEqual(self.gateway_status("a"), InstanceHealthStatus.DRAINING)
        self.assertNoResult(stopped)
        for _ in range(5):
            self.assertEqual(self.deployment.request("GET", "/who").body, b"b")
        d.callback(RawResponse.text("finished"))
        self.deployment.pump()
        self.assertEqual(client.response().body, b"finished")
        self.successResultOf(stopped)
        self.assertEqual([c.state.instance.instance_id for c in self.deployment.gateway.connections],
                         ["b"])
        self.assertFalse(ctx.cancelled.called)

    def test_grace_period_bounds_the_drain(self) -> None:
        """
        A request still running when the grace period ends is cancelled with
        reason Shutdown and its client gets 503; then the instance leaves.
        """
        client, ctx, d = self.slow_on("a")
        stopped = self.a.stopService()
        self.deployment.pump()
        self.deployment.clock.advance(10.0 - 1e-6)
        self.deployment.pump()
        self.assertNoResult(stopped)
        self.deployment.clock.advance(1e-6)
        self.deployment.pump()
        self.successResultOf(stopped)
        self.assertEqual(ctx.cancel_reason, CancelReason.SHUTDOWN)
        self.assertEqual(client.response().status, 503)

    def test_idle_instance_leaves_at_once(self) -> None:
        """
        An instance with nothing in flight leaves as soon as the gateway has
        acknowledged DRAINING.
        """
        stopped = self.a.stopService()
        self.deployment.pump()
        self.successResultOf(stopped)
        self.assertEqual(len(self.deployment.gateway.connections), 1)
