"""
The access log, shared by the gateway and the microservice: one structured
line per request, as JSON lines or logfmt, written buffered and formatted
lazily.

A request adds one tuple of raw values to a bounded buffer (no formatting,
no I/O on the request's path).  The buffer is written out when it is full
(C{access_log.buffer_lines}) or C{access_log.flush_interval} seconds after
its first line, and when the process stops: all its lines are formatted
then (JSON lines: encoded by msgspec in one call, L{json_lines}), and
written with one call - to a file or standard output, or as one
C{twisted.logger} event into the process's own log.  (twisted.web's own
access log formats and writes a line per request, and one logger event
costs about 28 us: a third of a proxied request.)
"""

from __future__ import annotations

import os
import re
import time
from functools import partial
from json.encoder import encode_basestring_ascii
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Sized, Tuple, TypeVar

import msgspec
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from .config.observability import STDOUT, AccessLogConfig

#: One request's values, in the order of its log's field names: the time
#: (seconds since the epoch), then C{str}, C{bytes} (shown as Latin-1
#: text), C{int}, C{float}, L{None}, or anything whose C{str} is shown.
Record = Tuple[object, ...]
#: A log's own record type (a tuple of known field types).
RecordT = TypeVar("RecordT", bound=Record)

#: Characters that make a logfmt value need quotes.
_LOGFMT_UNSAFE = re.compile(r'[\x00-\x20"=\\\x7f-\U0010ffff]')


#: The text after the second of each millisecond: C{.000Z} ... C{.999Z}.
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def iso_timestamp(seconds: float, _cache: List[object] = [-1, ""]) -> str:
    """
    C{seconds} since the epoch as ISO 8601 UTC with milliseconds
    (C{2026-12-03T14:05:09.042Z}); the part up to the second is cached.
    """
    whole = int(seconds)
    if whole != _cache[0]:
        _cache[0] = whole
        _cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return _cache[1] + _MILLIS[int((seconds - whole) * 1000)]  # type: ignore[operator]


def milliseconds(seconds: float) -> float:
    """
    C{seconds} in milliseconds rounded to the microsecond (half up), as
    access log records carry latencies: their shortest text has at most
    three decimals.
    """
    return int(seconds * 1_000_000 + 0.5) / 1000


def _null(value: object) -> str:
    return "null"


#: How a value of each type becomes JSON text (strings: the C escaper of
#: the standard library's JSON encoder, ASCII output; floats: three
#: decimals).
_JSON_TEXT: Dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii, int: str, float: "{:.3f}".format, type(None): _null,
    bool: lambda value: "true" if value else "false",
    bytes: lambda value: encode_basestring_ascii(value.decode("latin-1")),
}


def format_json(names: Sequence[str], record: Record) -> str:
    """
    One JSON object on one line (no newline).  The first value is the
    record's time (seconds since the epoch), shown as ISO 8601 UTC; floats
    are shown with three decimals (latencies in milliseconds); strings are
    escaped as C{json.dumps} does (quotes, control characters, non-ASCII).

    (The reference for the per-request lines each log spells out for its
    own field types: C{json_text} of L{AccessLog}.)
    """
    values = iter(record)
    parts = [f'"{names[0]}":"{iso_timestamp(next(values))}"']  # type: ignore[arg-type]
    parts += [f'"{name}":{_JSON_TEXT.get(type(value), _as_json_string)(value)}'
              for name, value in zip(names[1:], values)]
    return "{" + ",".join(parts) + "}"


def _as_json_string(value: object) -> str:
    return encode_basestring_ascii(str(value))


def _logfmt_value(value: object) -> str:
    if value is None:
        return ""
    if type(value) is float:
        return f"{value:.3f}"
    text = (value if isinstance(value, str) else value.decode("latin-1")
            if isinstance(value, bytes) else str(value))
    if text and _LOGFMT_UNSAFE.search(text) is None:
        return text
    return encode_basestring_ascii(text)


def format_logfmt(names: Sequence[str], record: Record) -> str:
    """
    One logfmt line (C{key=value} pairs, values quoted when they hold a
    space, C{=}, a quote or a control character; no newline).
    """
    values = iter(record)
    parts = [f"{names[0]}={iso_timestamp(next(values))}"]  # type: ignore[arg-type]
    for name, value in zip(names[1:], values):
        parts.append(f"{name}={_logfmt_value(value)}")
    return " ".join(parts)


FORMATTERS = {"json": format_json, "logfmt": format_logfmt}


class IAccessLogSink(Interface):
    """
    Where formatted access log lines go.
    """

    def write(lines: Sized) -> None:
        """
        Write a batch of lines.

        @param lines: C{len(lines)} lines, which it formats only when asked
            (C{str(lines)}: the lines separated by newlines, no newline
            after the last).
        """

    def close() -> None:
        """
        Release the file, if any.
        """


class _Lines(Generic[RecordT]):
    """
    A batch of records, formatted only when converted to text (by the
    sink, or by the log observer that writes the event carrying it).
    """

    __slots__ = ("records", "text_of", "_text")

    def __init__(self, records: List[RecordT], text_of: Callable[[List[RecordT]], str]) -> None:
        self.records = records
        self.text_of = text_of
        self._text: Optional[str] = None

    def __len__(self) -> int:
        return len(self.records)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = self.text_of(self.records)
        return text

    def __format__(self, spec: str) -> str:
        return str(self)


def joined(line: Callable[[RecordT], str]) -> Callable[[List[RecordT]], str]:
    """
    The text of a batch whose lines C{line} formats one by one.
    """
    def text_of(records: List[RecordT]) -> str:
        return "\n".join(map(line, records))
    return text_of


#: Writes a batch of JSON lines at once (L{json_lines}).
_JSON_LINES = msgspec.json.Encoder().encode_lines


def json_lines(lines: List[msgspec.Struct], records: List[RecordT],
               line: Callable[[RecordT], str]) -> str:
    """
    The JSON lines of a batch, encoded by msgspec in one call (about a
    third of the instructions of formatting them one by one in Python):
    C{lines} are the batch's records as structs whose fields are the log's
    field names, in order.  Should msgspec refuse a value (a string that is
    not valid Unicode), the batch is formatted line by line by C{line}
    instead.

    Strings are written as UTF-8 (not C{\\u} escapes), numbers as their
    shortest text (C{1.5}, where C{line} shows a latency as C{1.500}): a
    log's C{line} gives the same values, not the same text.
    """
    try:
        return _JSON_LINES(lines)[:-1].decode("utf-8")
    except (msgspec.EncodeError, UnicodeError):
        return "\n".join(map(line, records))


@implementer(IAccessLogSink)
class LoggerSink:
    """
    Into the process's own log (what C{twistd --logfile} names): one
    C{twisted.logger} event per batch, namespace C{stellarouter.access}.
    twistd writes the event's first line after its usual prefix and the
    following ones indented by a tab.
    """

    def __init__(self) -> None:
        # (An instance attribute: a Logger on the class takes the class's
        # name as its namespace.)
        self.log = Logger(namespace="stellarouter.access")

    #: The most text one log event carries: a batch goes out as several
    #: events cut at line ends (an observer may cap an event's size: trial's
    #: worker protocol refuses a value over 64 KiB, and a log line is read
    #: more easily in pieces).  A single longer line stays one event.
    max_event_chars = 32 * 1024

    def write(self, lines: Sized) -> None:
        text = str(lines)
        start, end = 0, len(text)
        # (Cut at the last line end that keeps a piece within the bound, by
        # str.rfind: no Python step per line.)
        while end - start > self.max_event_chars:
            cut = text.rfind("\n", start, start + self.max_event_chars + 1)
            if cut < 0:  # (a single longer line: it goes whole)
                cut = text.find("\n", start)
                if cut < 0:
                    break
            self._event(text, start, cut)
            start = cut + 1
        self._event(text, start, end)

    def _event(self, text: str, start: int, end: int) -> None:
        """
        One event of the lines C{text[start:end]}.
        """
        self.log.info("{access_log}", access_log=text[start:end])

    def close(self) -> None:
        pass


@implementer(IAccessLogSink)
class FileSink:
    """
    Appends to a file (created if missing, mode 0640), or writes to
    standard output (C{"-"}): one system call per batch.

    A file moved away (log rotation: C{logrotate}'s default renames it) is
    noticed at the next batch, which goes to a new file at C{path}, as
    Python's C{WatchedFileHandler} does; a file truncated in place
    (C{copytruncate}) needs nothing (appends go to its new end).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path == STDOUT:
            self._fd = 1
            self._owned = False
        else:
            self._fd = self._open()
            self._owned = True

    def _open(self) -> int:
        """
        Open C{path} to append, creating it mode 0640 if it is missing
        (whatever the umask: twistd's daemon sets 077) or keeping its mode.
        """
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.fchmod(fd, 0o640)
        return fd

    def _reopen_if_moved(self) -> None:
        """
        Open C{path} again if it no longer names the open file.

        @raise OSError: it cannot be opened (the batch is then written to
            the old file, and the next batch tries again).
        """
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        held = os.fstat(self._fd)
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            fd = self._open()
            os.close(self._fd)
            self._fd = fd

    def write(self, lines: Sized) -> None:
        if self._owned and self._fd < 0:
            # Closed: a late line (a request that ended after its log was
            # closed, as the process stops) is appended on its own.
            self._fd = self._open()
            try:
                self._write_all(lines)
            finally:
                self.close()
            return
        if self._owned:
            try:
                self._reopen_if_moved()
            except OSError as e:
                AccessLog.log.error("could not open the access log {path} again after it "
                                    "moved: {error}", path=self.path, error=str(e))
        self._write_all(lines)

    def _write_all(self, lines: Sized) -> None:
        data = (str(lines) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def make_sink(config: AccessLogConfig) -> IAccessLogSink:
    """
    The sink C{config.path} names (the process's own log when none).

    @raise OSError: the file cannot be opened.
    """
    if config.path is None:
        return LoggerSink()
    return FileSink(config.path)


class AccessLog(Generic[RecordT]):
    """
    A bounded buffer of access log records, written out in batches.

    A batch that cannot be written (a full disk, a file that refuses
    writes) is lost, and said so in the process's log: the first failure at
    once, then at most one line per L{failure_report_interval} seconds with
    the count lost since, and one line when a batch is written again.  (A
    failing log does not write an error per batch: that would be a line in
    the process's log for every C{buffer_lines} requests.)

    @ivar names: the field names, the first one the time.
    @ivar written: lines written out so far.
    @ivar lost: lines lost to failed writes so far.
    """

    #: Seconds between two error lines of a log whose writes keep failing.
    failure_report_interval = 60.0

    log = Logger()

    def __init__(self, names: Sequence[str], config: AccessLogConfig, clock: IReactorTime,
                 sink: Optional[IAccessLogSink] = None,
                 json_text: Optional[Callable[[List[RecordT]], str]] = None) -> None:
        """
        @param sink: where lines go (default: what C{config.path} names).
        @param json_text: the JSON lines of a batch of this log's records
            (L{json_lines}; a log written once per request formats its
            lines in a third of the time that way); they must hold the
            values L{format_json} shows.
        """
        self.names = tuple(names)
        self.clock = clock
        #: The text of a batch of records (its lines, without a last newline).
        self.text_of: Callable[[List[RecordT]], str]
        if config.format == "json" and json_text is not None:
            self.text_of = json_text
        else:
            self.text_of = joined(partial(FORMATTERS[config.format], self.names))
        self.buffer_lines = config.buffer_lines
        self.flush_interval = config.flush_interval
        self.errors_only = config.level == "errors"
        self.sink = sink if sink is not None else make_sink(config)
        self._records: List[RecordT] = []
        self._timer: Optional[IDelayedCall] = None
        self.written = 0
        self.lost = 0
        #: While writes fail: when the first failed, the lines lost since,
        #: when the last error line was written, the lines lost since that,
        #: and the last error.
        self._failing_since: Optional[float] = None
        self._lost_while_failing = 0
        self._reported_at = 0.0
        self._unreported = 0
        self._last_error = ""

    def add(self, record: RecordT) -> None:
        """
        Buffer one line's values (the first one the time, seconds since the
        epoch); write the buffer out if it is full.
        """
        records = self._records
        records.append(record)
        if len(records) >= self.buffer_lines:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(self.flush_interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """
        Write out what is buffered, now.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        records, self._records = self._records, []
        if not records:
            return
        try:
            self.sink.write(_Lines(records, self.text_of))
        except OSError as e:
            self._failed(len(records), str(e))
            return
        self.written += len(records)
        if self._failing_since is not None:
            self._recovered()

    def _where(self) -> str:
        """
        The log as its error lines name it: its file, if it has one.
        """
        path = getattr(self.sink, "path", None)
        if path is None:
            return "the access log"
        return "the access log on standard output" if path == STDOUT else f"the access log {path}"

    def _failed(self, count: int, error: str) -> None:
        """
        A batch of C{count} lines could not be written: count them lost, and
        say so at the first failure, or if the last error line is old.
        """
        self.lost += count
        self._lost_while_failing += count
        self._unreported += count
        self._last_error = error
        now = self.clock.seconds()
        if self._failing_since is None:
            self._failing_since = now
            self.log.error("could not write {count} line(s) to {where}: {error}; they are lost "
                           "(until a write succeeds, further losses are reported with the next "
                           "failure at least {interval:g} s later, and when the log closes)",
                           count=count, where=self._where(), error=error,
                           interval=self.failure_report_interval)
            self._reported(now)
        elif now - self._reported_at >= self.failure_report_interval:
            self._report_losses(now)

    def _report_losses(self, now: float) -> None:
        self.log.error("could not write {count} more line(s) to {where} since the last report: "
                       "{error}; they are lost", count=self._unreported, where=self._where(),
                       error=self._last_error)
        self._reported(now)

    def _reported(self, now: float) -> None:
        self._reported_at = now
        self._unreported = 0

    def _recovered(self) -> None:
        """
        A batch was written after failures: say how many lines were lost.
        """
        self.log.warn("{where} is written again; {count} line(s) were lost since {since}",
                      where=self._where(), count=self._lost_while_failing,
                      since=iso_timestamp(self._failing_since or 0.0))
        self._failing_since = None
        self._lost_while_failing = self._unreported = 0

    def close(self) -> None:
        """
        Write out what is buffered and release the sink.  A line added
        later (a request that ends after this, as the process stops: an
        aborted client connection is lost a reactor turn after the abort)
        is written out at once.
        """
        self.flush()
        if self._unreported:
            self._report_losses(self.clock.seconds())
        self.sink.close()
        self.buffer_lines = 1
