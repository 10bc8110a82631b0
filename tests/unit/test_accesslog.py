"""
Tests for the access log (issue 21, item 5): the JSON and logfmt line
formats, the bounded buffer and its flush timer, the gateway's line and the
microservice's line for the same request (same correlation id), and the
configuration keys.
"""

import dataclasses
import json
import os
from typing import Any, List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import LogPublisher, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.accesslog import (
    AccessLog,
    FileSink,
    IAccessLogSink,
    LoggerSink,
    format_json,
    format_logfmt,
    iso_timestamp,
)
from stellarouter.config import ConfigError
from stellarouter.config.gateway import parse_gateway_config
from stellarouter.config.microservice import parse_microservice_config
from stellarouter.config.observability import AccessLogConfig
from stellarouter.common.ids import new_correlation_id
from stellarouter.gateway.telemetry import (
    ACCESS_LOG_FIELDS,
    gateway_json_line,
    gateway_json_text,
)
from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.microservice.requestlog import (
    SDK_ACCESS_LOG_FIELDS,
    sdk_json_line,
    sdk_json_text,
)
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.telemetry import MemoryAccessLogSink

NAMES = ("time", "cid", "path", "status", "ms", "missing")
RECORD = (1_796_306_709.0421, "c1", "/a b/\"q\"\n\u00e9", 200, 1.23456, None)


class FormatTests(SynchronousTestCase):
    """
    One record as a JSON line and as a logfmt line.
    """

    def test_json(self) -> None:
        """
        A JSON line parses back to the record's values: the time in ISO 8601
        UTC with milliseconds, floats with three decimals, strings escaped
        (quotes, control characters, non-ASCII), None as null.
        """
        line = format_json(NAMES, RECORD)
        self.assertNotIn("\n", line)
        self.assertEqual(json.loads(line), {
            "time": "2026-12-03T14:05:09.042Z", "cid": "c1", "path": "/a b/\"q\"\n\u00e9",
            "status": 200, "ms": 1.235, "missing": None})

    def test_logfmt(self) -> None:
        """
        A logfmt line: bare values where they are safe, quoted (JSON string
        escapes) where they hold a space, a quote, C{=} or a control
        character; None is empty.
        """
        self.assertEqual(
            format_logfmt(NAMES, RECORD),
            'time=2026-12-03T14:05:09.042Z cid=c1 path="/a b/\\"q\\"\\n\\u00e9" status=200 '
            'ms=1.235 missing=')


    def test_time_each_millisecond(self) -> None:
        """
        The time's text depends on its millisecond alone, whatever time was
        shown before it (the last text is kept): within one millisecond,
        across seconds and days, and back in time.
        """
        second = 1_796_306_709  # 2026-12-03T14:05:09Z
        for seconds, text in [
                (second + 0.0421, "2026-12-03T14:05:09.042Z"),
                (second + 0.0429, "2026-12-03T14:05:09.042Z"),
                (second + 0.0435, "2026-12-03T14:05:09.043Z"),
                (second + 0.9995, "2026-12-03T14:05:09.999Z"),
                (second + 1.0005, "2026-12-03T14:05:10.000Z"),
                (second + 86_400.0425, "2026-12-04T14:05:09.042Z"),
                (second + 0.0425, "2026-12-03T14:05:09.042Z"),
                (second - 0.0005, "2026-12-03T14:05:08.999Z")]:
            self.assertEqual(iso_timestamp(seconds), text, seconds)


class BufferTests(SynchronousTestCase):
    """
    The buffer: written out when full, or C{flush_interval} after its first
    line, and on close.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = MemoryAccessLogSink()
        self.log = AccessLog(NAMES, AccessLogConfig(buffer_lines=3, flush_interval=0.5),
                             self.clock, self.sink)

    def test_sink_interface(self) -> None:
        """
        The sinks and the fake provide L{IAccessLogSink}.
        """
        self.assertTrue(verifyObject(IAccessLogSink, self.sink))
        self.assertTrue(verifyObject(IAccessLogSink, LoggerSink()))
        path = self.mktemp()
        sink = FileSink(path)
        self.addCleanup(sink.close)
        self.assertTrue(verifyObject(IAccessLogSink, sink))

    def test_flush_interval(self) -> None:
        """
        A line waits at most C{flush_interval}; the timer is armed once per
        batch.
        """
        self.log.add(RECORD)
        self.log.add(RECORD)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.5 - 1e-6)
        self.assertEqual(self.sink.batches, [])
        self.clock.advance(1e-6)
        self.assertEqual(len(self.sink.lines()), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_full_buffer(self) -> None:
        """
        The buffer never holds more than C{buffer_lines}: the line that
        fills it writes the batch out at once, and the timer goes.
        """
        for _ in range(3):
            self.log.add(RECORD)
        self.assertEqual(len(self.sink.batches), 1)
        self.assertEqual(len(self.sink.lines()), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close(self) -> None:
        """
        Closing writes out what is buffered and closes the sink.
        """
        self.log.add(RECORD)
        self.log.close()
        self.assertEqual(len(self.sink.lines()), 1)
        self.assertTrue(self.sink.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_line_after_close(self) -> None:
        """
        A line added after the log closed (a request that ended as the
        process stopped) is written out at once, to a file sink too: the
        file is opened for it and closed again.
        """
        path = self.mktemp()
        log = AccessLog(NAMES, AccessLogConfig(format="logfmt", path=path), self.clock)
        log.add(RECORD)
        log.close()
        log.add(RECORD)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], lines[1])
        self.assertEqual(log.written, 2)
        assert isinstance(log.sink, FileSink)
        self.assertEqual(log.sink._fd, -1)

    def test_file_sink(self) -> None:
        """
        A file sink appends the batch's lines, each ended by a newline.
        """
        path = self.mktemp()
        log = AccessLog(NAMES, AccessLogConfig(format="logfmt", path=path), self.clock)
        log.add(RECORD)
        log.add(RECORD)
        log.close()
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith("time=2026-12-03T14:05:09.042Z cid=c1 "))
        self.assertEqual(lines[2], "")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)

    def test_file_sink_rotation(self) -> None:
        """
        A file renamed away (logrotate's default) gets the batches already
        written; the next batch goes to a new file at the path.  A file
        removed is created again.  (Outside test F5: nothing reopened it.)
        """
        path = self.mktemp()
        log = AccessLog(NAMES, AccessLogConfig(path=path, buffer_lines=1), self.clock)
        self.addCleanup(log.close)
        log.add(RECORD)
        os.rename(path, path + ".1")
        log.add(RECORD)
        log.add(RECORD)
        with open(path + ".1", encoding="utf-8") as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        with open(path, encoding="utf-8") as f:
            self.assertEqual(len(f.read().splitlines()), 2)
        os.remove(path)
        log.add(RECORD)
        with open(path, encoding="utf-8") as f:
            self.assertEqual(len(f.read().splitlines()), 1)

    def test_file_mode_whatever_the_umask(self) -> None:
        """
        A file the log creates is mode 0640, at start-up and when it creates
        it again after a rotation, whatever the process's umask (outside
        test, session 12: under twistd's daemon umask, 077, files created
        after start-up were 0600, and a log shipper reading through the
        group lost them at the first rotation).  An existing file keeps its
        mode.
        """
        previous = os.umask(0o077)
        self.addCleanup(os.umask, previous)
        path = self.mktemp()
        log = AccessLog(NAMES, AccessLogConfig(path=path, buffer_lines=1), self.clock)
        self.addCleanup(log.close)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        os.rename(path, path + ".1")
        log.add(RECORD)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        os.chmod(path, 0o600)
        log.add(RECORD)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_logger_sink_events_stay_small(self) -> None:
        """
        Into the process's own log, a batch is one event of its lines, or,
        past L{LoggerSink.max_event_chars}, several cut at line ends (trial's
        worker protocol refused a 256-line event: C{amp.TooLong}).
        """
        from twisted.logger import formatEvent
        events: List[Any] = []
        publisher = LogPublisher(events.append)
        sink = LoggerSink()
        sink.log = Logger(namespace="stellarouter.access", observer=publisher)
        log = AccessLog(NAMES, AccessLogConfig(), self.clock, sink)
        log.add(RECORD)
        log.add(RECORD)
        log.flush()
        self.assertEqual(len(events), 1)
        self.assertEqual(formatEvent(events[0]).split("\n"),
                         [format_json(NAMES, RECORD)] * 2)
        del events[:]
        line = format_json(NAMES, RECORD)
        for _ in range(300):
            log.add(RECORD)
        log.flush()
        self.assertGreater(len(events), 1)
        texts = [formatEvent(event) for event in events]
        self.assertTrue(all(len(text) <= sink.max_event_chars for text in texts))
        self.assertEqual("\n".join(texts).split("\n"), [line] * 300)

    def test_logger_sink_long_line_whole(self) -> None:
        """
        A line longer than L{LoggerSink.max_event_chars} is one event of its
        own, whole; the lines around it keep their order.
        """
        from twisted.logger import formatEvent
        events: List[Any] = []
        sink = LoggerSink()
        sink.log = Logger(namespace="stellarouter.access", observer=events.append)
        sink.max_event_chars = 100
        long = "x" * 250
        sink.write(_Text(["a" * 60, "b" * 30, long, "c" * 10]))
        self.assertEqual([formatEvent(event) for event in events],
                         ["a" * 60 + "\n" + "b" * 30, long, "c" * 10])
        del events[:]
        sink.write(_Text([long]))
        self.assertEqual([formatEvent(event) for event in events], [long])


class WriteFailureTests(SynchronousTestCase):
    """
    A log whose writes fail (a full disk) says so in the process's log once,
    then at most once per C{failure_report_interval}, and once more when it
    writes again; it counts the lines lost.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: List[Any] = []
        self.patch(AccessLog, "log", Logger(observer=self.events.append))

    def messages(self) -> List[str]:
        from twisted.logger import formatEvent
        return [formatEvent(event) for event in self.events]

    def test_full_disk(self) -> None:
        """
        A file on a full disk (C{/dev/full}, ENOSPC): the first failed batch
        is one error line naming the file and the error; the next thousand
        batches within the interval add none; the first batch after it adds
        one line counting every line lost since.  Every line is counted.
        """
        log = AccessLog(NAMES, AccessLogConfig(path="/dev/full", buffer_lines=2), self.clock)
        self.addCleanup(log.close)
        log.add(RECORD)
        log.add(RECORD)
        self.assertEqual(len(self.events), 1)
        (message,) = self.messages()
        self.assertIn("could not write 2 line(s) to the access log /dev/full:", message)
        self.assertIn("No space left on device", message)
        self.assertIn("they are lost", message)
        for _ in range(1000):
            self.clock.advance(0.05)  # (50 s in all)
            log.add(RECORD)
            log.add(RECORD)
        self.assertEqual(len(self.events), 1)
        self.clock.advance(11)
        log.add(RECORD)
        log.add(RECORD)
        self.assertEqual(len(self.events), 2)
        self.assertIn("could not write 2002 more line(s) to the access log /dev/full since the "
                      "last report", self.messages()[1])
        self.assertEqual((log.lost, log.written), (2004, 0))

    def test_written_again(self) -> None:
        """
        Once a batch is written again, one warning counts the lines lost
        since the first failure and says when it was; a later failure is
        reported at once again.
        """
        sink = MemoryAccessLogSink()
        log = AccessLog(NAMES, AccessLogConfig(buffer_lines=1), self.clock, sink)
        self.clock.advance(1_796_306_709)
        sink.fail_with = OSError(28, "No space left on device")
        for _ in range(5):
            log.add(RECORD)
        sink.fail_with = None
        self.clock.advance(1)
        log.add(RECORD)
        self.assertEqual(len(self.messages()), 2)
        self.assertEqual(self.messages()[1], "the access log is written again; 5 line(s) were "
                                             "lost since 2026-12-03T14:05:09.000Z")
        self.assertEqual(self.events[1]["log_level"].name, "warn")
        self.assertEqual((log.lost, log.written, len(sink.lines())), (5, 1, 1))
        sink.fail_with = OSError(5, "Input/output error")
        log.add(RECORD)
        self.assertEqual(len(self.events), 3)
        self.assertIn("could not write 1 line(s) to the access log: [Errno 5] Input/output "
                      "error", self.messages()[2])

    def test_close_reports(self) -> None:
        """
        Lines lost since the last report are reported when the log closes.
        """
        sink = MemoryAccessLogSink()
        log = AccessLog(NAMES, AccessLogConfig(buffer_lines=1), self.clock, sink)
        sink.fail_with = OSError(28, "No space left on device")
        for _ in range(3):
            log.add(RECORD)
        self.assertEqual(len(self.events), 1)
        log.close()
        self.assertEqual(len(self.events), 2)
        self.assertIn("could not write 2 more line(s)", self.messages()[1])


class _Text:
    """
    Lines as a sink is given them: their count and their text.
    """

    def __init__(self, lines: List[str]) -> None:
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def make_app(held: List[Deferred]) -> Microservice:
    app = Microservice("logged", "2.0.0")

    @app.endpoint("POST", "/items/{id}")
    def item(ctx: Any) -> RawResponse:
        return RawResponse(201, [], b"created " + ctx.path_params["id"].encode())

    @app.endpoint("GET", "/boom")
    def boom(ctx: Any) -> RawResponse:
        raise RuntimeError("boom")

    @app.endpoint("GET", "/held")
    def hold(ctx: Any) -> Deferred:
        d: Deferred = Deferred()
        held.append(d)
        return d

    @app.endpoint("GET", "/stream")
    def stream(ctx: Any) -> StreamingResponse:
        async def body() -> Any:
            yield b"first"
            d: Deferred = Deferred()
            held.append(d)
            yield await d

        return StreamingResponse(200, [], body())

    @app.endpoint("GET", "/streamed")
    def streamed(ctx: Any) -> StreamingResponse:
        return StreamingResponse(200, [], [b"abc", b"de"])

    return app


class BothSidesTests(SynchronousTestCase):
    """
    The gateway's line and the microservice's line of one request.
    """

    def setUp(self) -> None:
        self.held: List[Deferred] = []
        self.deployment = InMemoryDeployment()
        self.micro = self.deployment.add(make_app(self.held), instance_id="logged-1")
        self.gateway_sink = MemoryAccessLogSink()
        self.micro_sink = MemoryAccessLogSink()
        gateway_log = self.deployment.gateway.telemetry.access_log  # type: ignore[union-attr]
        gateway_log.sink = self.gateway_sink
        self.micro.request_log.log.sink = self.micro_sink  # type: ignore[union-attr]
        self.addCleanup(self.deployment.stop)

    def flush(self) -> None:
        self.deployment.clock.advance(1)

    def test_same_correlation_id_on_both_sides(self) -> None:
        """
        One request: the gateway's line and the microservice's line carry
        the correlation id the client got in C{X-Correlation-Id}, with the
        route, the instance, the status, the sizes and the latencies.
        """
        response = self.deployment.request("POST", "/items/42?secret=x", b"hello")
        self.assertEqual(response.status, 201)
        cid = response.header("X-Correlation-Id")
        self.flush()
        [line] = self.gateway_sink.records()
        self.assertEqual(list(line), list(ACCESS_LOG_FIELDS))
        self.assertEqual({k: v for k, v in line.items()
                          if k not in ("time", "upstream_ms", "total_ms")}, {
            "cid": cid, "method": "POST", "path": "/items/42", "route": "/items/{id}",
            "service": "logged", "version": "2.0.0", "instance": "logged-1", "status": 201,
            "bytes_in": 5, "bytes_out": len(b"created 42"), "client": "127.0.0.1"})
        self.assertGreaterEqual(line["total_ms"], line["upstream_ms"])
        [micro_line] = self.micro_sink.records()
        self.assertEqual({k: v for k, v in micro_line.items() if k not in ("time",)}, {
            "cid": cid, "method": "POST", "path": "/items/42", "route": "/items/{id}",
            "status": 201, "bytes_out": len(b"created 42"), "duration_ms": 0.0,
            "outcome": "ok"})

    def test_client_correlation_id_replaced(self) -> None:
        """
        A client's own C{X-Correlation-Id} is not used: the answer and both
        log lines (the microservice's is its handler's C{ctx.correlation_id})
        carry the gateway's fresh id, and the client's value is in neither
        line.
        """
        theirs = "11111111-1111-4111-8111-111111111111"
        response = self.deployment.request("POST", "/items/7", b"",
                                           headers=[("X-Correlation-Id", theirs)])
        self.assertEqual(response.status, 201)
        ours = response.header("X-Correlation-Id")
        self.assertNotIn(ours, (None, theirs))
        self.flush()
        [line] = self.gateway_sink.records()
        [micro_line] = self.micro_sink.records()
        self.assertEqual((line["cid"], micro_line["cid"]), (ours, ours))
        self.assertNotIn(theirs, repr((line, micro_line)))

    def test_head_is_logged_as_head(self) -> None:
        """
        F4: a HEAD routed to a GET endpoint is logged with method C{HEAD}
        (as received), under the GET endpoint's route; the unmatched one too.
        """
        self.assertEqual(self.deployment.request("HEAD", "/boom").status, 500)
        self.deployment.request("HEAD", "/nowhere")
        self.flush()
        self.flushLoggedErrors(RuntimeError)
        routed, unmatched = self.gateway_sink.records()
        self.assertEqual((routed["method"], routed["route"], routed["service"]),
                         ("HEAD", "/boom", "logged"))
        self.assertEqual((unmatched["method"], unmatched["route"]), ("HEAD", "(unmatched)"))

    def test_no_query_string(self) -> None:
        """
        The query string (where clients put tokens) is never logged.
        """
        self.deployment.request("POST", "/items/1?access_token=Sekret", b"")
        self.flush()
        self.assertNotIn("Sekret", "".join(self.gateway_sink.batches + self.micro_sink.batches))

    def test_unmatched_and_errors(self) -> None:
        """
        A request no route matches is logged with route C{(unmatched)} and
        no service; a handler that raises is a 500 on both sides.
        """
        self.deployment.request("GET", "/nowhere")
        self.deployment.request("GET", "/boom")
        self.flush()
        self.flushLoggedErrors(RuntimeError)
        unmatched, boom = self.gateway_sink.records()
        self.assertEqual((unmatched["route"], unmatched["service"], unmatched["status"],
                          unmatched["upstream_ms"]), ("(unmatched)", "", 404, None))
        self.assertEqual((boom["route"], boom["status"]), ("/boom", 500))
        [micro_line] = self.micro_sink.records()
        self.assertEqual((micro_line["cid"], micro_line["status"], micro_line["outcome"]),
                         (boom["cid"], 500, "error"))

    def test_latencies_rounded_to_the_microsecond(self) -> None:
        """
        Latencies are milliseconds rounded to the microsecond on both sides.
        """
        client = self.deployment.http()
        client.send("GET", "/held")
        self.deployment.pump()
        self.deployment.clock.advance(0.0123456789)
        self.held[0].callback(RawResponse(200, [], b"late"))
        self.deployment.pump()
        self.flush()
        [line] = self.gateway_sink.records()
        [micro_line] = self.micro_sink.records()
        self.assertEqual((line["total_ms"], line["upstream_ms"], micro_line["duration_ms"]),
                         (12.346, 12.346, 12.346))

    def test_streamed_bytes_out(self) -> None:
        """
        A streamed answer's line on the microservice's side carries its
        body bytes, as the gateway's does (outside test, session 9: null).
        """
        response = self.deployment.request("GET", "/streamed")
        self.assertEqual(response.body, b"abcde")
        self.flush()
        [line] = self.gateway_sink.records()
        [micro_line] = self.micro_sink.records()
        self.assertEqual((line["bytes_out"], micro_line["bytes_out"], micro_line["outcome"]),
                         (5, 5, "ok"))

    def test_head_of_a_stream(self) -> None:
        """
        A HEAD served by a GET endpoint whose answer streams is a completed
        HEAD on both sides (its status, outcome C{ok}), and no cancellation
        is counted, although the gateway stops the stream upstream (outside
        test, session 10: C{cancelled:ClientDisconnected} and +1
        ClientDisconnected in the metric).
        """
        client = self.deployment.http()
        client.send("HEAD", "/stream")
        self.deployment.pump()
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertFalse(client.transport.disconnecting)
        self.flush()
        [line] = self.gateway_sink.records()
        [micro_line] = self.micro_sink.records()
        self.assertEqual((line["method"], line["status"]), ("HEAD", 200))
        self.assertEqual(micro_line["cid"], line["cid"])
        self.assertEqual((micro_line["status"], micro_line["outcome"]), (200, "ok"))
        self.assertEqual(self.deployment.gateway.figures.cancellations(), {})
        # The stream was stopped: the microservice has nothing in flight.
        [session] = self.micro.sessions
        assert session.dispatcher is not None
        self.assertEqual(session.dispatcher.in_flight, 0)

    def test_cut_short_by_the_upstream(self) -> None:
        """
        A streamed answer cut short because its microservice went away is
        logged with the failure's status (502), not as a client that left
        (499), and counted as a 5xx (outside test, session 9).
        """
        client = self.deployment.http()
        client.send("GET", "/stream")
        self.deployment.pump()
        self.assertIn(b"first", client.transport.value())
        [connection] = self.deployment.gateway.connections
        assert connection.sender is not None
        connection.sender.close("the microservice went away")
        self.deployment.pump()
        # The gateway closed the client's connection: deliver its loss (a
        # string transport does not).
        self.assertTrue(client.transport.disconnecting)
        client.channel.connectionLost(Failure(ConnectionDone()))
        self.deployment.pump()
        self.flush()
        [line] = self.gateway_sink.records()
        self.assertEqual((line["route"], line["status"]), ("/stream", 502))
        metrics = self.deployment.gateway.metrics
        self.assertEqual([key[4] for key in metrics.requests], ["5xx"])

    def test_client_gone(self) -> None:
        """
        A client that leaves before its answer: status 499 at the gateway,
        C{cancelled:client_disconnected} (the CANCEL's reason) at the
        microservice, same correlation id.
        """
        client = self.deployment.http()
        client.send("GET", "/held")
        self.deployment.pump()
        client.disconnect()
        self.deployment.pump()
        self.flush()
        [line] = self.gateway_sink.records()
        [micro_line] = self.micro_sink.records()
        self.assertEqual(line["status"], 499)
        self.assertEqual(micro_line["cid"], line["cid"])
        self.assertTrue(micro_line["outcome"].startswith("cancelled:"), micro_line)

    def test_errors_only(self) -> None:
        """
        C{access_log.level: errors}: the microservice logs only errors and
        cancellations.
        """
        self.micro.request_log.errors_only = True  # type: ignore[union-attr]
        self.deployment.request("POST", "/items/1", b"")
        self.deployment.request("GET", "/boom")
        self.flush()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual([r["status"] for r in self.micro_sink.records()], [500])
        self.assertEqual(len(self.gateway_sink.records()), 2)

    def test_turned_off_by_reload(self) -> None:
        """
        C{access_log.enabled: false} on reload: the buffer is written out,
        no more lines.
        """
        gateway = self.deployment.gateway
        self.deployment.request("POST", "/items/1", b"")
        gateway.apply_config(dataclasses.replace(gateway.config, access_log=AccessLogConfig(
            enabled=False)))
        self.assertEqual(len(self.gateway_sink.records()), 1)
        self.assertTrue(self.gateway_sink.closed)
        self.deployment.request("POST", "/items/2", b"")
        self.flush()
        self.assertEqual(len(self.gateway_sink.records()), 1)


GATEWAY = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:0"}]}


class ConfigTests(SynchronousTestCase):
    """
    The C{access_log} and C{metrics} keys.
    """

    def test_defaults(self) -> None:
        """
        Both are on by default; the access log goes to the process's log as
        JSON lines.
        """
        config = parse_gateway_config(GATEWAY)
        self.assertEqual(config.access_log, AccessLogConfig())
        self.assertTrue(config.access_log.enabled)
        self.assertIsNone(config.access_log.path)
        self.assertTrue(config.metrics.enabled)
        micro = parse_microservice_config({"region": "eu1", "routers": [
            {"transport": "tcp", "address": "tcp:host=127.0.0.1:port=1"}]})
        self.assertTrue(micro.access_log.enabled)

    def test_legacy_switch(self) -> None:
        """
        The former C{http.access_log} boolean still turns the access log on
        or off; setting it and C{access_log.enabled} is an error.
        """
        off = parse_gateway_config({**GATEWAY, "http": {"access_log": False}})
        self.assertFalse(off.access_log.enabled)
        with self.assertRaises(ConfigError) as caught:
            parse_gateway_config({**GATEWAY, "http": {"access_log": True},
                                  "access_log": {"enabled": True}})
        self.assertIn("http.access_log: is replaced by access_log.enabled", str(caught.exception))

    def test_invalid(self) -> None:
        """
        Bad values are named by their key path.
        """
        with self.assertRaises(ConfigError) as caught:
            parse_gateway_config({**GATEWAY, "access_log": {"format": "apache", "level": "x",
                                                            "buffer_lines": 0},
                                  "metrics": {"max_series": 0}})
        text = str(caught.exception)
        for expected in ("access_log.format: 'apache' is not one of json, logfmt",
                         "access_log.level: 'x' is not one of all, errors",
                         "access_log.buffer_lines: must be in [1, 65536]",
                         "metrics.max_series: must be in [1, 100000]"):
            self.assertIn(expected, text)


_text = st.text(max_size=12)
_ms = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_time = st.floats(min_value=0, max_value=4e9, allow_nan=False)


class SpelledOutLineTests(SynchronousTestCase):
    """
    The gateway's and the microservice's JSON lines, spelled out for their
    field types, give exactly the generic L{format_json}'s text.
    """

    @settings(max_examples=300, deadline=None)
    @given(_time, st.sampled_from(["GET", "POST", "BREW\u00e9"]), st.binary(max_size=12),
           _text, _text, _text, _text, st.integers(0, 999), st.integers(0, 2**40),
           st.integers(0, 2**40), st.none() | _ms, _ms, st.none() | _text)
    def test_gateway(self, when: float, method: str, path: bytes, route: str, service: str,
                     version: str, instance: str, status: int, bytes_in: int, bytes_out: int,
                     upstream: Optional[float], total: float, client: Optional[str]) -> None:
        record = (when, str(new_correlation_id()), method, path, route, service, version,
                  instance, status, bytes_in, bytes_out, upstream, total, client)
        self.assertEqual(gateway_json_line(record), format_json(ACCESS_LOG_FIELDS, record))

    @settings(max_examples=300, deadline=None)
    @given(_time, st.booleans(), _text, _text, _text, st.none() | st.integers(0, 999),
           st.none() | st.integers(0, 2**40), st.none() | _ms, _text)
    def test_microservice(self, when: float, as_text: bool, method: str, path: str, route: str,
                          status: Optional[int], size: Optional[int], duration: Optional[float],
                          outcome: str) -> None:
        """
        (The correlation id is the id, or its text when the handler's
        context has it.)
        """
        cid = new_correlation_id()
        record = (when, str(cid) if as_text else cid, method, path, route, status, size,
                  duration, outcome)
        self.assertEqual(sdk_json_line(record), format_json(SDK_ACCESS_LOG_FIELDS, record))


def _same_values(case: SynchronousTestCase, text: str, reference: List[str]) -> None:
    """
    C{text} (a batch's JSON lines) holds, line by line, the values of the
    C{reference} lines, with the same keys in the same order.
    """
    lines = text.split("\n")
    case.assertEqual(len(lines), len(reference))
    for line, expected in zip(lines, reference):
        case.assertEqual(list(json.loads(line).items()), list(json.loads(expected).items()))


#: Latencies as records carry them: milliseconds rounded to the microsecond.
_rounded_ms = st.integers(0, 10**9).map(lambda us: us / 1000)


class BatchEncodingTests(SynchronousTestCase):
    """
    The gateway's and the microservice's batches, encoded by msgspec in one
    call, hold the values of their lines formatted one by one.
    """

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(
        _time, st.sampled_from(["GET", "POST", "BREW\u00e9"]), st.binary(max_size=12),
        _text, _text, _text, _text, st.integers(0, 999), st.integers(0, 2**40),
        st.integers(0, 2**40), st.none() | _rounded_ms, _rounded_ms, st.none() | _text),
        min_size=1, max_size=4))
    def test_gateway(self, rows: List[Any]) -> None:
        records = [(row[0], str(new_correlation_id())) + row[1:] for row in rows]
        _same_values(self, gateway_json_text(records), [gateway_json_line(r) for r in records])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(
        _time, st.booleans(), _text, _text, _text, st.none() | st.integers(0, 999),
        st.none() | st.integers(0, 2**40), st.none() | _rounded_ms, _text), min_size=1,
        max_size=4))
    def test_microservice(self, rows: List[Any]) -> None:
        """
        (The correlation id is the id, or its text: shown as text either way.)
        """
        records = []
        for when, as_text, *rest in rows:
            cid = new_correlation_id()
            records.append((when, str(cid) if as_text else cid, *rest))
        _same_values(self, sdk_json_text(records), [sdk_json_line(r) for r in records])

    def test_exact_text(self) -> None:
        """
        Numbers as their shortest text, strings as UTF-8, the time to the
        millisecond.
        """
        cid = new_correlation_id()
        record = (1_796_306_709.0421, cid, "GET", "/caf\u00e9", "/{name}", 200, 4, 1.0, "ok")
        self.assertEqual(
            sdk_json_text([record]),
            f'{{"time":"2026-12-03T14:05:09.042Z","cid":"{cid}","method":"GET",'
            '"path":"/caf\u00e9","route":"/{name}","status":200,"bytes_out":4,'
            '"duration_ms":1.0,"outcome":"ok"}')

    def test_not_unicode(self) -> None:
        """
        A string msgspec refuses (a lone surrogate) does not lose the
        batch: it is formatted line by line instead.
        """
        cid = new_correlation_id()
        records = [(1_796_306_709.0421, cid, "GET", "/\udc80", "/{x}", 200, 0, 0.5, "ok"),
                   (1_796_306_709.0421, cid, "GET", "/b", "/{x}", 200, 0, 0.5, "ok")]
        self.assertEqual(sdk_json_text(records),
                         sdk_json_line(records[0]) + "\n" + sdk_json_line(records[1]))

    def test_used_by_default(self) -> None:
        """
        A JSON access log writes its batches with the log's own batch
        encoder; a logfmt one with the generic formatter, line by line.
        """
        clock = Clock()
        sink = MemoryAccessLogSink()
        log = AccessLog(NAMES, AccessLogConfig(), clock, sink, json_text=gateway_json_text)
        self.assertIs(log.text_of, gateway_json_text)
        log = AccessLog(NAMES, AccessLogConfig(format="logfmt"), clock, sink,
                        json_text=gateway_json_text)
        self.assertIsNot(log.text_of, gateway_json_text)
        self.assertEqual(log.text_of([RECORD, RECORD]),
                         format_logfmt(NAMES, RECORD) + "\n" + format_logfmt(NAMES, RECORD))
