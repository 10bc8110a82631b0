"""
Tests for the gateway's Prometheus metrics (issue 21, item 2): the metric
families after real (in-memory) traffic, labels bounded by configuration
(route templates, never raw paths), and the series cap.
"""

import dataclasses
import os
from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import CancelReason
from stellarouter.config.errors import ConfigError
from stellarouter.config.observability import AccessLogConfig, MetricsConfig
from stellarouter.gateway.metrics import (
    OVERFLOW,
    UNMATCHED,
    GatewayMetrics,
    IMetricsExposition,
    LiveFigures,
)
from stellarouter.gateway.telemetry import NOT_ROUTED
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.telemetry import sample, sample_values


def make_app(held: List[Deferred]) -> Microservice:
    app = Microservice("counted", "1.2.3")

    @app.endpoint("GET", "/n/{i}")
    def number(ctx: Any) -> RawResponse:
        return RawResponse.text(ctx.path_params["i"])

    @app.endpoint("POST", "/sink")
    def sink(ctx: Any) -> RawResponse:
        return RawResponse.text(str(len(ctx.body)))

    @app.endpoint("GET", "/boom")
    def boom(ctx: Any) -> RawResponse:
        return RawResponse(503, [], b"busy")

    @app.endpoint("GET", "/held")
    def hold(ctx: Any) -> Deferred:
        d: Deferred = Deferred()
        held.append(d)
        return d

    return app


class MetricsTests(SynchronousTestCase):
    """
    The metrics of an in-memory gateway after traffic.
    """

    def setUp(self) -> None:
        self.held: List[Deferred] = []
        self.deployment = InMemoryDeployment()
        self.deployment.add(make_app(self.held), instance_id="counted-1")
        self.metrics = self.deployment.gateway.metrics
        self.addCleanup(self.deployment.stop)

    def scrape(self) -> bytes:
        body, content_type = self.metrics.exposition()
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        return body

    def test_interfaces(self) -> None:
        """
        The metrics provide the admin listener's exposition interface, and
        the service's live figures their interface.
        """
        self.assertTrue(verifyObject(IMetricsExposition, self.metrics))
        self.assertTrue(verifyObject(LiveFigures, self.deployment.gateway.figures))

    def test_own_registry(self) -> None:
        """
        Each gateway has its own registry: nothing lands in
        prometheus_client's global one.
        """
        from prometheus_client import REGISTRY, generate_latest
        self.deployment.request("GET", "/n/1")
        self.assertNotIn(b"stellarouter_", generate_latest(REGISTRY))
        self.assertIsNot(self.metrics.registry, REGISTRY)

    def test_requests_by_route_template(self) -> None:
        """
        A proxied request is counted under its service, the version that
        served it, its method, its route template and its status class.
        """
        self.deployment.request("GET", "/n/1")
        self.deployment.request("GET", "/n/2")
        self.deployment.request("GET", "/boom")
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="counted",
                                version="1.2.3", method="GET", route="/n/{i}",
                                status_class="2xx"), 2)
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="counted",
                                version="1.2.3", method="GET", route="/boom",
                                status_class="5xx"), 1)
        self.assertNotIn(b"/n/1", body)
        self.assertEqual(sample(body, "stellarouter_http_request_duration_seconds_count",
                                service="counted"), 3)
        self.assertEqual(sample(body, "stellarouter_upstream_duration_seconds_count",
                                service="counted"), 3)
        # A 503 the microservice answered is not a rejection by the gateway.
        self.assertIsNone(sample(body, "stellarouter_rejections_total", status="503"))

    def test_head_counted_as_head(self) -> None:
        """
        F4: a HEAD routed to a GET endpoint is counted with C{method="HEAD"}
        under that endpoint's route, not as a GET.
        """
        self.deployment.request("HEAD", "/n/1")
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="counted",
                                version="1.2.3", method="HEAD", route="/n/{i}",
                                status_class="2xx"), 1)
        self.assertIsNone(sample(body, "stellarouter_http_requests_total", service="counted",
                                 version="1.2.3", method="GET", route="/n/{i}",
                                 status_class="2xx"))

    def test_ten_thousand_paths_do_not_grow_the_series(self) -> None:
        """
        10,000 distinct paths (half of them of one route, half matching no
        route) and 100 made-up methods add one label set per route, status
        class and known method: the series count is bounded by
        configuration, not by traffic.
        """
        client = self.deployment.http()

        def send(i: int) -> None:
            client.send("GET", f"/n/{i}" if i % 2 else f"/nowhere/{i}")
            if i % 100 == 0:
                client.send(f"X{i}", f"/n/{i}")

        for i in range(2):
            send(i)
        self.deployment.pump()
        series = self.metrics.series()
        lines = len(self.scrape().splitlines())
        for i in range(2, 10_000):
            send(i)
            self.deployment.pump(2)
            client.transport.clear()
        self.deployment.pump()
        self.assertEqual(self.metrics.series(), series)
        body = self.scrape()
        self.assertEqual(len(body.splitlines()), lines)
        self.assertNotIn(b"/nowhere/", body)
        self.assertNotIn(b"X100", body)
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="counted",
                                version="1.2.3", method="GET", route="/n/{i}",
                                status_class="2xx"), 5_000)
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="",
                                version="", method="GET", route=UNMATCHED,
                                status_class="4xx"), 5_000)
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="",
                                version="", method="OTHER", route=NOT_ROUTED,
                                status_class="4xx"), 100)
        self.assertEqual(sample(body, "stellarouter_rejections_total", status="404"), 5_000)
        self.assertEqual(sample(body, "stellarouter_rejections_total", status="405"), 100)

    def test_series_cap(self) -> None:
        """
        Past C{metrics.max_series} label sets, new ones are counted under
        C{(overflow)}.
        """
        metrics = GatewayMetrics(max_series=2)
        for route in ("/a", "/b", "/c", "/d"):
            metrics.request_finished("s", "1.0.0", "GET", route, 200, 0.001, 0.0005)
        self.assertEqual(metrics.series(), 3)
        body = metrics.exposition()[0]
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service=OVERFLOW,
                                version=OVERFLOW, method="GET", route=OVERFLOW,
                                status_class="2xx"), 2)

    def test_overflow_keeps_latency_by_service(self) -> None:
        """
        Past C{max_series}, only the request counter's label sets overflow:
        each service keeps its own latency histograms (outside test F7:
        they moved to C{service="(overflow)"}).
        """
        metrics = GatewayMetrics(max_series=2)
        for service, route in (("s", "/a"), ("s", "/b"), ("s", "/c"), ("t", "/x")):
            metrics.request_finished(service, "1.0.0", "GET", route, 200, 0.001, 0.0005)
        body = metrics.exposition()[0]
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service=OVERFLOW,
                                version=OVERFLOW, method="GET", route=OVERFLOW,
                                status_class="2xx"), 2)
        for name in ("stellarouter_http_request_duration_seconds_count",
                     "stellarouter_upstream_duration_seconds_count"):
            self.assertEqual(sample(body, name, service="s"), 3)
            self.assertEqual(sample(body, name, service="t"), 1)
            self.assertIsNone(sample(body, name, service=OVERFLOW))

    def test_no_upstream_latency_without_a_route(self) -> None:
        """
        Requests not routed have a total latency under C{service=""} but no
        upstream latency series, which nothing could ever fill (outside
        test N2).
        """
        self.deployment.request("GET", "/nowhere")
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_http_request_duration_seconds_count",
                                service=""), 1)
        self.assertNotIn(b'stellarouter_upstream_duration_seconds_count{service=""}', body)
        self.assertIsNone(sample(body, "stellarouter_upstream_duration_seconds_count",
                                 service=""))

    def test_buckets_up_to_an_hour(self) -> None:
        """
        The latency buckets go up to 3600 s (the longest streaming route
        timeouts): a 20-minute stream is told from a 40-second one (outside
        test N8: everything past 30 s was only in C{+Inf}).
        """
        metrics = GatewayMetrics()
        metrics.request_finished("s", "1.0.0", "GET", "/export", 200, 1200.0, 0.01)
        metrics.request_finished("s", "1.0.0", "GET", "/export", 200, 40.0, 0.01)
        body = metrics.exposition()[0]
        bucket = "stellarouter_http_request_duration_seconds_bucket"
        self.assertEqual([sample(body, bucket, service="s", le=le)
                          for le in ("30.0", "60.0", "900.0", "3600.0", "+Inf")],
                         [0, 1, 1, 2, 2])

    def test_connection_gauges_stay_at_zero(self) -> None:
        """
        The connections gauge of HTTP clients and of each listener's
        transport is 0 when none is open, not absent (outside test N1: the
        http series vanished, and C{absent()} alerts fired).
        """
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_connections", transport="http"), 0)
        self.assertEqual(sample(body, "stellarouter_connections", transport="inmemory"), 1)
        client = self.deployment.http()
        client.send("GET", "/n/1")
        self.deployment.pump()
        self.assertEqual(sample(self.scrape(), "stellarouter_connections", transport="http"), 1)
        client.disconnect()
        for service in list(self.deployment.microservices):
            service.stopService()
        self.deployment.microservices.clear()
        self.deployment.pump()
        self.deployment.clock.advance(31)
        self.deployment.pump()
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_connections", transport="http"), 0)
        self.assertEqual(sample(body, "stellarouter_connections", transport="inmemory"), 0)

    def test_live_figures(self) -> None:
        """
        In-flight requests, instances by health, connections by transport,
        frames and bytes by transport, CANCELs by reason and reloads are in
        the exposition.
        """
        client = self.deployment.http()
        client.send("GET", "/held")
        self.deployment.pump()
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_http_requests_in_flight"), 1)
        self.assertEqual(sample(body, "stellarouter_instances", service="counted",
                                health="healthy"), 1)
        self.assertEqual(sample(body, "stellarouter_connections", transport="inmemory"), 1)
        self.assertEqual(sample(body, "stellarouter_connections", transport="http"), 1)
        self.assertGreaterEqual(sample(body, "stellarouter_frames_total", transport="inmemory",
                                       direction="in") or 0, 1)  # the HELLO at least
        self.assertGreaterEqual(sample(body, "stellarouter_frames_total", transport="inmemory",
                                       direction="out") or 0, 2)  # HELLO answer, REQUEST
        client.disconnect()
        self.deployment.pump()
        body = self.scrape()
        self.assertEqual(sample(body, "stellarouter_http_requests_in_flight"), 0)
        self.assertEqual(sample(body, "stellarouter_cancellations_total",
                                reason=CancelReason.CLIENT_DISCONNECTED.value), 1)
        self.assertEqual(sample(body, "stellarouter_config_reloads_total", result="ok"), 0)
        self.assertEqual(sample(body, "stellarouter_http_requests_total", service="counted",
                                version="1.2.3", method="GET", route="/held",
                                status_class="4xx"), 1)  # 499: the client left

    def test_cancellations_survive_the_connection(self) -> None:
        """
        CANCELs counted by a connection stay counted after it closes.
        """
        client = self.deployment.http()
        client.send("GET", "/held")
        self.deployment.pump()
        client.disconnect()
        self.deployment.pump()
        for service in list(self.deployment.microservices):
            service.stopService()
        self.deployment.microservices.clear()
        self.deployment.pump()
        self.deployment.clock.advance(31)
        self.deployment.pump()
        self.assertEqual(self.deployment.gateway.connections, [])
        self.assertEqual(sample(self.scrape(), "stellarouter_cancellations_total",
                                reason=CancelReason.CLIENT_DISCONNECTED.value), 1)

    def test_streamed_bytes(self) -> None:
        """
        A request body too large for one frame goes in stream frames: its
        bytes are counted as streamed out (credit frames are not).
        """
        body = b"x" * 2_000_000
        response = self.deployment.request("POST", "/sink", body)
        self.assertEqual(response.body, b"2000000")
        self.assertEqual(sample(self.scrape(), "stellarouter_streamed_bytes_total",
                                transport="inmemory", direction="out"), 2_000_000)

    def test_rejections_at_the_edge(self) -> None:
        """
        A request refused at the connection (a malformed head) is counted
        as a rejection with its status.
        """
        client = self.deployment.http()
        client.channel.dataReceived(b"GET /n/1 HTTP/1.1\r\nHost: a\r\nHost b\r\n\r\n")
        self.deployment.pump()
        self.assertEqual(sample(self.scrape(), "stellarouter_rejections_total", status="400"), 1)

    def test_config_reloads_counted(self) -> None:
        """
        A configuration applied counts as a reload ok.
        """
        import dataclasses
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(gateway.config, node=dataclasses.replace(
            gateway.config.node, environment="staging")))
        self.assertEqual(sample(self.scrape(), "stellarouter_config_reloads_total",
                                result="ok"), 1)

    def test_access_log_lines_lost(self) -> None:
        """
        Access log lines that could not be written (a full disk:
        C{/dev/full}) are counted, and stay counted after a reload replaces
        that log with one that writes.
        """
        deployment = InMemoryDeployment(access_log=AccessLogConfig(path="/dev/full"))
        self.addCleanup(deployment.stop)
        deployment.add(make_app([]), instance_id="counted-1")
        gateway = deployment.gateway
        metrics = gateway.metrics

        def lost() -> object:
            return sample(metrics.exposition()[0], "stellarouter_access_log_lines_lost_total")
        self.assertEqual(lost(), 0)
        for i in range(3):
            deployment.request("GET", f"/n/{i}")
        deployment.clock.advance(1)  # (the buffer's flush interval)
        self.assertEqual(lost(), 3)
        gateway.apply_config(dataclasses.replace(
            gateway.config, access_log=AccessLogConfig(path=os.devnull)))
        deployment.request("GET", "/n/4")
        deployment.clock.advance(1)
        self.assertEqual(lost(), 3)

    def test_disabled(self) -> None:
        """
        C{metrics.enabled: false}: requests are not counted.
        """
        import dataclasses
        gateway = self.deployment.gateway
        gateway.apply_config(dataclasses.replace(gateway.config, metrics=dataclasses.replace(
            gateway.config.metrics, enabled=False)))
        self.deployment.request("GET", "/n/1")
        self.assertEqual(self.metrics.series(), 0)


class DisabledMetricsTests(SynchronousTestCase):
    """
    C{metrics.enabled: false} counts nothing on the request path, from the
    start or from a reload on (outside test F6: frames, frame bytes and
    streamed bytes went on being counted).
    """

    def deployment(self, enabled: bool) -> InMemoryDeployment:
        deployment = InMemoryDeployment(
            metrics=MetricsConfig(enabled=enabled),
            access_log=AccessLogConfig(enabled=False))
        self.addCleanup(deployment.stop)
        deployment.add(make_app([]), instance_id="counted-1")
        return deployment

    def reload(self, deployment: InMemoryDeployment, enabled: bool) -> None:
        gateway = deployment.gateway
        gateway.apply_config(dataclasses.replace(gateway.config, metrics=dataclasses.replace(
            gateway.config.metrics, enabled=enabled)))

    def frames(self, deployment: InMemoryDeployment) -> List[int]:
        traffic = deployment.gateway.metrics.traffic.get("inmemory")
        if traffic is None:
            return [0, 0, 0, 0, 0]
        return [traffic.frames_in, traffic.frames_out, traffic.bytes_in, traffic.bytes_out,
                traffic.streamed_out]

    def test_off_from_the_start(self) -> None:
        """
        Started with metrics off, the gateway counts no frame and no
        request, and its site calls no telemetry when a
        request ends (the access log is off too).
        """
        deployment = self.deployment(enabled=False)
        gateway = deployment.gateway
        self.assertEqual(deployment.request("GET", "/n/1").status, 200)
        self.assertEqual(deployment.request("POST", "/sink", b"x" * 2_000_000).body,
                         b"2000000")
        self.assertEqual(self.frames(deployment), [0, 0, 0, 0, 0])
        self.assertEqual(gateway.metrics.series(), 0)
        self.assertEqual(gateway.metrics.latency, {})
        self.assertFalse(gateway.metrics.enabled)
        self.assertIsNone(gateway.site.telemetry)
        [connection] = gateway.connections
        self.assertIsNone(connection.traffic)

    def test_turned_off_and_on_by_reloads(self) -> None:
        """
        A reload that turns metrics off stops the counting on the
        connections already open; one that turns them on again starts it
        on them.
        """
        deployment = self.deployment(enabled=True)
        gateway = deployment.gateway
        deployment.request("GET", "/n/1")
        counted = self.frames(deployment)
        self.assertGreater(counted[0], 0)
        self.assertEqual(gateway.metrics.series(), 1)
        self.reload(deployment, enabled=False)
        self.assertFalse(gateway.metrics.enabled)
        deployment.request("GET", "/n/2")
        deployment.request("POST", "/sink", b"x" * 2_000_000)
        self.assertEqual(self.frames(deployment), counted)
        self.assertEqual(gateway.metrics.series(), 1)
        self.assertIsNone(gateway.site.telemetry)
        self.reload(deployment, enabled=True)
        self.assertTrue(gateway.metrics.enabled)
        deployment.request("GET", "/n/3")
        after = self.frames(deployment)
        self.assertEqual([after[0] - counted[0], after[1] - counted[1]], [1, 1])
        self.assertEqual(gateway.metrics.requests[
            ("counted", "1.2.3", "GET", "/n/{i}", "2xx")].count, 2)


    def test_off_by_a_reload_whose_access_log_cannot_open(self) -> None:
        """
        A reload that turns metrics off and names an access log file that
        cannot be opened is refused whole: metrics stay on, the access log
        keeps its settings (and stays open), the configuration in force is
        the previous one.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(make_app([]), instance_id="counted-1")
        gateway = deployment.gateway
        before, config = gateway.telemetry, gateway.config
        assert before is not None and before.access_log is not None
        error = self.assertRaises(ConfigError, gateway.apply_config, dataclasses.replace(
            gateway.config, metrics=MetricsConfig(enabled=False),
            access_log=AccessLogConfig(path=self.mktemp() + "/missing/access.log")))
        self.assertIn("cannot be opened", str(error))
        self.assertTrue(gateway.metrics.enabled)
        self.assertIs(gateway.telemetry, before)
        self.assertIs(gateway.config, config)
        self.assertEqual(gateway.reloads_applied, 0)
        deployment.request("GET", "/n/1")
        self.assertEqual(gateway.metrics.series(), 1)


class SampleValuesTests(SynchronousTestCase):
    """
    The exposition is Prometheus text that prometheus_client's parser reads.
    """

    def test_every_family(self) -> None:
        """
        Every metric family of issue 21's list is exposed.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(make_app([]))
        deployment.request("GET", "/n/1")
        names = set(sample_values(deployment.gateway.metrics.exposition()[0]))
        for name in ("stellarouter_http_requests_total",
                     "stellarouter_http_request_duration_seconds_bucket",
                     "stellarouter_upstream_duration_seconds_bucket",
                     "stellarouter_http_requests_in_flight", "stellarouter_instances",
                     "stellarouter_connections", "stellarouter_frames_total",
                     "stellarouter_frame_bytes_total", "stellarouter_config_reloads_total"):
            self.assertIn(name, names)
