"""
Safe retries and outlier ejection through the whole gateway, in one process
on a Clock (issue 24): an in-memory gateway with two instances of one
service whose handlers count their executions.
"""

import dataclasses
from typing import Any, List, Optional

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.gateway.connection import ConnectionPhase
from stellarouter.common.interfaces import IResponseSink
from stellarouter.config.gateway import EndpointOverride, ServiceConfig
from stellarouter.config.resilience import OutlierDetectionConfig, RetryConfig
from stellarouter.gateway.attempts import Attempts
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment


def make_app(executions: List[str]) -> Any:
    """
    An app whose handlers record the instance that ran them and wait for
    the test (C{app.pending}: (ctx, Deferred) pairs).
    """
    app = Microservice("shop", "1.0.0")
    app.pending = []  # type: ignore[attr-defined]

    def wait(ctx: Any) -> Deferred:
        executions.append(f"{ctx.method} {ctx.instance.instance_id}")
        d: Deferred = Deferred()
        app.pending.append((ctx, d))  # type: ignore[attr-defined]
        return d

    app.endpoint("GET", "/slow", timeout=2.0)(wait)
    app.endpoint("POST", "/charge", timeout=2.0)(wait)
    # A streaming endpoint marked idempotent: still never retried (its body
    # went to the instance as it arrived).
    app.endpoint("PUT", "/upload", timeout=2.0, streaming=True, idempotent=True)(wait)

    @app.endpoint("GET", "/who")
    def who(ctx: Any) -> RawResponse:
        executions.append(f"GET {ctx.instance.instance_id}")
        return RawResponse.text(ctx.instance.instance_id)

    return app


class RetryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.executions: List[str] = []
        self.deployment = InMemoryDeployment()
        self.app = make_app(self.executions)
        self.a = self.deployment.add(self.app, instance_id="a")
        self.b = self.deployment.add(self.app, instance_id="b")
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        for _, d in self.app.pending:
            if not d.called:
                d.callback(RawResponse.text("late"))
        self.deployment.stop()
        self.assertEqual(self.deployment.clock.getDelayedCalls(), [])

    def configure(self, retries: RetryConfig = RetryConfig(),
                  outliers: OutlierDetectionConfig = OutlierDetectionConfig(),
                  services: Any = ()) -> None:
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(gateway.config, retries=retries,
                                                 outlier_detection=outliers,
                                                 services=tuple(services)))

    def connection(self, instance_id: str) -> Any:
        for connection in self.deployment.gateway.connections:
            if connection.state.instance.instance_id == instance_id:
                return connection
        raise LookupError(instance_id)

    def pending_on(self, method: str, path: str, instance_id: str) -> Any:
        """
        Send requests until one waits on C{instance_id}; answer the others.
        """
        for _ in range(4):
            client = self.deployment.http()
            client.send(method, path, b"{}" if method in ("POST", "PUT") else b"")
            self.deployment.pump()
            ctx, d = self.app.pending[-1]
            if ctx.instance.instance_id == instance_id:
                return client
            d.callback(RawResponse.text("other"))
            self.deployment.pump()
        raise AssertionError(f"no request reached {instance_id}")

    def kill(self, instance_id: str) -> None:
        """
        The instance's connection drops (what kill -9 does to its socket).
        """
        self.connection(instance_id).sender.close("killed")
        self.deployment.pump()

    def answer_last(self, text: str) -> None:
        ctx, d = self.app.pending[-1]
        d.callback(RawResponse.text(text))
        self.deployment.pump()

    def test_attempts_is_a_sink(self) -> None:
        """
        The per-request attempts object provides IResponseSink.
        """
        self.deployment.http().send("GET", "/slow")
        self.deployment.pump()
        connection = self.connection(self.app.pending[-1][0].instance.instance_id)
        sink = next(iter(connection.in_flight._pending.values())).sink
        self.assertIsInstance(sink, Attempts)
        verifyObject(IResponseSink, sink)

    def test_lost_get_retried_on_the_other_instance(self) -> None:
        """
        A GET in flight on an instance whose connection drops is sent to the
        other instance; the client gets its answer and X-Stella-Attempts: 2.
        """
        self.executions.clear()
        client = self.pending_on("GET", "/slow", "a")
        self.kill("a")
        self.assertIsNone(client.response())
        self.assertEqual(self.app.pending[-1][0].instance.instance_id, "b")
        self.answer_last("from b")
        response = client.response()
        self.assertEqual((response.status, response.body), (200, b"from b"))
        self.assertEqual(response.header("X-Stella-Attempts"), "2")
        self.assertEqual(self.deployment.gateway.proxy.retries.metrics()["retried"], 1)

    def test_lost_post_runs_once(self) -> None:
        """
        A POST (not idempotent) in flight on an instance whose connection
        drops is not sent again: 502, and it ran exactly once.
        """
        client = self.pending_on("POST", "/charge", "a")
        self.executions.clear()
        self.kill("a")
        response = client.response()
        self.assertEqual(response.status, 502)
        self.assertIsNone(response.header("X-Stella-Attempts"))
        self.assertEqual(self.executions, [])
        self.assertEqual(len([c for c, _ in self.app.pending if c.method == "POST"]), 1)

    def test_post_marked_idempotent_is_retried(self) -> None:
        """
        The gateway's C{idempotent: true} override lets a lost POST go to
        the other instance.
        """
        self.configure(services=[ServiceConfig("shop", endpoints=(
            EndpointOverride("POST", "/charge", idempotent=True),))])
        client = self.pending_on("POST", "/charge", "a")
        self.kill("a")
        self.answer_last("charged on b")
        self.assertEqual(client.response().body, b"charged on b")

    def test_not_started_post_goes_elsewhere(self) -> None:
        """
        A POST an instance answers "not started" (it is draining and the
        gateway does not know yet) runs once, on the other instance; the
        client never sees the signal.
        """
        self.executions.clear()
        for session in self.a.sessions:
            session.dispatcher.admission.draining = True
        responses = []
        for _ in range(4):
            client = self.deployment.http()
            client.send("POST", "/charge", b"{}")
            self.deployment.pump()
            self.answer_last("charged")
            responses.append(client.response())
        self.assertEqual(self.executions, ["POST b"] * 4)
        self.assertEqual({r.status for r in responses}, {200})
        self.assertIn("2", {r.header("X-Stella-Attempts") for r in responses})
        self.assertEqual({r.header("X-Stella-Not-Started") for r in responses}, {None})

    def test_requests_crossing_the_drain_report(self) -> None:
        """
        Requests the gateway sends to an instance after it reported DRAINING
        but before the gateway saw the report are not started there: they
        run on the other instance, and every client gets 200.
        """
        self.executions.clear()
        session = self.a.sessions[0]
        stopped = self.a.stopService()
        clients = []
        for _ in range(4):
            client = self.deployment.http()
            client.send("GET", "/who")
            clients.append(client)
        self.deployment.pump()
        self.assertEqual([c.response().status for c in clients], [200] * 4)
        self.assertEqual(self.executions, ["GET b"] * 4)
        self.assertEqual(session.dispatcher.admission.refused, {"draining": 2})
        self.deployment.pump()
        self.successResultOf(stopped)

    def test_not_started_without_another_instance(self) -> None:
        """
        With no other instance, a "not started" answer goes to the client as
        the 503 it is (Retry-After), without the signal header.
        """
        self.kill("b")
        for session in self.a.sessions:
            session.dispatcher.admission.draining = True
        response = self.deployment.request("POST", "/charge", b"{}")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header("Retry-After"), "1")
        self.assertIsNone(response.header("X-Stella-Not-Started"))
        self.assertNotIn("POST a", self.executions)

    def test_closed_before_written(self) -> None:
        """
        A POST routed to a connection that is already closed (its REQUEST
        cannot be written) provably did not run: it goes to the other
        instance and runs once.
        """
        self.executions.clear()
        connection = self.connection("a")
        registered = connection.phase
        connection.phase = ConnectionPhase.CLOSED
        self.addCleanup(setattr, connection, "phase", registered)
        for _ in range(4):
            client = self.deployment.http()
            client.send("POST", "/charge", b"{}")
            self.deployment.pump()
            self.answer_last("charged")
            self.assertEqual(client.response().status, 200)
        self.assertEqual(self.executions, ["POST b"] * 4)

    def test_streamed_body_never_retried(self) -> None:
        """
        A request to a streaming endpoint (its body forwarded as it came) is
        not sent again when its connection drops, even marked idempotent.
        """
        client = self.pending_on("PUT", "/upload", "a")
        self.executions.clear()
        self.kill("a")
        self.assertEqual(client.response().status, 502)
        self.assertEqual(self.executions, [])

    def test_budget_spent(self) -> None:
        """
        With the retry budget spent, a lost GET is not retried (502).
        """
        self.configure(retries=RetryConfig(budget_ratio=0.0, min_retries=0))
        client = self.pending_on("GET", "/slow", "a")
        self.kill("a")
        self.assertEqual(client.response().status, 502)
        self.assertEqual(self.deployment.gateway.proxy.retries.budget.refused, 1)

    def test_retries_off(self) -> None:
        """
        C{retries.enabled: false} retries nothing.
        """
        self.configure(retries=RetryConfig(enabled=False))
        client = self.pending_on("GET", "/slow", "a")
        self.kill("a")
        self.assertEqual(client.response().status, 502)


class EjectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.executions: List[str] = []
        self.deployment = InMemoryDeployment()
        self.app = make_app(self.executions)
        self.a = self.deployment.add(self.app, instance_id="a")
        self.b = self.deployment.add(self.app, instance_id="b")
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(
            gateway.config, outlier_detection=OutlierDetectionConfig(
                consecutive_failures=2, base_ejection_time=10.0, eject_on_timeout=False)))
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        for _, d in self.app.pending:
            if not d.called:
                d.callback(RawResponse.text("late"))
        self.deployment.stop()
        self.assertEqual(self.deployment.clock.getDelayedCalls(), [])

    def connection(self, instance_id: str) -> Any:
        for connection in self.deployment.gateway.connections:
            if connection.state.instance.instance_id == instance_id:
                return connection
        raise LookupError(instance_id)

    def stuck_on_a(self, count: int) -> List[Any]:
        """
        C{count} GETs waiting on instance a (those on b answered).
        """
        clients: List[Any] = []
        on_b: List[Deferred] = []
        for _ in range(4 * count):
            client = self.deployment.http()
            client.send("GET", "/slow")
            self.deployment.pump()
            ctx, d = self.app.pending[-1]
            if ctx.instance.instance_id == "a":
                clients.append(client)
                if len(clients) == count:
                    break
            else:
                on_b.append(d)
        for d in on_b:
            d.callback(RawResponse.text("b"))
        self.deployment.pump()
        self.assertEqual(len(clients), count)
        return clients

    def who(self, times: int = 6) -> set:
        return {self.deployment.request("GET", "/who").body for _ in range(times)}

    def test_timeouts_eject_until_the_ejection_ends(self) -> None:
        """
        Two timeouts in a row eject instance a: the next requests all go to
        b until the base ejection time has passed (not a moment before).
        """
        routing = self.deployment.gateway.routing_state
        clients = self.stuck_on_a(2)
        clock = self.deployment.clock
        clock.advance(2.0)
        self.deployment.pump()
        self.assertEqual([c.response().status for c in clients], [504, 504])
        state = routing.ejection_state(self.connection("a"))
        self.assertTrue(state.ejected)
        self.assertEqual((state.ejected_until, state.ejections), (clock.seconds() + 10.0, 1))
        self.assertEqual(self.who(), {b"b"})
        clock.advance(10.0 - 0.001)
        self.assertEqual(self.who(), {b"b"})
        clock.advance(0.001)
        self.assertEqual(self.who(), {b"a", b"b"})
        self.assertFalse(routing.ejection_state(self.connection("a")).ejected)

    def test_first_timeout_ejects_by_default(self) -> None:
        """
        With C{eject_on_timeout} (the default), a's first timeout ejects it:
        a frozen instance gets no new request while the others it holds
        time out one by one (an outside test saw one or two more routed to
        it before the fifth timeout).
        """
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(
            gateway.config, outlier_detection=OutlierDetectionConfig(base_ejection_time=10.0)))
        routing = gateway.routing_state
        clients = self.stuck_on_a(2)
        self.deployment.clock.advance(2.0)
        self.deployment.pump()
        self.assertEqual([c.response().status for c in clients], [504, 504])
        state = routing.ejection_state(self.connection("a"))
        self.assertTrue(state.ejected)
        self.assertEqual(state.ejections, 1)
        self.assertEqual(self.who(), {b"b"})

    def test_success_in_between_keeps_it(self) -> None:
        """
        A timeout, an answer, a timeout: not two in a row, no ejection.
        """
        routing = self.deployment.gateway.routing_state
        for _ in range(2):
            self.stuck_on_a(1)
            self.deployment.clock.advance(2.0)
            self.deployment.pump()
            self.assertIn(b"a", self.who())
        self.assertFalse(routing.ejection_state(self.connection("a")).ejected)

    def test_last_instance_never_ejected(self) -> None:
        """
        Once b is ejected, a is never ejected too (one of two at most).
        """
        routing = self.deployment.gateway.routing_state
        b = self.connection("b")
        routing.eject(b)
        for _ in range(3):
            client = self.deployment.http()
            client.send("GET", "/slow")
            self.deployment.pump()
            self.deployment.clock.advance(2.0)
            self.deployment.pump()
            self.assertEqual(client.response().status, 504)
        self.assertFalse(routing.ejection_state(self.connection("a")).ejected)
        self.assertEqual(routing.outliers.ejections_prevented, 2)
        routing.restore(b)


    def test_drained_instance_does_not_count_toward_the_share(self) -> None:
        """
        With b drained by the operator, a is the one instance routing may
        choose: its timeout does not eject it (outside test F3: the drained
        connection counted in the share, a was ejected, and the whole
        service answered 503 for the ejection's 30 s).
        """
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(
            gateway.config, outlier_detection=OutlierDetectionConfig(base_ejection_time=10.0)))
        routing = gateway.routing_state
        self.assertTrue(self.connection("b").request_drain())
        self.deployment.pump()
        client = self.deployment.http()
        client.send("GET", "/slow")
        self.deployment.pump()
        self.assertEqual(self.app.pending[-1][0].instance.instance_id, "a")
        self.deployment.clock.advance(2.0)
        self.deployment.pump()
        self.assertEqual(client.response().status, 504)
        self.assertFalse(routing.ejection_state(self.connection("a")).ejected)
        self.assertEqual(routing.outliers.ejections_prevented, 1)
        self.assertEqual(self.who(), {b"a"})

    def test_timeout_ejection_logged_as_such(self) -> None:
        """
        An ejection by C{eject_on_timeout} is logged as a timeout ejection
        with the failures actually seen (outside test F3: it said "after 5
        consecutive failure(s)" after one timeout).
        """
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(
            gateway.config, outlier_detection=OutlierDetectionConfig(base_ejection_time=10.0)))
        clients = self.stuck_on_a(1)
        with capturedLogs() as events:
            self.deployment.clock.advance(2.0)
            self.deployment.pump()
        self.assertEqual(clients[0].response().status, 504)
        lines = [formatEvent(e) for e in events if "ejected for" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("ejected for 10s at a gateway timeout "
                      "(outlier_detection.eject_on_timeout; 1 failure(s) in a row)", lines[0])
        self.assertNotIn("consecutive", lines[0])

    def test_consecutive_failures_ejection_logged_with_its_count(self) -> None:
        """
        An ejection by C{consecutive_failures} names how many failures in a
        row there were.
        """
        clients = self.stuck_on_a(2)
        with capturedLogs() as events:
            self.deployment.clock.advance(2.0)
            self.deployment.pump()
        self.assertEqual([c.response().status for c in clients], [504, 504])
        lines = [formatEvent(e) for e in events if "ejected for" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("ejected for 10s after 2 consecutive failure(s)", lines[0])


class AdmissionTests(SynchronousTestCase):
    def test_over_the_concurrency_limit(self) -> None:
        """
        An instance at its C{max_concurrent_requests} answers the next
        request 503 "not started" without calling its handler; with no
        other instance the client gets that 503.
        """
        from stellarouter.microservice.admission import RequestAdmission
        executions: List[str] = []
        deployment = InMemoryDeployment()
        app = make_app(executions)
        service = deployment.add(app, instance_id="a")
        for session in service.sessions:
            session.dispatcher.admission = RequestAdmission(max_concurrent=1)
        first = deployment.http()
        first.send("GET", "/slow")
        deployment.pump()
        second = deployment.request("GET", "/slow")
        self.assertEqual((second.status, second.header("Retry-After")), (503, "1"))
        self.assertEqual(executions, ["GET a"])
        app.pending[0][1].callback(RawResponse.text("done"))
        deployment.pump()
        self.assertEqual(first.response().status, 200)
        deployment.stop()


class ConfigTests(SynchronousTestCase):
    def test_gateway_keys(self) -> None:
        """
        C{retries}, C{outlier_detection} and an override's C{idempotent} are
        read; bad values name their key path.
        """
        from stellarouter.config.errors import ConfigError
        from stellarouter.config.gateway import parse_gateway_config
        base = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:0"}]}
        config = parse_gateway_config({
            **base, "retries": {"budget_ratio": 0.1, "min_retries": 0},
            "outlier_detection": {"consecutive_failures": 3, "base_ejection_time": 5},
            "services": [{"name": "shop", "endpoints": [
                {"method": "POST", "path": "/charge", "idempotent": True}]}]})
        self.assertEqual(config.retries, RetryConfig(True, 0.1, 10.0, 0))
        self.assertEqual(config.outlier_detection,
                         OutlierDetectionConfig(3, 5.0, 300.0, 0.5))
        self.assertIs(config.services[0].endpoints[0].idempotent, True)
        error = self.assertRaises(ConfigError, parse_gateway_config, {
            **base, "retries": {"budget_ratio": 2},
            "outlier_detection": {"max_ejected_share": -1, "base_ejection_time": 50,
                                  "max_ejection_time": 10}})
        text = "\n".join(error.problems)
        self.assertIn("retries.budget_ratio", text)
        self.assertIn("outlier_detection.max_ejected_share", text)
        self.assertIn("outlier_detection.max_ejection_time", text)

    def test_microservice_key(self) -> None:
        """
        A microservice's C{max_concurrent_requests} is read (at least 1).
        """
        from stellarouter.config.errors import ConfigError
        from stellarouter.config.microservice import parse_microservice_config
        base = {"region": "eu1", "routers": [{"transport": "tcp",
                                              "address": "tcp:host=127.0.0.1:port=5100"}]}
        self.assertEqual(parse_microservice_config(
            {**base, "max_concurrent_requests": 8}).max_concurrent_requests, 8)
        self.assertRaises(ConfigError, parse_microservice_config,
                          {**base, "max_concurrent_requests": 0})
