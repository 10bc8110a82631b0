"""
L{HelloRetry}, L{HelloBackoff} and L{HelloWatch}: an unanswered HELLO is sent again with a delay that doubles
up to a cap and returns to its initial value only after an accepted HELLO.
"""

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import HelloAck, encode_hello_ack
from stellarouter.common.interfaces import IFrameReceiver
from stellarouter.testing.fakes import FakeFrameSender, RecordingReceiver
from stellarouter.transports.hello import HelloBackoff, HelloRetry, HelloWatch, hello_accepted


def answer(hello: Frame, accepted: bool) -> Frame:
    return Frame(FrameType.HELLO, hello.correlation_id, encode_hello_ack(
        HelloAck(accepted, None if accepted else "no", "gw", "eu1")))


class HelloRetryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resent: List[Frame] = []
        self.retry = HelloRetry(self.clock, self.resent.append, initial_delay=1.0, max_delay=8.0)
        self.hello = Frame(FrameType.HELLO, new_correlation_id(), b"{}")

    def test_backoff_doubles_to_the_cap(self) -> None:
        """
        Resends come after 1, 2, 4, 8, 8 s while nothing answers.
        """
        self.retry.sent(self.hello)
        times = []
        for _ in range(5):
            before = len(self.resent)
            waited = 0.0
            while len(self.resent) == before:
                self.clock.advance(0.5)
                waited += 0.5
            times.append(waited)
        self.assertEqual(times, [1.0, 2.0, 4.0, 8.0, 8.0])
        self.assertEqual(self.resent, [self.hello] * 5)

    def test_accepted_answer_stops_and_resets(self) -> None:
        """
        An accepting answer stops the resends and brings the delay back to
        its initial value.
        """
        self.retry.sent(self.hello)
        self.clock.advance(1.0)
        self.clock.advance(2.0)
        self.assertTrue(self.retry.received(answer(self.hello, True)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.retry.delay, 1.0)
        self.assertFalse(self.retry.pending)

    def test_refusal_stops_without_reset(self) -> None:
        """
        A refusing answer stops the resends but keeps the grown delay.
        """
        self.retry.sent(self.hello)
        self.clock.advance(1.0)
        self.assertTrue(self.retry.received(answer(self.hello, False)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.retry.delay, 4.0)

    def test_other_frames_ignored(self) -> None:
        """
        A HELLO answer with another correlation id, or another frame type,
        does not answer the pending HELLO.
        """
        self.retry.sent(self.hello)
        other = Frame(FrameType.HELLO, new_correlation_id(), self.hello.payload)
        self.assertFalse(self.retry.received(answer(other, True)))
        self.assertFalse(self.retry.received(
            Frame(FrameType.HEARTBEAT, self.hello.correlation_id, b"{}")))
        self.assertTrue(self.retry.pending)
        self.retry.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hello_accepted(self) -> None:
        """
        Only a well-formed accepting HELLO answer counts as accepted.
        """
        self.assertTrue(hello_accepted(answer(self.hello, True)))
        self.assertFalse(hello_accepted(answer(self.hello, False)))
        self.assertFalse(hello_accepted(Frame(FrameType.HELLO, self.hello.correlation_id,
                                              b"not json")))


class HelloBackoffTests(SynchronousTestCase):
    def test_grows_until_accepted(self) -> None:
        """
        Waits double up to the cap whatever ClientService's own count says,
        and start again from the initial delay after an accepted HELLO.
        """
        backoff = HelloBackoff(0.5, 3.0, 2.0)
        self.assertEqual([backoff(1) for _ in range(5)], [0.5, 1.0, 2.0, 3.0, 3.0])
        backoff.accepted()
        self.assertEqual(backoff(1), 0.5)

    def test_watch_reports_acceptance_and_steps_aside(self) -> None:
        """
        L{HelloWatch} provides L{IFrameReceiver}, forwards everything, calls
        back on an accepting HELLO answer and then repoints its sender at the
        real receiver.
        """
        accepted: List[bool] = []
        inner = RecordingReceiver()
        watch = HelloWatch(inner, lambda: accepted.append(True))
        verifyObject(IFrameReceiver, watch)
        sender = FakeFrameSender()
        sender.receiver = watch  # type: ignore[attr-defined]
        watch.connectionOpened(sender)
        hello = Frame(FrameType.HELLO, new_correlation_id(), b"{}")
        watch.frameReceived(answer(hello, True))
        self.assertEqual(accepted, [True])
        self.assertIs(sender.receiver, inner)  # type: ignore[attr-defined]
        watch.connectionClosed("bye")
        self.assertEqual((len(inner.frames), inner.reasons), (1, ["bye"]))

    def test_refusal_not_reported(self) -> None:
        """
        A refusing HELLO answer is forwarded but not reported as accepted.
        """
        accepted: List[bool] = []
        watch = HelloWatch(RecordingReceiver(), lambda: accepted.append(True))
        watch.connectionOpened(FakeFrameSender())
        watch.frameReceived(answer(Frame(FrameType.HELLO, new_correlation_id(), b"{}"), False))
        self.assertEqual(accepted, [])
