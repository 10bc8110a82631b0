"""
What the gateway records about its traffic, and where the hooks are.

The request path has one observation per proxied request:
L{RequestTelemetry.finished}, called by the site when a request ends
(answered, or its client left).  It reads what the edge noted on the
request as it went (its correlation id, its plan, when its head arrived,
when its REQUEST went out and when the RESPONSE head came back) and feeds
the metrics (L{GatewayMetrics}) and the access log (L{AccessLog}).
Microservice connections count their frames themselves
(L{GatewayConnection.traffic}); connection-level refusals are counted by
the site's refusal log; everything else is read when the metrics are
scraped (L{ServiceFigures}).  With C{metrics.enabled: false} none of this
counting happens: no request is observed for the metrics, no frame is
counted.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as json_string
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Tuple

import msgspec
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..accesslog import AccessLog, iso_timestamp, json_lines, milliseconds
from ..config.observability import AccessLogConfig, MetricsConfig
from .metrics import UNMATCHED, GatewayMetrics, LiveFigures

if TYPE_CHECKING:
    from .connection import GatewayConnection
    from .service import GatewayService

#: The gateway's access log fields, in order (the first is the time).
ACCESS_LOG_FIELDS = ("time", "cid", "method", "path", "route", "service", "version",
                     "instance", "status", "bytes_in", "bytes_out", "upstream_ms", "total_ms",
                     "client")
#: A gateway access log record: the values of L{ACCESS_LOG_FIELDS}, the
#: path as it came (bytes), latencies in milliseconds rounded to the
#: microsecond.
GatewayRecord = Tuple[float, str, str, bytes, str, str, str, str, int, int, int,
                      Optional[float], float, Optional[str]]


def gateway_json_line(record: GatewayRecord) -> str:
    """
    L{stellarouter.accesslog.format_json} of one gateway record, spelled out
    for its field types: this runs once per proxied request, and the
    generic loop over the values costs twice as much.
    """
    (when, cid, method, path, route, service, version, instance, status, bytes_in, bytes_out,
     upstream, total, client) = record
    upstream_ms = "null" if upstream is None else f"{upstream:.3f}"
    client_text = "null" if client is None else json_string(client)
    # (The correlation id is the gateway's own text, hex digits and dashes:
    # nothing to escape.)
    return (f'{{"time":"{iso_timestamp(when)}","cid":"{cid}","method":{json_string(method)},'
            f'"path":{json_string(path.decode("latin-1"))},"route":{json_string(route)},'
            f'"service":{json_string(service)},"version":{json_string(version)},'
            f'"instance":{json_string(instance)},"status":{status},"bytes_in":{bytes_in},'
            f'"bytes_out":{bytes_out},"upstream_ms":{upstream_ms},"total_ms":{total:.3f},'
            f'"client":{client_text}}}')


#: One gateway access log line as msgspec writes it: a struct whose fields
#: are L{ACCESS_LOG_FIELDS}, in order (values are not checked: they are the
#: record's, already of the right types).
_GatewayLine = msgspec.defstruct("_GatewayLine", ACCESS_LOG_FIELDS, gc=False)


def gateway_json_text(records: List[GatewayRecord]) -> str:
    """
    The JSON lines of a batch of gateway records (L{json_lines}): the
    values L{gateway_json_line} shows.
    """
    return json_lines([
        _GatewayLine(iso_timestamp(when), cid, method, path.decode("latin-1"), route, service,
                     version, instance, status, bytes_in, bytes_out, upstream, total, client)
        for (when, cid, method, path, route, service, version, instance, status, bytes_in,
             bytes_out, upstream, total, client) in records], records, gateway_json_line)


#: The route label and log value of a request the gateway refused before
#: it was routed (401, 403, 503 ...; a 404 is L{UNMATCHED}).
NOT_ROUTED = "(not routed)"
#: The status logged for a request whose client left before its answer
#: (as nginx does).
CLIENT_CLOSED = 499


class RequestTelemetry:
    """
    The one observation per proxied request.

    @ivar metrics: where requests are counted, or L{None} (off).
    @ivar access_log: where their lines go, or L{None} (off).
    """

    def __init__(self, clock: IReactorTime, metrics: Optional[GatewayMetrics] = None,
                 access_log: Optional[AccessLog[GatewayRecord]] = None) -> None:
        self.clock = clock
        self.metrics = metrics
        self.access_log = access_log

    def finished(self, request: Any, answered: bool) -> None:
        """
        A request ended: answered, or its client left.  Requests the proxy
        did not handle (C{/health}, C{OPTIONS *}) are ignored.

        @param answered: its answer is complete (else its client left, or
            the connection was refused and closed).
        """
        cid = getattr(request, "correlation_id", None)
        if cid is None:
            return
        now = self.clock.seconds()
        if answered:
            status = request.code
        else:
            # (Refused at the connection, cut short by a failure, or its
            # client left.)
            status = (getattr(request.channel, "refused", None)
                      or getattr(request, "cut_short", None) or CLIENT_CLOSED)
        answered_at = request.answered_at
        total = now - request.received_at
        upstream = answered_at - request.dispatched_at if answered_at is not None else None
        plan = request.plan
        if plan is not None:
            instance = plan.connection.state.instance
            service, version, instance_id = (instance.service_name, instance.version,
                                             instance.instance_id)
            route = plan.template
        else:
            service = version = instance_id = ""
            route = UNMATCHED if status == 404 else NOT_ROUTED
        # The method as received: a HEAD routed to a GET endpoint is a HEAD.
        method = request.method.decode("latin-1")
        metrics = self.metrics
        if metrics is not None:
            metrics.request_finished(service, version, method, route, status, total, upstream)
            if answered_at is None and status != CLIENT_CLOSED:
                metrics.rejected(status)
        log = self.access_log
        if log is not None and (not log.errors_only or status >= 500
                                or status == CLIENT_CLOSED):
            upload = request.upload
            path = request.path
            if path is None:  # (an upload whose body is still arriving)
                path = (request.uri or b"").split(b"?", 1)[0]
            # (Raw values: the path stays bytes until the line is formatted.)
            log.add((
                now, cid, method, path, route, service, version, instance_id, status,
                upload.received if upload is not None else request._received,
                request.sentLength, milliseconds(upstream) if upstream is not None else None,
                milliseconds(total), getattr(request.client, "host", None),
            ))

    def close(self) -> None:
        """
        Write out what the access log holds.
        """
        if self.access_log is not None:
            self.access_log.close()


def build_telemetry(clock: IReactorTime, access: AccessLogConfig, metrics_config: MetricsConfig,
                    metrics: Optional[GatewayMetrics]) -> RequestTelemetry:
    """
    The telemetry a configuration asks for.

    @param metrics: the gateway's metrics (kept across reloads), used if
        C{metrics_config.enabled}.
    @raise OSError: the access log file cannot be opened.
    """
    log = (AccessLog(ACCESS_LOG_FIELDS, access, clock, json_text=gateway_json_text)
           if access.enabled else None)
    return RequestTelemetry(clock, metrics if metrics_config.enabled else None, log)


@implementer(LiveFigures)
class ServiceFigures:
    """
    The gateway service's figures read at scrape time.
    """

    def __init__(self, service: GatewayService) -> None:
        self.service = service
        #: CANCELs sent by connections that have closed since, by reason.
        self.retired_cancels: Dict[str, int] = {}
        #: Lines lost by access logs that reloads replaced since.
        self.retired_lines_lost = 0

    def retire(self, connection: GatewayConnection) -> None:
        """
        A connection closed: keep its counts.
        """
        for reason, count in connection.in_flight.cancels_sent.items():
            self.retired_cancels[reason] = self.retired_cancels.get(reason, 0) + count

    def retire_telemetry(self, telemetry: RequestTelemetry) -> None:
        """
        A reload replaced C{telemetry} (closed): keep its access log's count
        of lines lost.
        """
        if telemetry.access_log is not None:
            self.retired_lines_lost += telemetry.access_log.lost

    def access_log_lines_lost(self) -> int:
        telemetry = self.service.telemetry
        log = telemetry.access_log if telemetry is not None else None
        return self.retired_lines_lost + (log.lost if log is not None else 0)

    def in_flight(self) -> int:
        return sum(len(c.in_flight) for c in self.service.connections)

    def instances(self) -> Iterator[Tuple[str, str]]:
        for connection in self.service.routing_state.connections():
            state = connection.state
            yield state.instance.service_name, state.status.value

    def connections(self) -> Iterable[str]:
        kinds = [c.sender.transport_type.value for c in self.service.connections
                 if c.sender is not None and getattr(c.sender, "transport_type", None)]
        return kinds + ["http"] * self.service.site.open_connections

    def transports(self) -> Iterable[str]:
        return ["http"] + [t.type.value for t in self.service.config.transports]

    def cancellations(self) -> Dict[str, int]:
        counts = dict(self.retired_cancels)
        for connection in self.service.connections:
            for reason, count in connection.in_flight.cancels_sent.items():
                counts[reason] = counts.get(reason, 0) + count
        return counts

    def reloads(self) -> Tuple[int, int]:
        watcher = self.service.watcher
        return self.service.reloads_applied, watcher.failures if watcher is not None else 0

    def resilience(self) -> Dict[str, int]:
        figures = dict(self.service.proxy.retries.metrics())
        state = self.service.routing_state
        figures["ejected_now"] = sum(1 for c in state.connections() if state.is_ejected(c))
        return figures


__all__ = ["ACCESS_LOG_FIELDS", "RequestTelemetry", "ServiceFigures", "build_telemetry"]
