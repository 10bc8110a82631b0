"""
C{static_instances}: expected instances are validated up front, reported in
C{/health} as connected, missing or mismatched, logged when that changes,
never routed by, and follow a reload.
"""

import dataclasses
import json
from typing import Any, List

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.config.errors import ConfigError
from stellarouter.config.gateway import StaticInstance, parse_gateway_config
from stellarouter.gateway.expected import ExpectedInstances
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment

BASE = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:5100"}]}


def billing(version: str = "1.0.0") -> Microservice:
    app = Microservice("billing", version)

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong")

    return app


class StaticInstancesConfigTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """
        Each entry names a service and an instance id, optionally the
        version and region it must announce; service names are lower-cased.
        """
        config = parse_gateway_config(dict(BASE, static_instances=[
            {"service": "Billing", "instance_id": "billing-1"},
            {"service": "billing", "instance_id": "billing-2", "version": "1.2.3",
             "region": "eu2"}]))
        self.assertEqual(config.static_instances, (
            StaticInstance("billing", "billing-1"),
            StaticInstance("billing", "billing-2", "1.2.3", "eu2")))
        self.assertEqual(parse_gateway_config(BASE).static_instances, ())

    def test_problems_located(self) -> None:
        """
        Every problem is reported at once, with its path.
        """
        with self.assertRaises(ConfigError) as caught:
            parse_gateway_config(dict(BASE, static_instances=[
                {"service": "billing"},
                {"service": "billing", "instance_id": "b", "version": "1.2"},
                {"service": "billing", "instance_id": "b", "zone": "x"},
                {"service": "Billing", "instance_id": "b"},
                "billing/b"]))
        text = str(caught.exception)
        for expected in ("static_instances[0].instance_id: is required",
                         "static_instances[1].version: '1.2' is not MAJOR.MINOR.PATCH",
                         "static_instances[2].zone: unknown key",
                         "static_instances[3]: billing/b is listed twice",
                         "static_instances[4]: must be a mapping"):
            self.assertIn(expected, text)


class ExpectedInstancesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[dict] = []
        self.patch(ExpectedInstances, "log", Logger(observer=self.events.append))
        self.deployment = InMemoryDeployment()
        self.addCleanup(self.deployment.stop)

    def expect(self, *statics: StaticInstance) -> None:
        self.deployment.gateway.apply_config(dataclasses.replace(
            self.deployment.config, static_instances=statics))

    def health(self) -> dict:
        response = self.deployment.admin_request("GET", "/health")
        self.assertEqual(response.status, 200)
        return json.loads(response.body)

    def sweep(self) -> List[str]:
        """
        Run one health sweep; the lines logged by it.
        """
        del self.events[:]
        self.deployment.clock.advance(self.deployment.config.health.sweep_interval)
        return [formatEvent(e) for e in self.events]

    def test_no_expected_instances(self) -> None:
        """
        Without C{static_instances}, C{/health} is as before.
        """
        body = self.health()
        self.assertEqual(body["status"], "ok")
        self.assertNotIn("expected_instances", body)

    def test_missing_then_connected_then_missing(self) -> None:
        """
        An expected instance that is not connected makes C{/health}
        C{degraded} (still 200: the gateway itself is fine) and is logged
        once; when it connects it is reported connected, and when it goes
        away it is logged missing again.
        """
        self.expect(StaticInstance("billing", "billing-1"))
        body = self.health()
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(body["expected_instances"], {"billing/billing-1": {"status": "missing"}})
        self.assertEqual(self.sweep(), ["expected instance billing/billing-1 is not connected"])
        self.assertEqual(self.sweep(), [])

        service = self.deployment.add(billing(), instance_id="billing-1")
        body = self.health()
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["expected_instances"],
                         {"billing/billing-1": {"status": "connected"}})
        self.assertEqual(self.sweep(), ["expected instance billing/billing-1 is connected"])

        service.stopService()
        self.deployment.pump()
        self.deployment.microservices.remove(service)
        self.assertEqual(self.health()["status"], "degraded")
        self.assertEqual(self.sweep(), ["expected instance billing/billing-1 is not connected"])

    def test_mismatched_version_or_region(self) -> None:
        """
        An instance with the expected id but another version or region does
        not count: reported mismatched with what it announced.
        """
        self.deployment.add(billing("1.1.0"), instance_id="billing-1", region="eu2")
        self.expect(StaticInstance("billing", "billing-1", version="1.0.0"))
        entry = self.health()["expected_instances"]["billing/billing-1"]
        self.assertEqual(entry["status"], "mismatched")
        self.assertIn("connected as version 1.1.0 in region eu2", entry["detail"])
        self.assertEqual(self.sweep(), [
            "expected instance billing/billing-1 is mismatched: connected as version 1.1.0 in "
            "region eu2; expected 1.0.0 in any region"])
        self.expect(StaticInstance("billing", "billing-1", version="1.1.0", region="eu2"))
        self.assertEqual(self.health()["status"], "ok")

    def test_never_routed_by(self) -> None:
        """
        An expected but missing instance adds no route (invariant 5): its
        service's paths stay unknown until an instance connects.
        """
        self.expect(StaticInstance("billing", "billing-1"))
        self.assertEqual(self.deployment.request("GET", "/ping").status, 404)
        self.deployment.add(billing(), instance_id="billing-other")
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)
        self.assertEqual(self.health()["status"], "degraded")

    def test_reload_keeps_what_was_logged(self) -> None:
        """
        A reload that keeps an instance listed does not log it again; one
        that drops the list clears C{/health}.
        """
        self.expect(StaticInstance("billing", "billing-1"))
        self.assertEqual(len(self.sweep()), 1)
        self.expect(StaticInstance("billing", "billing-1"), StaticInstance("billing", "b-2"))
        self.assertEqual(self.sweep(), ["expected instance billing/b-2 is not connected"])
        self.expect()
        self.assertNotIn("expected_instances", self.health())
        self.assertEqual(self.health()["status"], "ok")


class GatewayStreamingOverrideConfigTests(SynchronousTestCase):
    def test_only_off(self) -> None:
        """
        The gateway may turn streaming off for an endpoint, never on.
        """
        def config(value: Any) -> Any:
            return parse_gateway_config(dict(BASE, services=[{"name": "billing", "endpoints": [
                {"method": "POST", "path": "/x", "supports_streaming": value}]}]))

        self.assertTrue(config(False).services[0].endpoints[0].buffered)
        with self.assertRaises(ConfigError) as caught:
            config(True)
        self.assertIn("services[0].endpoints[0].supports_streaming: the gateway can only turn "
                      "streaming off", str(caught.exception))
