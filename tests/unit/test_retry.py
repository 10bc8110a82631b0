"""
Tests for the retry policy (gateway/retry.py): which outcomes may be
retried, which endpoints count as idempotent for retries, and the retry
budget over a sliding window.  Pure policy: time is passed in.
"""

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.models import EndpointDescriptor
from stellarouter.gateway.retry import (
    AttemptOutcome,
    RetryBudget,
    may_retry,
    retry_idempotent,
)

NOT_STARTED = AttemptOutcome.NOT_STARTED
LOST = AttemptOutcome.LOST


def endpoint(method: str, idempotent: "bool | None" = None) -> EndpointDescriptor:
    return EndpointDescriptor("billing", "1.0.0", method, "/x", idempotent=idempotent)


class IdempotentTests(SynchronousTestCase):
    def test_safe_methods_by_default(self) -> None:
        """
        GET, HEAD and OPTIONS are retried after they may have started; POST,
        PUT, DELETE and PATCH are not, unless marked.
        """
        for method in ("GET", "HEAD", "OPTIONS"):
            self.assertTrue(retry_idempotent(endpoint(method)), method)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            self.assertFalse(retry_idempotent(endpoint(method)), method)

    def test_endpoint_marks(self) -> None:
        """
        An endpoint's own C{idempotent} decides over its method.
        """
        self.assertTrue(retry_idempotent(endpoint("POST", True)))
        self.assertFalse(retry_idempotent(endpoint("GET", False)))

    def test_gateway_override_wins(self) -> None:
        """
        The gateway's C{idempotent} override decides over the endpoint's.
        """
        self.assertTrue(retry_idempotent(endpoint("POST", False), True))
        self.assertFalse(retry_idempotent(endpoint("GET", True), False))


class MayRetryTests(SynchronousTestCase):
    def test_not_started_always(self) -> None:
        """
        A request that provably did not run is retried whatever its
        endpoint.
        """
        self.assertTrue(may_retry(NOT_STARTED, False, False, 1))

    def test_lost_only_when_idempotent(self) -> None:
        """
        A request whose connection was lost after it was written is
        retried only for an idempotent endpoint.
        """
        self.assertTrue(may_retry(LOST, True, False, 1))
        self.assertFalse(may_retry(LOST, False, False, 1))

    def test_never_after_timeout_or_other(self) -> None:
        """
        A timeout (the deadline is spent) or an unusable answer is never
        retried.
        """
        for outcome in (AttemptOutcome.TIMED_OUT, AttemptOutcome.OTHER):
            self.assertFalse(may_retry(outcome, True, False, 1))

    def test_once(self) -> None:
        """
        One retry at most: the second attempt is the last.
        """
        self.assertFalse(may_retry(NOT_STARTED, True, False, 2))
        self.assertTrue(may_retry(NOT_STARTED, True, False, 2, max_attempts=3))

    def test_never_a_streamed_body(self) -> None:
        """
        A request whose body was streamed to the instance is never retried.
        """
        self.assertFalse(may_retry(NOT_STARTED, True, True, 1))
        self.assertFalse(may_retry(LOST, True, True, 1))


class RetryBudgetTests(SynchronousTestCase):
    def test_minimum_without_traffic(self) -> None:
        """
        C{minimum} retries per window are allowed even without requests;
        the next is refused.
        """
        budget = RetryBudget(ratio=0.2, window=10.0, minimum=3)
        self.assertEqual([budget.spend(1.0) for _ in range(4)], [True, True, True, False])
        self.assertEqual((budget.granted, budget.refused), (3, 1))

    def test_ratio(self) -> None:
        """
        With traffic, retries may reach C{ratio} of the window's requests.
        """
        budget = RetryBudget(ratio=0.2, window=10.0, minimum=0)
        for _ in range(100):
            budget.request(5.0)
        granted = sum(budget.spend(5.0) for _ in range(30))
        self.assertEqual(granted, 20)

    def test_window_slides(self) -> None:
        """
        Retries leave the budget a window after they were spent: at
        C{window - step} they still count, at C{window} they do not.
        """
        budget = RetryBudget(ratio=0.0, window=10.0, minimum=1, buckets=10)
        self.assertTrue(budget.spend(0.5))
        self.assertFalse(budget.spend(9.99))
        self.assertTrue(budget.spend(10.0))

    def test_requests_age_out(self) -> None:
        """
        Requests older than the window no longer earn retries.
        """
        budget = RetryBudget(ratio=0.5, window=10.0, minimum=0)
        for _ in range(10):
            budget.request(0.0)
        self.assertTrue(budget.allows(9.9))
        self.assertFalse(budget.allows(10.0))

    def test_bad_settings(self) -> None:
        """
        A ratio outside [0, 1] or a window that is not positive is refused.
        """
        self.assertRaises(ValueError, RetryBudget, ratio=1.5)
        self.assertRaises(ValueError, RetryBudget, window=0)
