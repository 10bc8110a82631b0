"""
The gateway's Prometheus metrics, in a registry of its own (never
C{prometheus_client}'s global one), exposed by L{GatewayMetrics.exposition}
(the admin listener's C{GET /metrics}).

Counting costs a request a dictionary look-up and a few additions: the
figures live in plain Python objects (L{RouteCounts}, L{TransportTraffic},
L{LatencyHistogram}) updated on the request path, and a collector turns
them into metric families only when scraped.  Gauges (in-flight requests,
instances, connections) and the counters other objects keep already
(CANCELs sent by reason, refused reloads) are read at scrape time, so they
cost the request path nothing.

Label values come from configuration and registrations, never from the
request: the route label is the announced template (C{/invoices/{id}}), a
path no route matches is C{route="(unmatched)"}, an unknown method is
C{OTHER}, and at most C{metrics.max_series} label sets of the request
counter are kept; beyond, new ones are counted under C{route="(overflow)"}.
The latency histograms are labelled by service only, bounded by
registrations, not traffic: a service keeps its own histograms past the
cap.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from zope.interface import Interface, implementer

from .interfaces import IMetricsExposition

#: The route label of a request no route matched.
UNMATCHED = "(unmatched)"
#: The label value that stands for any value past the series cap.
OVERFLOW = "(overflow)"
#: Methods kept as label values; any other is C{OTHER}.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                     "CONNECT"})
#: Latency histogram buckets (seconds).  Up to an hour: a streamed
#: response may last as long as its route's timeout allows (3600 s for a
#: long export), and past the last bound only C{+Inf} tells anything.  Each
#: bound is one series per service and histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The content type of what L{generate_latest} writes: the Prometheus text
#: format 0.0.4, which every Prometheus server reads (prometheus_client
#: 0.22+ names 1.0.0 "latest", which older servers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class LatencyHistogram:
    """
    A histogram's state: a count per bucket (not cumulative), a sum.  (Its
    count is the last cumulative bucket's, C{+Inf}.)
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def buckets(self) -> List[Tuple[str, float]]:
        """
        Cumulative C{(le, count)} pairs, C{+Inf} last.
        """
        out: List[Tuple[str, float]] = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self.counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class ServiceLatency:
    """
    The latency histograms of one service.
    """

    __slots__ = ("total", "upstream")

    def __init__(self) -> None:
        self.total = LatencyHistogram()
        self.upstream = LatencyHistogram()


class RouteCounts:
    """
    The requests of one label set, and the latency histograms of its
    service (shared by all its label sets).

    @ivar latency: C{None} for an overflow label set, which counts the
        requests of several services: each keeps its own histograms.
    """

    __slots__ = ("count", "latency")

    def __init__(self, latency: Optional[ServiceLatency]) -> None:
        self.count = 0
        self.latency = latency


class TransportTraffic:
    """
    Frames and bytes through the microservice connections of one transport.
    Bytes are frame bytes (header and payload); C{streamed_*} are the
    bodies carried in stream frames (request bodies out, response bodies
    in).
    """

    __slots__ = ("frames_in", "bytes_in", "frames_out", "bytes_out", "streamed_in",
                 "streamed_out")

    def __init__(self) -> None:
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0
        self.streamed_in = self.streamed_out = 0


class LiveFigures(Interface):
    """
    The gateway's figures read at scrape time.
    """

    def in_flight() -> int:
        """
        Proxied requests sent to a microservice and not yet answered.
        """

    def instances() -> Iterable[Tuple[str, str]]:
        """
        C{(service, health)} of every registered instance.
        """

    def connections() -> Iterable[str]:
        """
        The transport (C{tcp}, C{udp}, ..., C{http} for HTTP clients) of
        every open connection.
        """

    def transports() -> Iterable[str]:
        """
        The transports whose connection gauge is exposed even at zero:
        C{http} and those of the gateway's listeners.
        """

    def cancellations() -> Dict[str, int]:
        """
        CANCEL frames sent so far, by reason.
        """

    def reloads() -> Tuple[int, int]:
        """
        Configuration reloads applied and refused so far.
        """

    def access_log_lines_lost() -> int:
        """
        Access log lines lost to failed writes so far (a full disk ...).
        """

    def resilience() -> Dict[str, int]:
        """
        Retries and outlier ejections so far (the keys of
        L{stellarouter.gateway.attempts.RetryDispatcher.metrics}), and
        C{ejected_now}: instances ejected at this moment.
        """


@implementer(IMetricsExposition)
class GatewayMetrics:
    """
    The gateway's metrics: counted on the request path by
    L{request_finished}, L{rejected} and the L{TransportTraffic} objects,
    the rest read from a L{LiveFigures} when scraped.

    @ivar registry: this gateway's own registry.
    @ivar enabled: whether the gateway counts into these metrics
        (C{metrics.enabled}, kept current across reloads by the gateway
        service); while it is C{False} nothing on the request path counts.
        What the admin listener asks to tell whether metrics are collected.
    """

    def __init__(self, max_series: int = 2000, live: Optional[LiveFigures] = None,
                 enabled: bool = True) -> None:
        self.max_series = max_series
        self.live = live
        self.enabled = enabled
        self.requests: Dict[Tuple[str, str, str, str, str], RouteCounts] = {}
        self.latency: Dict[str, ServiceLatency] = {}
        self.rejections: Dict[int, int] = {}
        self.traffic: Dict[str, TransportTraffic] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def request_finished(self, service: str, version: str, method: str, route: str,
                         status: int, total: float, upstream: Optional[float]) -> None:
        """
        Count one proxied request answered (or whose client left).

        @param route: the route template, or L{UNMATCHED}.
        @param total: seconds from its head to its end.
        @param upstream: seconds from its REQUEST to the RESPONSE head, or
            L{None} if none came.
        """
        if method not in METHODS:
            method = "OTHER"
        key = (service, version, method, route,
               _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "0xx")
        counts = self.requests.get(key)
        if counts is None:
            counts = self._new_series(key)
        counts.count += 1
        latency = counts.latency
        if latency is None:  # (an overflow label set)
            latency = self._latency_of(service)
        # (Both histograms observed here, not through a method each.)
        histogram = latency.total
        histogram.counts[bisect_left(LATENCY_BUCKETS, total)] += 1
        histogram.total += total
        if upstream is not None:
            histogram = latency.upstream
            histogram.counts[bisect_left(LATENCY_BUCKETS, upstream)] += 1
            histogram.total += upstream

    def _new_series(self, key: Tuple[str, str, str, str, str]) -> "RouteCounts":
        """
        The counts of a label set seen for the first time: its own, or the
        overflow set's past C{max_series} (without histograms: the
        requests it counts keep their service's).
        """
        if len(self.requests) >= self.max_series:
            key = (OVERFLOW, OVERFLOW, key[2], OVERFLOW, key[4])
            counts = self.requests.get(key)
            if counts is None:
                counts = self.requests[key] = RouteCounts(None)
            return counts
        counts = self.requests[key] = RouteCounts(self._latency_of(key[0]))
        return counts

    def _latency_of(self, service: str) -> ServiceLatency:
        """
        The latency histograms of C{service} (created at its first request).
        """
        latency = self.latency.get(service)
        if latency is None:
            latency = self.latency[service] = ServiceLatency()
        return latency

    def rejected(self, status: int) -> None:
        """
        Count one request the gateway answered itself with C{status}
        (401, 404, 413, 503 ...), or refused at the connection (400, 408,
        431, 503 ...).
        """
        self.rejections[status] = self.rejections.get(status, 0) + 1

    def traffic_for(self, transport: str) -> TransportTraffic:
        """
        The traffic counters of one transport (C{tcp}, C{udp}, ...).
        """
        traffic = self.traffic.get(transport)
        if traffic is None:
            traffic = self.traffic[transport] = TransportTraffic()
        return traffic

    def series(self) -> int:
        """
        The label sets of the request counter (bounded by C{max_series} + a
        few overflow sets).
        """
        return len(self.requests)

    def exposition(self) -> Tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE


class _Collector:
    """
    Turns L{GatewayMetrics}' figures into metric families when scraped.
    """

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> List[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "stellarouter_http_requests", "Proxied HTTP requests by service, version, method, "
            "route template and status class",
            labels=["service", "version", "method", "route", "status_class"])
        for key, counts in sorted(m.requests.items()):
            requests.add_metric(list(key), counts.count)
        yield requests
        for name, attribute, doc in (
                ("stellarouter_http_request_duration_seconds", "total",
                 "Time from a request's head to the end of its answer, by service"),
                ("stellarouter_upstream_duration_seconds", "upstream",
                 "Time from a REQUEST sent to its RESPONSE head, by service")):
            family = HistogramMetricFamily(name, doc, labels=["service"])
            for service, latency in sorted(m.latency.items()):
                if attribute == "upstream" and not service:
                    # (Requests not routed went to no instance: no
                    # upstream latency, no series that could never move.)
                    continue
                histogram: LatencyHistogram = getattr(latency, attribute)
                family.add_metric([service], histogram.buckets(), histogram.total)
            yield family
        rejections = CounterMetricFamily(
            "stellarouter_rejections", "Requests the gateway answered itself, by status",
            labels=["status"])
        for status, count in sorted(m.rejections.items()):
            rejections.add_metric([str(status)], count)
        yield rejections
        frames = CounterMetricFamily(
            "stellarouter_frames", "Frames on microservice connections, by transport and "
            "direction", labels=["transport", "direction"])
        frame_bytes = CounterMetricFamily(
            "stellarouter_frame_bytes", "Frame bytes on microservice connections, by transport "
            "and direction", labels=["transport", "direction"])
        streamed = CounterMetricFamily(
            "stellarouter_streamed_bytes", "Body bytes carried in stream frames (request bodies "
            "out, response bodies in), by transport and direction",
            labels=["transport", "direction"])
        for transport, t in sorted(m.traffic.items()):
            frames.add_metric([transport, "in"], t.frames_in)
            frames.add_metric([transport, "out"], t.frames_out)
            frame_bytes.add_metric([transport, "in"], t.bytes_in)
            frame_bytes.add_metric([transport, "out"], t.bytes_out)
            streamed.add_metric([transport, "in"], t.streamed_in)
            streamed.add_metric([transport, "out"], t.streamed_out)
        yield frames
        yield frame_bytes
        yield streamed
        live = m.live
        if live is None:
            return
        yield GaugeMetricFamily("stellarouter_http_requests_in_flight",
                                "Proxied requests awaiting their microservice's answer",
                                value=live.in_flight())
        yield _gauge_by("stellarouter_instances", "Registered instances by service and health",
                        ["service", "health"], live.instances())
        yield _gauge_by("stellarouter_connections",
                        "Open connections by transport (http: HTTP clients)", ["transport"],
                        ((t,) for t in live.connections()),
                        always=((t,) for t in live.transports()))
        cancellations = CounterMetricFamily(
            "stellarouter_cancellations", "CANCEL frames sent to microservices, by reason",
            labels=["reason"])
        for reason, count in sorted(live.cancellations().items()):
            cancellations.add_metric([reason], count)
        yield cancellations
        applied, refused = live.reloads()
        reloads = CounterMetricFamily("stellarouter_config_reloads",
                                      "Configuration reloads by result", labels=["result"])
        reloads.add_metric(["ok"], applied)
        reloads.add_metric(["failed"], refused)
        yield reloads
        yield CounterMetricFamily(
            "stellarouter_access_log_lines_lost", "Access log lines lost because they could "
            "not be written (a full disk ...)", value=live.access_log_lines_lost())
        figures = live.resilience()
        retries = CounterMetricFamily(
            "stellarouter_retries", "Requests sent once more to another instance (retried), "
            "or that the policy allowed but found no instance or budget for (not_retried)",
            labels=["outcome"])
        retries.add_metric(["retried"], figures.get("retried", 0))
        retries.add_metric(["not_retried"], figures.get("not_retried", 0))
        yield retries
        ejections = CounterMetricFamily(
            "stellarouter_ejections", "Outlier ejections, and those the share cap prevented",
            labels=["result"])
        ejections.add_metric(["ejected"], figures.get("ejections", 0))
        ejections.add_metric(["prevented"], figures.get("ejections_prevented", 0))
        yield ejections
        yield GaugeMetricFamily("stellarouter_instances_ejected",
                                "Instances ejected as outliers right now",
                                value=figures.get("ejected_now", 0))


def _gauge_by(name: str, doc: str, labels: Sequence[str], items: Iterable[Tuple[str, ...]],
              always: Iterable[Tuple[str, ...]] = ()) -> GaugeMetricFamily:
    """
    A gauge of how many C{items} have each label set; those in C{always}
    are exposed at 0 when none has them (a series that disappears at 0
    reads as "absent" to an alert).
    """
    counts: Dict[Tuple[str, ...], int] = dict.fromkeys(always, 0)
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, count in sorted(counts.items()):
        family.add_metric(list(key), count)
    return family

