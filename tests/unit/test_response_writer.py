"""
Tests for the gateway's one response writer (issue 20): whole, streamed,
problem and refused answers all go out through
L{stellarouter.gateway.writer.write_response} / L{format_head}, and
L{HttpResponseSink}'s lifecycle (L{SinkState}) ignores, with a log line, an
event its state does not expect.
"""

from typing import Any, List, Optional, Tuple

from twisted.internet.interfaces import IPushProducer
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from stellarouter.common.interfaces import IResponseSink
from stellarouter.common.payloads import ResponseMessage
from stellarouter.gateway.errors import PayloadTooLarge, UpstreamLost
from stellarouter.gateway.response import HttpResponseSink, SinkState
from stellarouter.gateway.writer import format_head, refusal
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment


class _Request:
    """
    What L{HttpResponseSink} uses of a L{GatewayRequest}, recorded: every
    head it is handed (L{send_head}), every body write and the finish.
    """

    method = b"GET"
    clientproto = b"HTTP/1.1"
    code_message = b"OK"
    upload = None
    startedWriting = 0
    chunked = 0
    sentLength = 0
    finished = 0

    def upstream_answered(self) -> None:
        """
        The sink notes when the RESPONSE head came (for telemetry).
        """

    cut_short: Optional[int] = None

    def cut_short_by(self, status: int) -> None:
        """
        The sink notes the failure that cut a started answer short.
        """
        self.cut_short = status

    def __init__(self) -> None:
        self.channel = self
        self.responseHeaders = Headers()
        self.heads: List[bytes] = []
        self.writes: List[bytes] = []
        self.producer: Any = None
        self.lost = False

    def setResponseCode(self, code: int) -> None:
        self.code = code
        self.code_message = RESPONSES.get(code, b"")

    def take_own_headers(self) -> Optional[List[Tuple[bytes, bytes]]]:
        return [(b"X-Correlation-Id", b"c1")]

    def transport_paused(self) -> bool:
        return False

    def send_head(self, pieces: List[bytes], body_allowed: bool, complete: bool) -> None:
        self.heads.append(b"".join(pieces))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def finish(self) -> None:
        self.finished += 1

    def loseConnection(self) -> None:
        self.lost = True


def _sink() -> Tuple[HttpResponseSink, _Request]:
    request = _Request()
    return HttpResponseSink(request, "c1"), request  # type: ignore[arg-type]


WHOLE = ResponseMessage(200, [("x-a", "1")], b"hi")
STREAMED = ResponseMessage(200, [("x-a", "1")], b"", streaming=True)


class OneWriterTests(SynchronousTestCase):
    """
    Every kind of answer is formatted by the one writer.
    """

    def test_whole_answer_is_one_head_with_its_body(self) -> None:
        """
        A whole answer is handed to the request as one head carrying the
        body, and the request is finished.
        """
        sink, request = _sink()
        sink.responseStarted(WHOLE)
        self.assertEqual(request.heads, [
            b"HTTP/1.1 200 OK\r\nX-Correlation-Id: c1\r\nx-a: 1\r\nContent-Length: 2\r\n\r\nhi"])
        self.assertEqual((request.writes, request.finished, sink.state),
                         ([], 1, SinkState.FINISHED))

    def test_streamed_answer_head_is_chunked(self) -> None:
        """
        A streamed answer's head comes from the same writer, marked chunked;
        the body follows as writes.
        """
        sink, request = _sink()
        sink.responseStarted(STREAMED)
        sink.bodyChunk(b"abc")
        sink.responseFinished()
        self.assertEqual(request.heads, [
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-Correlation-Id: c1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"])
        self.assertEqual((request.chunked, request.writes, request.finished),
                         (1, [b"abc"], 1))

    def test_problem_answer_goes_through_the_writer(self) -> None:
        """
        A failure before the head is a problem+json head with its body from
        the same writer, the gateway's own headers first.
        """
        sink, request = _sink()
        sink.failed(UpstreamLost("gone"))
        [head] = request.heads
        self.assertTrue(head.startswith(
            b"HTTP/1.1 502 Bad Gateway\r\nX-Correlation-Id: c1\r\n"
            b"Content-Type: application/problem+json\r\nContent-Length: "), head)
        self.assertIn(b'"status":502', head)
        self.assertEqual(request.finished, 1)

    def test_refusal_is_formatted_by_the_writer(self) -> None:
        """
        The raw refusal a connection gets is L{format_head}'s head followed
        by the problem body (its bytes as before issue 20).
        """
        answer = refusal(PayloadTooLarge("too big"), "c1")
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = [line + b"\r\n" for line in head.split(b"\r\n")[1:]]
        self.assertEqual(b"".join(format_head(b"HTTP/1.1", 413, b"Content Too Large", lines))
                         + body, answer)
        self.assertEqual(lines, [b"Content-Type: application/problem+json\r\n",
                                 b"X-Correlation-Id: c1\r\n", b"Connection: close\r\n",
                                 b"Content-Length: %d\r\n" % len(body)])

    def test_sink_provides_its_interfaces(self) -> None:
        """
        The sink is an L{IResponseSink} and the client's L{IPushProducer}.
        """
        sink, _ = _sink()
        verifyObject(IResponseSink, sink)
        verifyObject(IPushProducer, sink)


class ProblemHeaderOrderTests(SynchronousTestCase):
    """
    Problem answers over HTTP list the gateway's own headers first (the
    change-log entry of docs/router/specs.md, issue 20).
    """

    def test_not_found_header_order(self) -> None:
        """
        A 404's head: Server, Date, X-Correlation-Id, Content-Type,
        Content-Length, in that order.
        """
        deployment = InMemoryDeployment()
        app = Microservice("order", "1.0.0")

        @app.endpoint("GET", "/x")
        def x(ctx: Any) -> RawResponse:
            return RawResponse.text("x")

        deployment.add(app)
        self.addCleanup(deployment.stop)
        client = deployment.http()
        client.channel.dataReceived(b"GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n")
        deployment.pump()
        head = client.transport.value().partition(b"\r\n\r\n")[0]
        names = [line.split(b":", 1)[0] for line in head.split(b"\r\n")[1:]]
        self.assertEqual(names, [b"Server", b"Date", b"X-Correlation-Id", b"Content-Type",
                                 b"Content-Length"])


class SinkLifecycleTests(SynchronousTestCase):
    """
    An event in a state that does not expect it is a logged no-op, never
    an error and never bytes on the wire.
    """

    def assertIgnored(self, logs: List[Any], event: str, state: str) -> None:
        messages = [(e["event"], e["state"]) for e in logs if "state" in e]
        self.assertEqual(messages, [(event, state)])

    def test_body_chunk_before_head(self) -> None:
        """
        A body chunk before any head writes nothing.
        """
        sink, request = _sink()
        with capturedLogs() as logs:
            sink.bodyChunk(b"early")
        self.assertEqual((request.heads, request.writes), ([], []))
        self.assertIgnored(logs, "a body chunk", "waiting")
        self.assertIs(sink.state, SinkState.WAITING)

    def test_end_before_head(self) -> None:
        """
        The end of a response before its head neither finishes the request
        nor writes anything.
        """
        sink, request = _sink()
        with capturedLogs() as logs:
            sink.responseFinished()
        self.assertEqual((request.heads, request.finished), ([], 0))
        self.assertIgnored(logs, "the end of the response", "waiting")

    def test_second_head(self) -> None:
        """
        A second response head after a whole answer is ignored.
        """
        sink, request = _sink()
        sink.responseStarted(WHOLE)
        with capturedLogs() as logs:
            sink.responseStarted(WHOLE)
        self.assertEqual((len(request.heads), request.finished), (1, 1))
        self.assertIgnored(logs, "a response head", "finished")

    def test_failure_after_finish(self) -> None:
        """
        A failure after the answer is finished neither writes a problem nor
        cuts the connection.
        """
        sink, request = _sink()
        sink.responseStarted(WHOLE)
        with capturedLogs() as logs:
            sink.failed(UpstreamLost("late"))
        self.assertEqual((len(request.heads), request.lost), (1, False))
        self.assertIgnored(logs, "a failure", "finished")

    def test_chunk_after_whole_answer(self) -> None:
        """
        A body chunk after a whole answer is ignored.
        """
        sink, request = _sink()
        sink.responseStarted(WHOLE)
        with capturedLogs() as logs:
            sink.bodyChunk(b"late")
        self.assertEqual(request.writes, [])
        self.assertIgnored(logs, "a body chunk", "finished")

    def test_failure_while_streaming_cuts(self) -> None:
        """
        A failure once a streamed head is out cuts the connection; what
        arrives afterwards is dropped without a log line.
        """
        sink, request = _sink()
        sink.responseStarted(STREAMED)
        sink.failed(UpstreamLost("gone"))
        self.assertTrue(request.lost)
        self.assertEqual(request.cut_short, 502)
        self.assertIs(sink.state, SinkState.DISCARDING)
        with capturedLogs() as logs:
            sink.bodyChunk(b"more")
            sink.responseFinished()
        self.assertEqual((request.writes, request.finished), ([], 0))
        self.assertEqual([e for e in logs if "state" in e], [])

    def test_events_after_client_left(self) -> None:
        """
        Once the client left, every outcome is dropped quietly (it is
        expected: the microservice may still be answering).
        """
        sink, request = _sink()
        sink.gone()
        with capturedLogs() as logs:
            sink.responseStarted(WHOLE)
            sink.bodyChunk(b"x")
            sink.responseFinished()
            sink.failed(UpstreamLost("gone"))
        self.assertEqual((request.heads, request.writes, request.finished), ([], [], 0))
        self.assertEqual([e for e in logs if "state" in e], [])

    def test_body_complete_only_when_answered(self) -> None:
        """
        L{HttpResponseSink.body_complete} finishes only a request answered
        while its body was arriving.
        """
        sink, request = _sink()
        self.assertFalse(sink.body_complete())
        self.assertEqual(request.finished, 0)
