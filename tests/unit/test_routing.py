"""
Tests for the minimal routing plugin.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import InstanceHealthStatus
from stellarouter.common.interfaces import IRoutingPlugin
from stellarouter.common.models import RoutingContext
from stellarouter.gateway.routing import LeastInFlightRouting

from .test_state import FakeConnection


def context(version: object = None) -> RoutingContext:
    return RoutingContext("GET", "/ping", {}, ("GET", "/ping"), "billing", {}, version, "eu1")


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.plugin = LeastInFlightRouting()

    def test_interface(self) -> None:
        """
        The plugin provides IRoutingPlugin.
        """
        verifyObject(IRoutingPlugin, self.plugin)

    def test_none(self) -> None:
        """
        No candidates, no decision.
        """
        self.assertIsNone(self.plugin.choose(context(), [], 0.0))

    def test_least_in_flight_then_round_robin(self) -> None:
        """
        The candidate with fewest requests in flight wins; ties rotate.
        """
        a, b, c = (FakeConnection("billing", "1.0.0", [("GET", "/ping")]) for _ in range(3))
        a.state.in_flight = 2
        chosen = [self.plugin.choose(context(), [a, b, c], 0.0).connection for _ in range(4)]
        self.assertNotIn(a, chosen)
        self.assertEqual(set(chosen), {b, c})
        self.assertNotEqual(chosen[0], chosen[1])

    def test_decision_carries_endpoint_timeout(self) -> None:
        """
        The decision names the chosen connection's endpoint and its timeout.
        """
        a = FakeConnection("billing", "1.0.0", [("GET", "/ping")])
        decision = self.plugin.choose(context(), [a], 0.0)
        self.assertEqual(decision.endpoint, a.state.endpoints[("GET", "/ping")])
        self.assertEqual(decision.effective_timeout, decision.endpoint.default_timeout)

    def test_versions(self) -> None:
        """
        Without a requested version the highest routable one is used; a
        requested version matches exactly.
        """
        old = FakeConnection("billing", "1.9.0", [("GET", "/ping")])
        new = FakeConnection("billing", "1.10.0", [("GET", "/ping")])
        self.assertIs(self.plugin.choose(context(), [old, new], 0.0).connection, new)
        self.assertIs(self.plugin.choose(context("1.9.0"), [old, new], 0.0).connection, old)
        self.assertIsNone(self.plugin.choose(context("1.9.1"), [old, new], 0.0))

    def test_health(self) -> None:
        """
        HEALTHY beats DEGRADED; DEGRADED serves only when nothing is HEALTHY;
        DRAINING and UNHEALTHY never serve.
        """
        a, b = (FakeConnection("billing", "1.0.0", [("GET", "/ping")]) for _ in range(2))
        a.state.status = InstanceHealthStatus.DEGRADED
        self.assertIs(self.plugin.choose(context(), [a, b], 0.0).connection, b)
        b.state.status = InstanceHealthStatus.DRAINING
        self.assertIs(self.plugin.choose(context(), [a, b], 0.0).connection, a)
        a.state.status = InstanceHealthStatus.UNHEALTHY
        self.assertIsNone(self.plugin.choose(context(), [a, b], 0.0))

    def test_version_before_health(self) -> None:
        """
        A requested version whose only instance is DEGRADED is served by it,
        even when another version has a HEALTHY instance.
        """
        old = FakeConnection("billing", "1.0.0", [("GET", "/ping")])
        new = FakeConnection("billing", "2.0.0", [("GET", "/ping")])
        old.state.status = InstanceHealthStatus.DEGRADED
        self.assertIs(self.plugin.choose(context("1.0.0"), [old, new], 0.0).connection, old)
