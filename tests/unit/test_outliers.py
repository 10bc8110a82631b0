"""
Tests for outlier ejection's policy (gateway/outliers.py): consecutive
failures, ejection times growing on repeats and forgiven over time, and
the share of a service's instances that may be ejected.  Pure policy: time
is passed in.
"""

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.gateway.outliers import (
    OutlierDetector,
    OutlierPolicy,
    ejection_allowed,
)


class OutlierDetectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.detector = OutlierDetector(OutlierPolicy(consecutive_failures=3,
                                                      base_ejection_time=10.0,
                                                      max_ejection_time=25.0))

    def fail(self, times: int, now: float = 0.0, instances: int = 2, ejected: int = 0) -> list:
        return [self.detector.failure("a", now, instances, ejected) for _ in range(times)]

    def test_consecutive_failures_eject(self) -> None:
        """
        The N-th failure in a row ejects for the base time; fewer do not.
        """
        self.assertEqual(self.fail(2), [None, None])
        self.assertEqual(self.detector.state("a").consecutive_failures, 2)
        self.assertEqual(self.fail(1, now=5.0), [15.0])
        state = self.detector.state("a")
        self.assertTrue(state.ejected)
        self.assertEqual((state.ejected_until, state.ejections), (15.0, 1))

    def test_success_resets(self) -> None:
        """
        A success between failures starts the count again.
        """
        self.fail(2)
        self.detector.success("a")
        self.assertEqual(self.fail(2), [None, None])

    def test_growing_then_capped(self) -> None:
        """
        A repeat ejection soon after the last lasts twice as long, a third
        is capped at C{max_ejection_time}.
        """
        self.fail(3, now=0.0)
        self.detector.restore("a", 10.0)
        self.assertEqual(self.fail(3, now=11.0)[-1], 31.0)
        self.detector.restore("a", 31.0)
        self.assertEqual(self.fail(3, now=32.0)[-1], 57.0)
        self.assertEqual(self.detector.state("a").ejections, 3)

    def test_forgiven_over_time(self) -> None:
        """
        Each base time spent in routing since the last ejection takes one
        off the multiplier.
        """
        self.fail(3, now=0.0)
        self.detector.restore("a", 10.0)
        self.assertEqual(self.fail(3, now=100.0)[-1], 110.0)

    def test_share_cap(self) -> None:
        """
        With one of two instances ejected, the other is not; the last
        instance of a service is never ejected.
        """
        self.assertEqual(self.fail(5, instances=2, ejected=1), [None] * 5)
        self.assertEqual(self.fail(5, instances=1, ejected=0), [None] * 5)
        self.assertEqual(self.detector.ejections_prevented, 8)

    def test_ejected_counts_nothing_more(self) -> None:
        """
        Failures during an ejection (requests in flight at the time) do not
        eject it again.
        """
        self.fail(3)
        self.assertEqual(self.fail(5), [None] * 5)
        self.assertEqual(self.detector.ejections_total, 1)

    def test_bounded(self) -> None:
        """
        At most C{max_tracked} instances are remembered; a success forgets
        one with no ejection behind it.
        """
        self.detector.max_tracked = 10
        for n in range(50):
            self.detector.failure(f"i{n}", 0.0, 2, 0)
        self.assertEqual(len(self.detector._records), 10)
        self.detector.success("i49")
        self.assertEqual(len(self.detector._records), 9)


class ShareTests(SynchronousTestCase):
    def test_allowed(self) -> None:
        """
        Rounded down: half of 2 is 1, of 3 is 1, of 4 is 2, of 1 is 0.
        """
        self.assertTrue(ejection_allowed(2, 0, 0.5))
        self.assertFalse(ejection_allowed(2, 1, 0.5))
        self.assertFalse(ejection_allowed(3, 1, 0.5))
        self.assertTrue(ejection_allowed(4, 1, 0.5))
        self.assertFalse(ejection_allowed(1, 0, 0.5))

    def test_policy_validated(self) -> None:
        """
        Nonsense settings are refused.
        """
        self.assertRaises(ValueError, OutlierPolicy, consecutive_failures=0)
        self.assertRaises(ValueError, OutlierPolicy, base_ejection_time=10, max_ejection_time=5)
        self.assertRaises(ValueError, OutlierPolicy, max_ejected_share=2)
