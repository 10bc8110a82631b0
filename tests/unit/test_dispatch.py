"""
Tests for the gateway's in-flight table: timeouts, the one cancel path and
late frames, on a Clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import CancelReason
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IResponseSink
from stellarouter.common.payloads import ResponseMessage
from stellarouter.gateway.dispatch import InFlightRequests
from stellarouter.gateway.errors import (
    GatewayTimeout,
    UpstreamLost,
    UpstreamProtocolError,
)
from stellarouter.testing.fakes import RecordingSink

EPSILON = 1e-6


class InFlightTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cancels: list = []
        self.finished: list = []
        self.heads: list = []
        self.table = InFlightRequests(
            self.clock,
            lambda cid, r, head_only: (self.heads if head_only else self.cancels).append((cid, r)),
            self.finished.append)
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def test_sink_interface(self) -> None:
        """
        The recording fake provides IResponseSink.
        """
        verifyObject(IResponseSink, RecordingSink())

    def test_response(self) -> None:
        """
        A response completes the request, cancels its timer and sends nothing.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 5.0)
        self.assertTrue(self.table.response(cid, ResponseMessage(200, [], b"ok")))
        self.assertEqual(sink.response.body, b"ok")
        self.assertEqual((len(self.table), self.cancels, len(self.finished)), (0, [], 1))

    def test_timeout_boundary(self) -> None:
        """
        Nothing happens before the timeout; at it, exactly one CANCEL(Timeout)
        is sent and the sink gets a 504 error.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 5.0)
        self.clock.advance(5.0 - EPSILON)
        self.assertEqual((self.cancels, sink.error), ([], None))
        self.clock.advance(EPSILON)
        self.assertEqual(self.cancels, [(cid, CancelReason.TIMEOUT)])
        self.assertIsInstance(sink.error, GatewayTimeout)
        self.assertEqual(sink.error.status, 504)
        self.assertEqual(self.table.cancels_sent, {"Timeout": 1})

    def test_late_response_after_timeout(self) -> None:
        """
        A response after the timeout is counted, dropped, and reaches nobody.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 1.0)
        self.clock.advance(1.0)
        self.assertFalse(self.table.response(cid, ResponseMessage(200)))
        self.assertFalse(self.table.stream_data(cid, b"x", True, False, lambda: None))
        self.assertIsNone(sink.response)
        self.assertEqual(self.table.late_frames, 2)

    def test_cancel_once(self) -> None:
        """
        Cancelling twice sends one CANCEL; cancelling an unknown id sends none.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 1.0)
        self.assertTrue(self.table.cancel(cid, CancelReason.CLIENT_DISCONNECTED))
        self.assertFalse(self.table.cancel(cid, CancelReason.CLIENT_DISCONNECTED))
        self.assertFalse(self.table.cancel(new_correlation_id(), CancelReason.TIMEOUT))
        self.assertEqual(self.cancels, [(cid, CancelReason.CLIENT_DISCONNECTED)])
        self.assertIsNone(sink.error)
        self.clock.advance(2.0)
        self.assertEqual(len(self.cancels), 1)

    def test_response_and_timeout_same_instant(self) -> None:
        """
        A response that arrives at the timeout instant, before the timer
        runs, wins: no CANCEL.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 1.0)
        self.clock.advance(1.0 - EPSILON)
        self.table.response(cid, ResponseMessage(204))
        self.clock.advance(EPSILON)
        self.assertEqual((self.cancels, sink.response.status), ([], 204))

    def test_streamed_response(self) -> None:
        """
        A streaming response delivers its chunks then finishes.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 1.0)
        self.table.response(cid, ResponseMessage(200, [], b"", streaming=True))
        self.clock.advance(0.5)
        self.table.stream_data(cid, b"ab", False, False, lambda: None)
        self.table.stream_data(cid, b"c", True, False, lambda: None)
        self.assertEqual((sink.chunks, sink.finished, self.cancels), ([b"ab", b"c"], True, []))
        self.assertFalse(self.table.response(cid, ResponseMessage(200)))

    def test_stalled_stream_times_out(self) -> None:
        """
        A response stream that stalls is cancelled when the timeout elapses,
        as a missing response would be.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 1.0)
        self.table.response(cid, ResponseMessage(200, [], b"", streaming=True))
        self.table.stream_data(cid, b"ab", False, False, lambda: None)
        self.clock.advance(1.0)
        self.assertEqual(self.cancels, [(cid, CancelReason.TIMEOUT)])
        self.assertIsInstance(sink.error, GatewayTimeout)
        self.assertFalse(sink.finished)

    def test_moving_stream_outlives_its_timeout(self) -> None:
        """
        A streamed response that keeps bringing bytes is not cut at the
        request timeout: it completes however long it lasts (issue 25).
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 2.0)
        self.table.response(cid, ResponseMessage(200, [], b"", streaming=True))
        for _ in range(5):
            self.clock.advance(1.0)
            self.table.stream_data(cid, b"tick", False, False, lambda: None)
        self.table.stream_data(cid, b"", True, False, lambda: None)
        self.assertEqual((self.cancels, sink.error, sink.finished), ([], None, True))
        self.assertEqual(len(self.table), 0)

    def test_idle_stream_times_out_after_its_last_bytes(self) -> None:
        """
        Once streaming, the timeout counts from the last bytes: nothing
        happens until then, and at it one CANCEL(Timeout) is sent.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 2.0)
        self.clock.advance(1.5)
        self.table.response(cid, ResponseMessage(200, [], b"", streaming=True))
        self.clock.advance(1.5)
        self.table.stream_data(cid, b"ab", False, False, lambda: None)
        self.clock.advance(2.0 - EPSILON)
        self.assertEqual((self.cancels, sink.error), ([], None))
        self.clock.advance(EPSILON)
        self.assertEqual(self.cancels, [(cid, CancelReason.TIMEOUT)])
        self.assertIsInstance(sink.error, GatewayTimeout)

    def test_failing_sink(self) -> None:
        """
        A sink that raises fails only its own request.
        """
        cid = new_correlation_id()

        class Broken(RecordingSink):
            def responseStarted(self, response: object) -> None:
                raise ValueError("cannot write that")

        sink = Broken()
        self.table.add(cid, sink, 1.0)
        self.table.response(cid, ResponseMessage(200))
        self.assertIsInstance(sink.error, UpstreamProtocolError)
        self.assertEqual(len(self.table), 0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_stream_before_response_is_late(self) -> None:
        """
        Stream data before the RESPONSE header is dropped and counted.
        """
        cid = new_correlation_id()
        self.table.add(cid, RecordingSink(), None)
        self.assertFalse(self.table.stream_data(cid, b"x", False, False, lambda: None))
        self.assertEqual(self.table.late_frames, 1)
        self.table.fail_all(UpstreamLost("gone"))

    def test_abort(self) -> None:
        """
        An aborted response stream fails the request with the given error.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, None)
        self.table.response(cid, ResponseMessage(200, streaming=True))
        self.table.stream_data(cid, b"", False, True, lambda: UpstreamProtocolError("aborted"))
        self.assertIsInstance(sink.error, UpstreamProtocolError)

    def test_fail_all_and_cancel_all(self) -> None:
        """
        Connection loss fails every request without CANCEL; shutdown cancels
        every request with CANCEL(Shutdown).
        """
        sinks = [RecordingSink() for _ in range(3)]
        for sink in sinks:
            self.table.add(new_correlation_id(), sink, 10.0)
        self.assertEqual(self.table.fail_all(UpstreamLost("gone")), 3)
        self.assertEqual(self.cancels, [])
        self.assertTrue(all(isinstance(s.error, UpstreamLost) for s in sinks))
        for sink in sinks:
            self.table.add(new_correlation_id(), sink, 10.0)
        self.assertEqual(self.table.cancel_all(CancelReason.SHUTDOWN, UpstreamLost("x")), 3)
        self.assertEqual([r for _, r in self.cancels], [CancelReason.SHUTDOWN] * 3)
        self.assertEqual(len(self.finished), 6)

    def test_timeouts_in_deadline_order(self) -> None:
        """
        Requests with different timeouts, sent in any order, each time out
        exactly at their own deadline, in deadline order (send order when
        equal); answered ones never do.
        """
        timeouts = [5.0, 1.0, 3.0, 1.0, 0.5, 3.0]
        sent = [(new_correlation_id(), RecordingSink(), t) for t in timeouts]
        for cid, sink, timeout in sent:
            self.table.add(cid, sink, timeout)
        answered = sent[2][0]  # one of the 3 s requests
        self.table.response(answered, ResponseMessage(200, [], b""))
        order = [i for _, i in sorted((t, i) for i, (_, _, t) in enumerate(sent) if i != 2)]
        for deadline in sorted({t for i, (_, _, t) in enumerate(sent) if i != 2}):
            self.clock.advance(deadline - self.clock.seconds() - EPSILON)
            due = [i for i in order if sent[i][2] < deadline]
            self.assertEqual(self.cancels, [(sent[i][0], CancelReason.TIMEOUT) for i in due])
            self.clock.advance(EPSILON)
            due = [i for i in order if sent[i][2] <= deadline]
            self.assertEqual(self.cancels, [(sent[i][0], CancelReason.TIMEOUT) for i in due])
            self.assertTrue(all(isinstance(sent[i][1].error, GatewayTimeout) for i in due))
        self.assertIsNone(sent[2][1].error)
        self.assertEqual(len(self.table), 0)

    def test_answered_requests_leave_no_timer_state(self) -> None:
        """
        Many requests answered while one stays in flight: the timeout heap
        keeps a bounded number of entries (answered ones are dropped), the
        one left still times out at its deadline, and an empty table holds
        no timer.
        """
        slow, slow_sink = new_correlation_id(), RecordingSink()
        self.table.add(slow, slow_sink, 30.0)
        for _ in range(1000):
            cid = new_correlation_id()
            self.table.add(cid, RecordingSink(), 30.0)
            self.table.response(cid, ResponseMessage(200, [], b""))
            # at most 2 x (2 in flight) + 64 dead entries
            self.assertLessEqual(len(self.table._deadlines), 2 * 2 + 64)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30.0)
        self.assertEqual(self.cancels, [(slow, CancelReason.TIMEOUT)])
        self.assertIsInstance(slow_sink.error, GatewayTimeout)
        self.assertEqual((len(self.table), self.table._deadlines), (0, []))

    def test_sink_sends_from_timeout(self) -> None:
        """
        A sink that sends a new request when told of a timeout (the heap
        changes while deadlines are being processed): the new request gets
        its own full timeout.
        """
        later = new_correlation_id()
        later_sink = RecordingSink()

        class Resend(RecordingSink):
            def failed(inner, error: object) -> None:  # noqa: N805
                super().failed(error)  # type: ignore[arg-type]
                self.table.add(later, later_sink, 2.0)

        first = new_correlation_id()
        self.table.add(first, Resend(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.cancels, [(first, CancelReason.TIMEOUT)])
        self.clock.advance(2.0 - EPSILON)
        self.assertIsNone(later_sink.error)
        self.clock.advance(EPSILON)
        self.assertIsInstance(later_sink.error, GatewayTimeout)

    def test_zero_timeout(self) -> None:
        """
        A timeout of 0 s times the request out on the clock's next turn, not
        at once.
        """
        cid, sink = new_correlation_id(), RecordingSink()
        self.table.add(cid, sink, 0.0)
        self.assertEqual(self.cancels, [])
        self.clock.advance(0)
        self.assertEqual(self.cancels, [(cid, CancelReason.TIMEOUT)])
        self.assertIsInstance(sink.error, GatewayTimeout)
