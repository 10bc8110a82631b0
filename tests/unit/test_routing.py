"""
Tests for the default routing plugin: eligibility, versions, health, region
tiers, cost and round-robin.  Pure policy: no clock needed beyond C{now}.
"""

from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import InstanceHealthStatus, TransportType
from stellarouter.common.interfaces import IRoutingPlugin
from stellarouter.common.models import EndpointDescriptor, RoutingContext
from stellarouter.gateway.routing import RegionAwareRouting

from .test_state import FakeConnection

H = InstanceHealthStatus.HEALTHY
D = InstanceHealthStatus.DEGRADED
U = InstanceHealthStatus.UNHEALTHY
DR = InstanceHealthStatus.DRAINING


def context(version: Optional[str] = None) -> RoutingContext:
    return RoutingContext("GET", "/ping", {}, ("GET", "/ping"), "billing", {}, version, "eu1")


def instance(version: str = "1.0.0", region: str = "eu1", status: InstanceHealthStatus = H,
             in_flight: int = 0, ping: Optional[float] = None) -> Any:
    connection = FakeConnection("billing", version, [("GET", "/ping")])
    state = connection.state
    state.instance = type(state.instance)(state.instance.instance_id, "billing", version, region)
    state.status = status
    state.in_flight = in_flight
    state.average_ping_ms = ping
    return connection


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.plugin = RegionAwareRouting("eu1", ["eu2"])

    def choose(self, candidates: list, version: Optional[str] = None) -> Any:
        decision = self.plugin.choose(context(version), candidates, 0.0)
        return None if decision is None else decision.connection

    def test_interface(self) -> None:
        """
        The plugin provides IRoutingPlugin.
        """
        verifyObject(IRoutingPlugin, self.plugin)

    def test_none(self) -> None:
        """
        No candidates, no decision.
        """
        self.assertIsNone(self.choose([]))

    def test_decision_carries_endpoint_timeout(self) -> None:
        """
        The decision names the chosen connection's endpoint and its timeout.
        """
        a = instance()
        decision = self.plugin.choose(context(), [a], 0.0)
        self.assertEqual(decision.endpoint, a.state.endpoints[("GET", "/ping")])
        self.assertEqual(decision.effective_timeout, decision.endpoint.default_timeout)

    def test_region_tiers(self) -> None:
        """
        Own region first, then neighbours in order, then any region; every
        tier transition as instances come and go.
        """
        eu1a, eu1b, eu2, us1 = (instance(region=r) for r in ("eu1", "eu1", "eu2", "us1"))
        everyone = [us1, eu2, eu1a, eu1b]
        self.assertIn(self.choose(everyone), (eu1a, eu1b))
        self.assertEqual({self.choose(everyone) for _ in range(10)}, {eu1a, eu1b})
        eu1a.state.status = eu1b.state.status = U
        self.assertIs(self.choose(everyone), eu2)
        eu2.state.status = DR
        self.assertIs(self.choose(everyone), us1)
        eu2.state.status = H
        self.assertIs(self.choose(everyone), eu2)
        eu1b.state.status = H
        self.assertIs(self.choose(everyone), eu1b)

    def test_neighbour_order(self) -> None:
        """
        Neighbours are tried in the configured order.
        """
        plugin = RegionAwareRouting("eu1", ["eu3", "eu2"])
        eu2, eu3 = instance(region="eu2"), instance(region="eu3")
        self.assertIs(plugin.choose(context(), [eu2, eu3], 0.0).connection, eu3)
        self.assertEqual(plugin.tier_of("eu1"), 0)
        self.assertEqual(plugin.tier_of("eu2"), 2)
        self.assertEqual(plugin.tier_of("mars"), 3)

    def test_cost_within_tier(self) -> None:
        """
        Fewest in flight wins; pings count in whole 5 ms buckets; equal costs
        rotate round-robin.
        """
        busy = instance(in_flight=2)
        slow = instance(ping=12.0)           # cost 2: two ping buckets
        fast = instance(ping=0.4)            # cost 0
        near = instance(ping=4.9)            # cost 0: same bucket as fast
        chosen = [self.choose([busy, slow, fast, near]) for _ in range(4)]
        self.assertEqual(chosen, [fast, near, fast, near])
        fast.state.in_flight = near.state.in_flight = 3
        self.assertIn(self.choose([busy, slow, fast, near]), (busy, slow))

    def test_health(self) -> None:
        """
        HEALTHY beats DEGRADED; DEGRADED serves only when nothing is HEALTHY
        (even in a farther region); DRAINING and UNHEALTHY never serve.
        """
        degraded_here = instance(status=D)
        healthy_far = instance(region="us1")
        self.assertIs(self.choose([degraded_here, healthy_far]), healthy_far)
        healthy_far.state.status = DR
        self.assertIs(self.choose([degraded_here, healthy_far]), degraded_here)
        degraded_here.state.status = U
        self.assertIsNone(self.choose([degraded_here, healthy_far]))

    def test_version_table(self) -> None:
        """
        Versions match by exact equality: requested, else configured default,
        else the highest routable.
        """
        v100, v110, v1100 = instance("1.0.0"), instance("1.1.0"), instance("1.10.0")
        pool = [v100, v110, v1100]
        table = [
            (None, {}, v1100),                       # highest, numerically
            ("1.1.0", {}, v110),                     # exact
            ("1.0.0", {"billing": "1.1.0"}, v100),   # header beats default
            (None, {"billing": "1.1.0"}, v110),      # configured default
            ("1.1.1", {}, None),                     # never "compatible"
            (None, {"billing": "2.0.0"}, None),      # default not connected → none
        ]
        for requested, defaults, expected in table:
            plugin = RegionAwareRouting("eu1", default_versions=defaults)
            decision = plugin.choose(context(requested), pool, 0.0)
            self.assertIs(None if decision is None else decision.connection, expected,
                          (requested, defaults))

    def test_highest_among_routable(self) -> None:
        """
        Without a header the highest version counts only routable instances.
        """
        old, new = instance("1.0.0"), instance("2.0.0", status=U)
        self.assertIs(self.choose([old, new]), old)

    def test_version_before_health(self) -> None:
        """
        A requested version whose only instance is DEGRADED is served by it,
        even when another version has a HEALTHY instance.
        """
        old, new = instance("1.0.0", status=D), instance("2.0.0")
        self.assertIs(self.choose([old, new], "1.0.0"), old)

    def test_udp_carries_no_streaming(self) -> None:
        """
        A UDP connection is not eligible for a streaming endpoint.
        """
        udp = instance()
        udp.state.transport_type = TransportType.UDP
        udp.state.endpoints[("GET", "/ping")] = EndpointDescriptor(
            "billing", "1.0.0", "GET", "/ping", supports_streaming=True)
        tcp = instance(region="us1")
        self.assertIs(self.choose([udp, tcp]), tcp)


class SingleCandidateTests(SynchronousTestCase):
    """
    With one candidate, C{choose} takes a shortcut; it must decide exactly as
    the general path does.
    """

    def test_shortcut_agrees_with_general_path(self) -> None:
        """
        For every status, version asked (none, the instance's, another),
        configured default version, region and transport (UDP with a body that
        does not fit), the shortcut and the general path agree.
        """
        checked = 0
        for defaults in ({}, {"billing": "1.0.0"}, {"billing": "2.0.0"}):
            plugin = RegionAwareRouting("eu1", ["eu2"], default_versions=defaults)
            for status in (H, D, U, DR):
                for region in ("eu1", "eu2", "us1"):
                    for asked in (None, "1.0.0", "2.0.0"):
                        for transport, body in ((TransportType.TCP, 0),
                                                (TransportType.UDP, 0),
                                                (TransportType.UDP, 10_000_000)):
                            only = instance("1.0.0", region, status)
                            only.state.transport_type = transport
                            ctx = RoutingContext("GET", "/ping", {}, ("GET", "/ping"), "billing",
                                                 {}, asked, "eu1", body_size=body)
                            short = plugin._choose_only(ctx, only)
                            general = plugin._choose_among(ctx, [only])
                            self.assertEqual(short, general, (defaults, status, region, asked,
                                                              transport, body))
                            self.assertEqual(plugin.choose(ctx, [only], 0.0), general)
                            checked += 1 if general is not None else 0
        # The grid reaches both outcomes.
        self.assertGreater(checked, 0)
