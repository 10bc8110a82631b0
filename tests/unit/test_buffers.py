"""
Memory bounds under clients and peers that stop reading: the gateway's and
the microservice's budgets for streamed response bytes (issue 17 item 6),
and the cap on a frame connection's unsent bytes (issue 18 item 3).
"""

from typing import Any, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import CancelReason, FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameSender, ISendBacklog
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import (
    RESPONSE_CREDIT,
    STREAM_WINDOW,
    Hello,
    RequestMessage,
    ResponseMessage,
    decode_hello_ack,
    encode_credit,
    encode_hello,
    encode_request,
    stream_credit,
)
from stellarouter.gateway.buffers import MIN_GRANT, ResponseBudget
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.dispatch import ByteCount
from stellarouter.gateway.edge import HttpResponseSink
from stellarouter.gateway.errors import GatewayTimeout, NotFound
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.microservice import Microservice, StreamingResponse
from stellarouter.microservice.budget import ResponseStreamBudget
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.testing.fakes import FakeBacklogSender, RecordingSink
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.transports.stream import FrameStreamProtocol

CHUNK = 64 * 1024


def exporter(produced: List[int]) -> Microservice:
    """
    An app whose C{GET /export} streams 64 KiB chunks for ever (counting
    them in C{produced}).
    """
    app = Microservice("exporter", "1.0.0")

    @app.endpoint("GET", "/export")
    def export(ctx: Any) -> StreamingResponse:
        count = int(ctx.query_params.get("chunks", ["100000"])[0])

        async def body() -> Any:
            for i in range(count):
                produced.append(i)
                yield b"x" * CHUNK

        return StreamingResponse(200, [], body())

    return app


class ResponseBudgetTests(SynchronousTestCase):
    def test_take_within_the_limit(self) -> None:
        """
        C{take} gives what is available, nothing when less than a worthwhile
        grant is left, and C{force} counts past the limit.
        """
        budget = ResponseBudget(STREAM_WINDOW + MIN_GRANT // 2)
        self.assertEqual(budget.take(STREAM_WINDOW), STREAM_WINDOW)
        self.assertEqual(budget.take(STREAM_WINDOW), 0)
        self.assertEqual(budget.take(1000), 1000)
        budget.force(STREAM_WINDOW)
        self.assertEqual((budget.held, budget.available), (2 * STREAM_WINDOW + 1000, 0))

    def test_waiting_streams_served_in_order(self) -> None:
        """
        Bytes given back go to the streams that waited, first come first
        served, while a worthwhile grant is left.
        """
        budget = ResponseBudget(STREAM_WINDOW)
        budget.take(STREAM_WINDOW)
        told: List[str] = []

        class Stream:
            def __init__(self, name: str) -> None:
                self.name = name

            def budget_available(self) -> None:
                told.append(self.name)
                budget.take(MIN_GRANT)

        a, b, c = Stream("a"), Stream("b"), Stream("c")
        for stream in (a, b, c, a):
            budget.wait(stream)
        budget.forget(c)
        self.assertEqual(budget.waiting, 2)
        budget.release(MIN_GRANT + 1)
        self.assertEqual(told, ["a"])
        budget.release(STREAM_WINDOW - 1)
        self.assertEqual(told, ["a", "b"])
        self.assertEqual(budget.waiting, 0)


class _Request:
    """
    What L{HttpResponseSink} uses of a twisted.web request, recorded.
    """

    method = b"GET"
    clientproto = b"HTTP/1.1"
    code_message = b"OK"
    upload = None
    startedWriting = 0
    lost = False

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
        self.written = 0
        self.producer: Any = None

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def take_own_headers(self) -> None:
        return None

    def transport_paused(self) -> bool:
        return False

    def send_head(self, pieces: List[bytes], body_allowed: bool, complete: bool) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def finish(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.lost = True


class _Connection:
    """
    What L{HttpResponseSink} uses of a microservice connection: its budget
    and the grants, recorded.
    """

    def __init__(self, budget: ResponseBudget, response_credit: bool = True) -> None:
        self.response_budget = budget
        self.response_credit = response_credit
        self.granted: dict = {}

    def grant(self, cid: Any, amount: int) -> None:
        self.granted[cid] = self.granted.get(cid, 0) + amount


def streams(count: int, budget: ResponseBudget,
            response_credit: bool = True) -> Tuple[_Connection, List[HttpResponseSink]]:
    connection = _Connection(budget, response_credit)
    sinks = [HttpResponseSink(_Request(), f"r{i}", connection, i)  # type: ignore[arg-type]
             for i in range(count)]
    for sink in sinks:
        sink.responseStarted(ResponseMessage(200, [], b"", streaming=True))
    return connection, sinks


class GatewayBudgetTests(SynchronousTestCase):
    """
    The gateway's streams share its budget (L{HttpResponseSink}).
    """

    def test_first_windows_come_from_the_budget(self) -> None:
        """
        Ten streams with a budget of two windows: two get a window each, the
        others wait; nothing beyond the budget is granted.
        """
        budget = ResponseBudget(2 * STREAM_WINDOW)
        connection, sinks = streams(10, budget)
        self.assertEqual(connection.granted, {0: STREAM_WINDOW, 1: STREAM_WINDOW})
        self.assertEqual((budget.held, budget.waiting), (2 * STREAM_WINDOW, 8))

    def test_stalled_client_keeps_its_bytes_counted(self) -> None:
        """
        Bytes written to a client whose connection is paused stay counted
        and earn no more credit; when it resumes they are given back and
        the stream (and the waiting ones) get credit again.
        """
        budget = ResponseBudget(STREAM_WINDOW)
        connection, (first, second) = streams(2, budget)
        self.assertEqual(connection.granted, {0: STREAM_WINDOW})
        first.pauseProducing()
        first.bodyChunk(b"x" * STREAM_WINDOW)
        self.assertEqual((budget.held, connection.granted), (STREAM_WINDOW, {0: STREAM_WINDOW}))
        first.resumeProducing()
        self.assertEqual(budget.held, STREAM_WINDOW)
        self.assertEqual(connection.granted, {0: STREAM_WINDOW, 1: STREAM_WINDOW})
        self.assertEqual(budget.waiting, 1)

    def test_ended_and_gone_streams_give_back(self) -> None:
        """
        A finished stream, a failed one and one whose client left give back
        all they hold, and the waiting streams get it.
        """
        budget = ResponseBudget(STREAM_WINDOW)
        connection, sinks = streams(4, budget)
        sinks[0].responseFinished()
        self.assertEqual(connection.granted, {0: STREAM_WINDOW, 1: STREAM_WINDOW})
        sinks[1].gone()
        self.assertIn(2, connection.granted)
        sinks[2].failed(GatewayTimeout("slow"))
        self.flushLoggedErrors()
        self.assertEqual(connection.granted[3], STREAM_WINDOW)
        sinks[3].responseFinished()
        self.assertEqual((budget.held, budget.waiting), (0, 0))

    def test_microservice_without_the_feature(self) -> None:
        """
        A microservice that did not list C{response-credit} sends a window
        unasked: the budget counts it (past its limit) and grants nothing
        first.
        """
        budget = ResponseBudget(STREAM_WINDOW)
        connection, sinks = streams(2, budget, response_credit=False)
        self.assertEqual((connection.granted, budget.held), ({}, 2 * STREAM_WINDOW))
        for sink in sinks:
            sink.responseFinished()
        self.assertEqual(budget.held, 0)


class StalledReadersTests(SynchronousTestCase):
    """
    Clients that never read, in one process on a Clock.
    """

    def setUp(self) -> None:
        self.produced: List[int] = []
        self.deployment = InMemoryDeployment()
        self.service = self.deployment.add(exporter(self.produced))
        self.addCleanup(self.deployment.stop)

    def test_stalled_clients_hold_nothing_beyond_the_budget(self) -> None:
        """
        Ten clients that never read make the microservice produce no more
        than the gateway's budget (two windows), not a window each; when
        they leave, both sides' budgets are whole again.
        """
        budget = self.deployment.gateway.response_budget
        budget.limit = 2 * STREAM_WINDOW
        clients = []
        for _ in range(10):
            client = self.deployment.http()
            client.transport.producer.pauseProducing()
            client.send("GET", "/export")
            clients.append(client)
        self.deployment.pump(300)
        self.assertLessEqual(len(self.produced) * CHUNK, 2 * STREAM_WINDOW + 10 * CHUNK)
        self.assertLessEqual(budget.held, budget.limit)
        for client in clients:
            client.disconnect()
        self.deployment.pump(50)
        self.assertEqual((budget.held, budget.waiting), (0, 0))
        self.assertEqual(self.service.response_budget.held, 0)

    def test_readers_complete_within_a_small_budget(self) -> None:
        """
        Clients that read all complete their downloads through a budget of
        one window shared by all (nothing waits for ever).
        """
        self.deployment.gateway.response_budget.limit = STREAM_WINDOW
        self.service.response_budget.limit = STREAM_WINDOW
        clients = [self.deployment.http() for _ in range(4)]
        for client in clients:
            client.send("GET", "/export?chunks=48")
        self.deployment.pump(2000)
        for client in clients:
            response = client.response()
            assert response is not None
            self.assertEqual(len(response.body), 48 * CHUNK)
        self.assertEqual(self.deployment.gateway.response_budget.held, 0)
        self.assertEqual(self.service.response_budget.held, 0)


class MicroserviceBudgetTests(SynchronousTestCase):
    def test_budget_bounds_bytes_not_credited_back(self) -> None:
        """
        Ten streams each granted a window by the gateway send no more than
        the process's budget (two windows) until credit comes back; a
        cancelled stream gives back what it held.
        """
        sender = FakeBacklogSender()
        budget = ResponseStreamBudget(2 * STREAM_WINDOW)
        dispatcher = RequestDispatcher(exporter([]), sender, Clock(), response_budget=budget)
        cids = [new_correlation_id() for _ in range(10)]
        for cid in cids:
            dispatcher.request_received(Frame(FrameType.REQUEST, cid, encode_request(
                RequestMessage("GET", "/export", "/export"))))
        sent = sum(len(f.payload) - 1 for f in sender.take() if f.type is FrameType.RESPONSE_STREAM_DATA)
        self.assertEqual(sent, 2 * STREAM_WINDOW)
        self.assertEqual(budget.held, 2 * STREAM_WINDOW)
        dispatcher.stream_data_received(Frame(FrameType.REQUEST_STREAM_DATA, cids[0],
                                              encode_credit(CHUNK)))
        sent = sum(len(f.payload) - 1 for f in sender.take())
        self.assertEqual(sent, CHUNK)
        dispatcher.cancel(cids[1], CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(budget.held, 2 * STREAM_WINDOW)
        self.assertEqual(sum(len(f.payload) - 1 for f in sender.take()), STREAM_WINDOW)
        dispatcher.connection_lost()
        self.assertEqual(budget.held, 0)


class ResponseCreditTests(SynchronousTestCase):
    """
    The C{response-credit} feature, seen from each side.
    """

    def test_gateway_answers_the_feature(self) -> None:
        """
        A HELLO listing C{response-credit} is answered with it, and the
        connection then grants each stream's first window itself.
        """
        connection = GatewayConnection(Registrar(RoutingState(), "gw-1", "eu1"), Clock())
        sender = FakeBacklogSender()
        connection.connectionOpened(sender)
        desc = InstanceDescriptor("i-1", "exporter", "1.0.0", "eu1")
        connection.frameReceived(Frame(FrameType.HELLO, new_correlation_id(), encode_hello(
            Hello(desc, (EndpointDescriptor("exporter", "1.0.0", "GET", "/x"),),
                  features=(RESPONSE_CREDIT,)))))
        self.assertIn(RESPONSE_CREDIT, decode_hello_ack(sender.frames[0].payload).features)
        self.assertTrue(connection.response_credit)

    def test_stream_waits_for_the_first_grant(self) -> None:
        """
        With the feature agreed, a streamed response sends nothing before
        the gateway's first credit, then no more than it granted.
        """
        app = exporter([])
        sender = FakeBacklogSender()
        dispatcher = RequestDispatcher(app, sender, Clock())
        dispatcher.response_credit = True
        cid = new_correlation_id()
        dispatcher.request_received(Frame(FrameType.REQUEST, cid, encode_request(
            RequestMessage("GET", "/export", "/export"))))
        frames = sender.take()
        self.assertEqual([f.type for f in frames], [FrameType.RESPONSE])
        dispatcher.stream_data_received(Frame(FrameType.REQUEST_STREAM_DATA, cid,
                                              encode_credit(3 * CHUNK)))
        sent = sum(len(f.payload) - 1 for f in sender.take())
        self.assertEqual(sent, 3 * CHUNK)
        self.assertEqual(dispatcher.response_budget.held, 3 * CHUNK)
        dispatcher.cancel(cid, CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(dispatcher.response_budget.held, 0)

    def test_stream_waits_for_a_full_write_buffer(self) -> None:
        """
        A streamed response stops while its connection's write buffer is
        over its high-water mark, and goes on when it has drained.
        """
        sender = FakeBacklogSender()
        dispatcher = RequestDispatcher(exporter([]), sender, Clock(),
                                       response_budget=ResponseStreamBudget())
        sender.back_up(1)
        cid = new_correlation_id()
        dispatcher.request_received(Frame(FrameType.REQUEST, cid, encode_request(
            RequestMessage("GET", "/export", "/export", query="chunks=4"))))
        self.assertEqual([f.type for f in sender.take()], [FrameType.RESPONSE])
        sender.drain()
        self.assertEqual(sum(len(f.payload) - 1 for f in sender.take()), 4 * CHUNK)


class UnsentBytesTests(SynchronousTestCase):
    """
    A microservice connection whose peer does not read (issue 18 item 3).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.state = RoutingState()
        self.aggregate = ByteCount()
        self.connection = GatewayConnection(Registrar(self.state, "gw-1", "eu1"), self.clock,
                                            aggregate=self.aggregate,
                                            max_unsent_bytes=4 * STREAM_WINDOW,
                                            stalled_close_after=2.0)
        self.sender = FakeBacklogSender()
        self.connection.connectionOpened(self.sender)
        desc = InstanceDescriptor("i-1", "sink", "1.0.0", "eu1")
        self.connection.frameReceived(Frame(FrameType.HELLO, new_correlation_id(), encode_hello(
            Hello(desc, (EndpointDescriptor("sink", "1.0.0", "POST", "/sink",
                                            default_timeout=1.0),)))))
        self.sender.take()

    def post(self, size: int) -> RecordingSink:
        sink = RecordingSink()
        self.connection.send_request(
            RequestMessage("POST", "/sink", "/sink", body=b"x" * size), 1.0, sink)
        return sink

    def test_interfaces(self) -> None:
        """
        The stream protocol and the fake sender provide ISendBacklog.
        """
        verifyObject(ISendBacklog, self.sender)
        verifyObject(IFrameSender, self.sender)
        protocol = FrameStreamProtocol(self.connection, self.sender.transport_type)
        verifyObject(ISendBacklog, protocol)

    def test_timed_out_bodies_stay_counted_until_sent(self) -> None:
        """
        The body of a request that timed out while it still waits in the
        write buffer stays counted in the payload budgets until the buffer
        drains.
        """
        self.post(STREAM_WINDOW)
        self.sender.back_up(STREAM_WINDOW)
        self.clock.advance(1.0)
        assert self.connection.state is not None
        self.assertEqual(self.connection.state.in_flight, 0)
        self.assertEqual(self.aggregate.value, STREAM_WINDOW)
        self.assertEqual(self.connection.state.in_flight_bytes, STREAM_WINDOW)
        self.sender.drain()
        self.assertEqual((self.aggregate.value, self.connection.state.in_flight_bytes), (0, 0))

    def test_stalled_connection_unrouted_then_closed(self) -> None:
        """
        Past the cap the connection is stalled: one log line, no new
        requests routed to it at once, and closed (aborted: its buffer will
        never drain) when the grace period ends.
        """
        logged: List[Any] = []
        self.connection.log = Logger(observer=logged.append)  # type: ignore[misc]
        assert self.connection.backlog is not None
        self.connection.backlog.log = self.connection.log  # type: ignore[misc]
        self.state.resolve("POST", "/sink")
        self.sender.back_up(4 * STREAM_WINDOW + 1)
        self.assertRaises(NotFound, self.state.resolve, "POST", "/sink")
        self.sender.back_up(STREAM_WINDOW)
        stalls = [e for e in logged if "is stalled" in e["log_format"]]
        self.assertEqual(len(stalls), 1)
        self.clock.advance(2.0 - 1e-6)
        self.assertIsNone(self.sender.aborted)
        self.clock.advance(1e-6)
        self.assertIn("stalled", self.sender.aborted or "")
        self.connection.connectionClosed(self.sender.aborted or "")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stall_that_drains_in_time(self) -> None:
        """
        A connection whose buffer drains within the grace period is routed
        to again and stays open.
        """
        self.sender.back_up(4 * STREAM_WINDOW + 1)
        self.assertRaises(NotFound, self.state.resolve, "POST", "/sink")
        self.clock.advance(1.0)
        self.sender.drain()
        self.state.resolve("POST", "/sink")
        self.clock.advance(5.0)
        self.assertIsNone(self.sender.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GrantTests(SynchronousTestCase):
    def test_credit_frames(self) -> None:
        """
        (Helper check) credit frames the gateway sends decode as credit.
        """
        self.assertEqual(stream_credit(encode_credit(5)), 5)
