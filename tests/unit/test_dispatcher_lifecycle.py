"""
Tests for the dispatcher's one-object-per-request lifecycle: every outcome
of a handler ends in an answer, even a bug in the SDK's own completion code,
and a frame for a request in a state where it means nothing is a logged
no-op.
"""

from typing import Any, Dict, Iterator, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import (
    RequestMessage,
    decode_response,
    decode_stream_data,
    encode_credit,
    encode_request,
    encode_stream_data,
)
from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.microservice.inbound import InboundRequest, RequestState, WrongRequestState
from stellarouter.testing.fakes import FakeFrameSender


def request(template: str, method: str = "GET", body: bytes = b"",
            streaming: bool = False) -> Frame:
    return Frame(FrameType.REQUEST, new_correlation_id(), encode_request(RequestMessage(
        method, template, template, body=body, streaming=streaming)))


def data(frame: Frame, chunk: bytes, end: bool = False) -> Frame:
    return Frame(FrameType.REQUEST_STREAM_DATA, frame.correlation_id,
                 encode_stream_data(chunk, end=end))


class _InjectedBug(Exception):
    """
    A bug planted in the SDK's completion code by a test.
    """


def broken(*args: object, **kwargs: object) -> None:
    raise _InjectedBug("planted by the test")


class DispatcherLifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.app = Microservice("svc", "1.0.0")
        self.sender = FakeFrameSender()
        self.dispatcher = RequestDispatcher(self.app, self.sender, Clock())
        self.pending: List[Deferred[RawResponse]] = []
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

        @self.app.endpoint("GET", "/now")
        def now(ctx: Any) -> RawResponse:
            return RawResponse.text("now")

        @self.app.endpoint("GET", "/later")
        def later(ctx: Any) -> Deferred[RawResponse]:
            d: Deferred[RawResponse] = Deferred()
            self.pending.append(d)
            return d

        @self.app.endpoint("GET", "/rows")
        def rows(ctx: Any) -> StreamingResponse:
            return StreamingResponse(200, [], iter([b"a", b"b"]))

        @self.app.endpoint("POST", "/whole")
        def whole(ctx: Any) -> Deferred[RawResponse]:
            d: Deferred[RawResponse] = Deferred()
            self.pending.append(d)
            return d

    def answers(self) -> List[Frame]:
        return self.sender.take()

    def statuses(self, frames: List[Frame]) -> List[int]:
        return [decode_response(f.payload).status for f in frames
                if f.type is FrameType.RESPONSE]

    def logged(self, text: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]

    # -- a bug in our own completion code -------------------------------

    def test_bug_after_deferred_handler_answers_500(self) -> None:
        """
        A raise in the code that answers for a handler whose Deferred fired
        (today's C{_respond}) still ends in a RESPONSE 500, logged, and the
        request leaves the table.
        """
        self.dispatcher.request_received(request("/later"))
        self.assertEqual(self.dispatcher.in_flight, 1)
        self.patch(self.dispatcher, "_respond", broken)
        self.pending[0].callback(RawResponse.text("fine"))
        self.assertEqual(self.statuses(self.answers()), [500])
        self.assertEqual(self.dispatcher.in_flight, 0)
        self.assertEqual(len(self.flushLoggedErrors(_InjectedBug)), 1)
        self.assertEqual(self.dispatcher.failed, 1)

    def test_bug_after_synchronous_handler_answers_500(self) -> None:
        """
        The same bug after a handler that answered at once: a 500, nothing
        raised into the connection.
        """
        self.patch(self.dispatcher, "_respond", broken)
        self.dispatcher.request_received(request("/now"))
        self.assertEqual(self.statuses(self.answers()), [500])
        self.assertEqual(len(self.flushLoggedErrors(_InjectedBug)), 1)

    def test_bug_after_reassembled_body_answers_500(self) -> None:
        """
        A request whose body came as stream frames gets its 500 too.
        """
        frame = request("/whole", "POST", streaming=True)
        self.dispatcher.request_received(frame)
        self.dispatcher.stream_data_received(data(frame, b"body", end=True))
        self.answers()  # the upload credit
        self.patch(self.dispatcher, "_respond", broken)
        self.pending[0].callback(RawResponse.text("fine"))
        self.assertEqual(self.statuses(self.answers()), [500])
        self.assertEqual(self.dispatcher.in_flight, 0)
        self.assertEqual(len(self.flushLoggedErrors(_InjectedBug)), 1)

    def test_bug_ending_a_streamed_response_aborts_it(self) -> None:
        """
        When the bug strikes after the streamed RESPONSE header went out,
        the stream is aborted (a 500 can no longer be sent) and the request
        leaves the table; what it held of the response budget is released.
        """
        self.patch(self.dispatcher, "_stream_done", broken)
        frame = request("/rows")
        self.dispatcher.request_received(frame)
        frames = self.answers()
        self.assertEqual(frames[0].type, FrameType.RESPONSE)
        chunk, end, abort = decode_stream_data(frames[-1].payload)
        self.assertEqual((chunk, end, abort), (b"", False, True))
        self.assertEqual(self.dispatcher.in_flight, 0)
        self.assertEqual(self.dispatcher.response_budget.held, 0)
        self.assertEqual(len(self.flushLoggedErrors(_InjectedBug)), 1)

    def test_bug_while_answering_the_bug_drops_the_request(self) -> None:
        """
        If even the 500 cannot be sent, the request is dropped from the
        table (logged), not left in flight forever.
        """
        self.dispatcher.request_received(request("/later"))
        self.patch(self.dispatcher, "_respond", broken)
        self.patch(self.dispatcher.writer, "send", broken)
        self.pending[0].callback(RawResponse.text("fine"))
        self.assertEqual(self.dispatcher.in_flight, 0)
        self.assertEqual(len(self.flushLoggedErrors(_InjectedBug)), 2)
        self.assertTrue(self.logged("could not be answered"))

    # -- frames in the wrong state ---------------------------------------

    def test_stream_data_for_a_complete_body_is_dropped(self) -> None:
        """
        Stream data for a request whose handler runs with its whole body is
        logged and dropped: no frame, no error, the request unharmed.
        """
        frame = request("/later")
        self.dispatcher.request_received(frame)
        self.dispatcher.stream_data_received(data(frame, b"more"))
        self.assertEqual(self.answers(), [])
        self.assertTrue(self.logged("its body is complete"))
        self.pending[0].callback(RawResponse.text("fine"))
        self.assertEqual(self.statuses(self.answers()), [200])

    def test_credit_for_an_unstreamed_response_is_ignored(self) -> None:
        """
        Credit for a request that streams no response (its handler still
        runs) is logged and ignored.
        """
        frame = request("/later")
        self.dispatcher.request_received(frame)
        self.dispatcher.stream_data_received(Frame(
            FrameType.REQUEST_STREAM_DATA, frame.correlation_id, encode_credit(1000)))
        self.assertEqual(self.answers(), [])
        self.assertTrue(self.logged("is not streaming an answer"))
        self.assertEqual(self.dispatcher.response_budget.held, 0)

    def test_frames_after_the_answer_are_no_ops(self) -> None:
        """
        Stream data, credit and CANCEL for a request already answered find
        no request: no frame, no error, the CANCEL counted as ignored.
        """
        frame = request("/now")
        self.dispatcher.request_received(frame)
        self.assertEqual(self.statuses(self.answers()), [200])
        self.dispatcher.stream_data_received(data(frame, b"late", end=True))
        self.dispatcher.stream_data_received(Frame(
            FrameType.REQUEST_STREAM_DATA, frame.correlation_id, encode_credit(10)))
        self.dispatcher.cancel(frame.correlation_id, CancelReason.TIMEOUT)
        self.assertEqual(self.answers(), [])
        self.assertEqual(self.dispatcher.ignored_cancels, 1)

    def test_duplicate_request_while_in_flight_is_ignored(self) -> None:
        """
        A second REQUEST with the id of one in flight is logged and
        ignored; the first is answered once.
        """
        frame = request("/later")
        self.dispatcher.request_received(frame)
        self.dispatcher.request_received(frame)
        self.assertEqual(len(self.pending), 1)
        self.assertTrue(self.logged("duplicate REQUEST"))
        self.pending[0].callback(RawResponse.text("once"))
        self.assertEqual(self.statuses(self.answers()), [200])

    def test_result_after_cancel_is_discarded(self) -> None:
        """
        A handler that answers when cancelled (its Deferred's canceller
        gives a result) finds its request cancelled: the result is counted
        as late and discarded, nothing is sent.
        """
        self.app.endpoint("GET", "/answers-cancel")(
            lambda ctx: Deferred(lambda d: d.callback(RawResponse.text("late"))))
        frame = request("/answers-cancel")
        self.dispatcher.request_received(frame)
        self.dispatcher.cancel(frame.correlation_id, CancelReason.TIMEOUT)
        self.assertEqual(self.answers(), [])
        self.assertEqual((self.dispatcher.late_results, self.dispatcher.in_flight), (1, 0))
        self.assertTrue(self.logged("late result"))


    def test_finishing_twice_is_a_bug(self) -> None:
        """
        The dispatcher finishing a request that is finished already raises
        L{WrongRequestState} (which the terminal errback turns into a logged
        failure, never a second answer).
        """
        inbound = InboundRequest(new_correlation_id(), RequestMessage("GET", "/x", "/x"))
        self.dispatcher._finish(inbound, RequestState.CANCELLED)
        error = self.assertRaises(WrongRequestState, self.dispatcher._finish, inbound)
        self.assertIn("cancelled to answered", str(error))


class InboundRequestTests(SynchronousTestCase):
    def request(self, state: RequestState = RequestState.HANDLING) -> InboundRequest:
        return InboundRequest(new_correlation_id(), RequestMessage("GET", "/x", "/x"), state)

    def test_lifecycle(self) -> None:
        """
        A request moves from receiving its body to handling, streaming and
        answered.
        """
        inbound = self.request(RequestState.RECEIVING_BODY)
        for state in (RequestState.HANDLING, RequestState.STREAMING_RESPONSE,
                      RequestState.ANSWERED):
            self.assertFalse(inbound.finished)
            inbound.move_to(state)
        self.assertTrue(inbound.finished)

    def test_wrong_moves_raise(self) -> None:
        """
        A finished request goes nowhere, and no request goes back; the error
        names the request and both states.
        """
        answered = self.request()
        answered.move_to(RequestState.ANSWERED)
        for state in RequestState:
            self.assertRaises(WrongRequestState, answered.move_to, state)
        streaming = self.request()
        streaming.move_to(RequestState.STREAMING_RESPONSE)
        error = self.assertRaises(WrongRequestState, streaming.move_to, RequestState.HANDLING)
        self.assertIn("streaming response to handling", str(error))
        self.assertIs(streaming.state, RequestState.STREAMING_RESPONSE)

    def test_body_of_the_request_frame_starts_the_reassembly(self) -> None:
        """
        A streamed request's REQUEST frame may carry the body's first bytes.
        """
        inbound = InboundRequest.receiving_body(new_correlation_id(), RequestMessage(
            "POST", "/x", "/x", body=b"abc", streaming=True))
        self.assertIs(inbound.state, RequestState.RECEIVING_BODY)
        self.assertEqual((inbound.body_chunks, inbound.body_size), ([b"abc"], 3))
