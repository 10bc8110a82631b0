"""
The microservice's access log: one line per request it served, carrying
the correlation id the gateway logged for the same request, so searching
one id finds the request on both sides.

The dispatcher tells L{RequestLog} when a whole answer went out
(L{RequestLog.answered}), when a streamed answer ended
(L{RequestLog.stream_ended}) and when a request was cancelled
(L{RequestLog.cancelled}); each is one line, buffered in an L{AccessLog}.
With C{access_log.level: errors}, only answers with status >= 500,
cancellations and aborted streams are written.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii as json_string
from typing import List, Optional, Tuple, Union

import msgspec
from twisted.internet.interfaces import IReactorTime

from ..accesslog import AccessLog, iso_timestamp, json_lines, milliseconds
from ..common.ids import CorrelationId
from ..config.observability import AccessLogConfig
from .inbound import InboundRequest

#: The microservice's access log fields, in order (the first is the time).
SDK_ACCESS_LOG_FIELDS = ("time", "cid", "method", "path", "route", "status", "bytes_out",
                         "duration_ms", "outcome")
#: A microservice access log record: the values of L{SDK_ACCESS_LOG_FIELDS}
#: (the duration in milliseconds rounded to the microsecond).
SdkRecord = Tuple[float, Union[str, CorrelationId], str, str, str, Optional[int], Optional[int],
                  Optional[float], str]


def sdk_json_line(record: SdkRecord) -> str:
    """
    L{stellarouter.accesslog.format_json} of one microservice record,
    spelled out for its field types (it runs once per request).
    """
    when, cid, method, path, route, status, size, duration, outcome = record
    duration_ms = "null" if duration is None else f"{duration:.3f}"
    # (A correlation id's text is hex digits and dashes: nothing to escape.)
    return (f'{{"time":"{iso_timestamp(when)}","cid":"{cid}","method":{json_string(method)},'
            f'"path":{json_string(path)},"route":{json_string(route)},'
            f'"status":{"null" if status is None else status},'
            f'"bytes_out":{"null" if size is None else size},"duration_ms":{duration_ms},'
            f'"outcome":{json_string(outcome)}}}')


#: One microservice access log line as msgspec writes it: a struct whose fields
#: are L{SDK_ACCESS_LOG_FIELDS}, in order (values are not checked: they are the
#: record's, already of the right types).
_SdkLine = msgspec.defstruct("_SdkLine", SDK_ACCESS_LOG_FIELDS, gc=False)


def sdk_json_text(records: List[SdkRecord]) -> str:
    """
    The JSON lines of a batch of microservice records (L{json_lines}): the
    values L{sdk_json_line} shows.
    """
    return json_lines([
        _SdkLine(iso_timestamp(when), cid if type(cid) is str else str(cid), method, path, route,
                 status, size, duration, outcome)
        for (when, cid, method, path, route, status, size, duration, outcome) in records],
        records, sdk_json_line)


class RequestLog:
    """
    Writes the SDK's access log lines.
    """

    def __init__(self, config: AccessLogConfig, clock: IReactorTime,
                 log: Optional[AccessLog[SdkRecord]] = None) -> None:
        self.clock = clock
        self.log = log if log is not None else AccessLog(
            SDK_ACCESS_LOG_FIELDS, config, clock, json_text=sdk_json_text)
        self.errors_only = config.level == "errors"

    def answered(self, request: InboundRequest, status: int, size: int) -> None:
        """
        A whole answer went out (C{size} body bytes).
        """
        if status < 500:
            if not self.errors_only:
                self._line(request, status, size, "ok")
        else:
            self._line(request, status, size, "error")

    def stream_ended(self, request: InboundRequest, ok: bool, sent: Optional[int]) -> None:
        """
        A streamed answer ended (C{ok}) or was aborted, C{sent} body bytes
        out (L{None}: not known).
        """
        if ok and self.errors_only:
            return
        self._line(request, request.stream_status, sent, "ok" if ok else "stream-aborted")

    def cancelled(self, request: InboundRequest, reason: str) -> None:
        """
        The gateway cancelled the request (C{reason}: the CANCEL's).
        """
        self._line(request, None, None, f"cancelled:{reason}")

    def _line(self, request: InboundRequest, status: Optional[int], size: Optional[int],
              outcome: str) -> None:
        now = self.clock.seconds()
        message = request.message
        started = request.started_at
        # (The correlation id's text, if the handler's context has it already;
        # else the id, shown when the line is formatted.)
        context = request.context
        cid = request.cid if context is None else context.correlation_id
        self.log.add((now, cid, message.method, message.path, message.template, status, size,
                      milliseconds(now - started) if started is not None else None, outcome))

    def close(self) -> None:
        """
        Write out what is buffered.
        """
        self.log.close()
