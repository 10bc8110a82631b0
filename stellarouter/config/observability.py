"""
The observability settings shared by the gateway and the microservice:
C{access_log} (one structured line per request) and, for the gateway,
C{metrics} (Prometheus figures served on the admin listener).  Read here
once, validated with the rest of the file, frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .reader import Reader

#: The line formats of the access log.
ACCESS_LOG_FORMATS = ("json", "logfmt")
#: Which requests get a line: every one, or only errors (status >= 500),
#: cancellations and failed streams.
ACCESS_LOG_LEVELS = ("all", "errors")
#: C{access_log.path} value meaning the process's standard output.
STDOUT = "-"


@dataclass(frozen=True)
class AccessLogConfig:
    """
    The access log.

    @ivar enabled: write one line per request (default: yes).
    @ivar format: C{"json"} (JSON lines) or C{"logfmt"}.
    @ivar path: L{None}: into the process's own log (what C{twistd
        --logfile} names); C{"-"}: standard output; else a file, appended to.
    @ivar level: C{"all"}, or C{"errors"}: only status >= 500,
        cancellations and failed streams.
    @ivar flush_interval: seconds a line may wait in the buffer.
    @ivar buffer_lines: the buffer is written out when it holds this many
        lines (it never holds more).
    """

    enabled: bool = True
    format: str = "json"
    path: Optional[str] = None
    level: str = "all"
    flush_interval: float = 0.5
    buffer_lines: int = 256


@dataclass(frozen=True)
class MetricsConfig:
    """
    The gateway's Prometheus metrics.

    @ivar enabled: collect them (served as C{GET /metrics} on the admin
        listener).
    @ivar max_series: label sets of the per-route request counter at most;
        beyond, new ones are counted under C{route="(overflow)"}.  Routes
        are the announced templates (C{/invoices/{id}}), never raw paths.
    """

    enabled: bool = True
    max_series: int = 2000


def read_access_log(r: Reader, raw: object,
                    legacy_enabled: Optional[bool] = None) -> AccessLogConfig:
    """
    Read the C{access_log} section.

    @param legacy_enabled: the gateway's former C{http.access_log} boolean,
        if the file still sets it: it sets C{enabled} (setting both is a
        problem).
    """
    obj = r.mapping(raw, "access_log", ["enabled", "format", "path", "level",
                                        "flush_interval", "buffer_lines"])
    defaults = AccessLogConfig()
    enabled = r.get(obj, "enabled", "access_log", bool, defaults.enabled)
    if legacy_enabled is not None:
        if "enabled" in obj:
            r.problem("http.access_log", "is replaced by access_log.enabled; set only that one")
        enabled = legacy_enabled
    return AccessLogConfig(
        enabled=enabled,
        format=r.get(obj, "format", "access_log", str, defaults.format,
                     lambda v: None if v in ACCESS_LOG_FORMATS
                     else f"{v!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}"),
        path=r.get(obj, "path", "access_log", str, None,
                   lambda v: None if v else "must be a file path or '-' (standard output)"),
        level=r.get(obj, "level", "access_log", str, defaults.level,
                    lambda v: None if v in ACCESS_LOG_LEVELS
                    else f"{v!r} is not one of {', '.join(ACCESS_LOG_LEVELS)}"),
        flush_interval=r.get(obj, "flush_interval", "access_log", float,
                             defaults.flush_interval,
                             lambda v: None if 0 < v <= 60 else "must be in (0, 60]"),
        buffer_lines=r.get(obj, "buffer_lines", "access_log", int, defaults.buffer_lines,
                           lambda v: None if 1 <= v <= 65536 else "must be in [1, 65536]"),
    )


def read_metrics(r: Reader, raw: object) -> MetricsConfig:
    """
    Read the gateway's C{metrics} section.
    """
    obj = r.mapping(raw, "metrics", ["enabled", "max_series"])
    defaults = MetricsConfig()
    return MetricsConfig(
        enabled=r.get(obj, "enabled", "metrics", bool, defaults.enabled),
        max_series=r.get(obj, "max_series", "metrics", int, defaults.max_series,
                         lambda v: None if 1 <= v <= 100_000 else "must be in [1, 100000]"),
    )
