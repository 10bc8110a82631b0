"""
Issue 21 items 1 and 3: the admin listener's configuration, its JSON API
(services, instances, routes, configuration, drain, metrics seam), who may
use it, and the public C{/health} reduced to the status by default.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Tuple

import jwt
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import InstanceHealthStatus
from stellarouter.common.models import ClaimRequirement
from stellarouter.config.admin import (
    AdminConfig,
    is_loopback,
    listens_on_loopback_only,
)
from stellarouter.config.errors import ConfigError
from stellarouter.config.gateway import AuthConfig, GatewayConfig, HttpConfig, NodeConfig
from stellarouter.config.gateway import parse_gateway_config
from stellarouter.gateway.admin import IMetricsExposition
from stellarouter.gateway.admin_guard import AdminGuard
from stellarouter.gateway.admin_views import (
    ClaimView,
    InstanceView,
    RouteView,
    ServiceView,
    StatusView,
    VersionCount,
)
from stellarouter.gateway.service import GatewayService
from stellarouter.lifecycle import StartupError
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.admin import FakeMetricsExposition
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import HttpResponse, InMemoryHttpClient

BASE = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:5100"}]}
SECRET = "a-secret-of-at-least-32-bytes-0123456789"


def billing(version: str = "1.0.0") -> Microservice:
    app = Microservice("billing", version)

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong " + version)

    @app.endpoint("POST", "/invoices/{id}/pay", timeout=7.0, max_request_bytes=4096,
                  claims=[ClaimRequirement("scope", "billing:write")])
    def pay(ctx: Any) -> RawResponse:
        return RawResponse.text("paid")

    @app.endpoint("GET", "/export", streaming=True)
    def export(ctx: Any) -> RawResponse:
        return RawResponse.text("rows")

    return app


def token(claims: Dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(dict(claims, exp=10 ** 10), secret, algorithm="HS256")


class AdminConfigTests(SynchronousTestCase):
    """
    The C{admin} section and C{http.health_detail}, validated up front.
    """

    def parse(self, **sections: Any) -> GatewayConfig:
        return parse_gateway_config(dict(BASE, **sections))

    def problems(self, **sections: Any) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.parse(**sections)
        return str(caught.exception)

    def test_defaults(self) -> None:
        """
        The admin listener is on, on loopback port 9901, without token; the
        public /health shows the status only.
        """
        config = self.parse()
        self.assertEqual(config.admin, AdminConfig(True, "tcp:9901:interface=127.0.0.1", (),
                                                   False))
        self.assertEqual(config.http.health_detail, "status")

    def test_require_claims(self) -> None:
        """
        C{require_claims} maps a claim to a value, a list (any of) or null
        (present); it needs a key in C{auth}.
        """
        config = self.parse(auth={"hs256_secret": SECRET}, admin={
            "listen": "tcp6:0:interface=\\:\\:1",
            "require_claims": {"scope": "stellarouter:admin", "role": ["ops", "sre"],
                               "sub": None}})
        self.assertEqual(config.admin.require_claims, (
            ClaimRequirement("scope", "stellarouter:admin"),
            ClaimRequirement("role", ("ops", "sre")), ClaimRequirement("sub", None)))
        self.assertIn("admin.require_claims: needs auth.hs256_secret or auth.jwks_file",
                      self.problems(admin={"require_claims": {"scope": "x"}}))
        self.assertIn("admin.require_claims.scope: must be a string",
                      self.problems(auth={"hs256_secret": SECRET},
                                    admin={"require_claims": {"scope": 3}}))

    def test_loopback_only_by_default(self) -> None:
        """
        A listen address other hosts can reach is refused unless
        C{allow_remote}; a disabled listener is not checked.
        """
        for listen in ("tcp:9901", "tcp:9901:interface=0.0.0.0", "tcp:9901:interface=10.1.2.3"):
            self.assertIn("admin.listen: ", self.problems(admin={"listen": listen}))
        self.assertEqual(self.parse(auth={"hs256_secret": SECRET},
                                    admin={"listen": "tcp:9901", "allow_remote": True,
                                           "require_claims": {"scope": "stellarouter:admin"}})
                         .admin.allow_remote, True)
        # (Outside test F9: an unauthenticated admin API on the network.)
        self.assertIn("admin.allow_remote: true needs admin.require_claims",
                      self.problems(admin={"listen": "tcp:9901:interface=0.0.0.0",
                                           "allow_remote": True}))
        self.assertEqual(self.parse(admin={"listen": "tcp:9901", "enabled": False})
                         .admin.enabled, False)
        self.assertIn("admin.listen: ", self.problems(admin={"listen": "nonsense:1"}))
        self.assertIn("admin.bogus: unknown key", self.problems(admin={"bogus": 1}))

    def test_health_detail(self) -> None:
        """
        C{http.health_detail} is C{status} or C{full}.
        """
        self.assertEqual(self.parse(http={"health_detail": "full"}).http.health_detail, "full")
        self.assertIn("http.health_detail: must be one of status, full",
                      self.problems(http={"health_detail": "everything"}))

    def test_loopback_rules(self) -> None:
        """
        Which hosts and endpoint strings count as loopback-only.
        """
        for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost", "::ffff:127.0.0.1"):
            self.assertTrue(is_loopback(host), host)
        for host in ("10.0.0.1", "0.0.0.0", "::", "example.com", ""):
            self.assertFalse(is_loopback(host), host)
        for description in ("tcp:9901:interface=127.0.0.1", "tcp6:9901:interface=\\:\\:1",
                            "unix:/run/stella-admin.sock"):
            self.assertTrue(listens_on_loopback_only(description), description)
        for description in ("tcp:9901", "tcp:9901:interface=0.0.0.0", "tcp6:9901"):
            self.assertFalse(listens_on_loopback_only(description), description)


class AdminTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment(auth=AuthConfig(hs256_secret=SECRET))
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        """
        Stopping leaves no timer behind (the admin site runs on the clock).
        """
        self.deployment.stop()
        self.assertEqual(self.deployment.clock.getDelayedCalls(), [])

    def get(self, path: str, headers: Any = ()) -> Tuple[int, Any]:
        response = self.deployment.admin_request("GET", path, headers)
        return response.status, json.loads(response.body)

    def configure(self, **changes: Any) -> None:
        config = self.deployment.gateway.config
        self.deployment.gateway.apply_config(dataclasses.replace(config, **changes))


class PublicHealthTests(AdminTestCase):
    """
    Item 1: the public /health shows the status only unless
    C{http.health_detail} is C{full}; the admin /health always shows all.
    """

    def test_status_only_by_default(self) -> None:
        """
        By default the public /health names no service, version or instance.
        """
        self.deployment.add(billing(), instance_id="billing-1")
        response = self.deployment.request("GET", "/health")
        self.assertEqual((response.status, json.loads(response.body)), (200, {"status": "ok"}))
        status, report = self.get("/health")
        self.assertEqual(report["services"],
                         {"billing": {"instances": 1, "versions": ["1.0.0"]}})

    def test_full_detail(self) -> None:
        """
        C{http.health_detail: full} (applied live) shows the whole report.
        """
        self.deployment.add(billing(), instance_id="billing-1")
        self.configure(http=dataclasses.replace(self.deployment.gateway.config.http,
                                                health_detail="full"))
        body = json.loads(self.deployment.request("GET", "/health").body)
        self.assertEqual(body["services"], {"billing": {"instances": 1, "versions": ["1.0.0"]}})


class AdminApiTests(AdminTestCase):
    """
    Item 3: services, instances, routes, configuration.
    """

    def setUp(self) -> None:
        super().setUp()
        self.deployment.add(billing("1.0.0"), instance_id="billing-1")
        self.deployment.add(billing("1.1.0"), instance_id="billing-2", region="us1")

    def test_services(self) -> None:
        """
        Each service with its versions and instance counts.
        """
        status, body = self.get("/services")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"services": [{
            "name": "billing", "instances": 2, "routable": 2, "draining": 0, "in_flight": 0,
            "versions": [{"version": "1.0.0", "instances": 1},
                         {"version": "1.1.0", "instances": 1}],
            "default_version": None}]})

    def test_ejected_instance(self) -> None:
        """
        An instance ejected as an outlier (issue 24) says so in the instance
        view, until when, and how often; C{/metrics} counts it.
        """
        gateway = self.deployment.gateway
        state = gateway.routing_state
        connection = next(c for c in state.connections()
                          if c.state.instance.instance_id == "billing-1")
        now = self.deployment.clock.seconds()
        until = None
        for _ in range(5):
            until = state.outliers.failure(connection.state.connection_id, now, 2, 0)
        assert until is not None
        state.eject(connection)
        rows = {row["instance_id"]: row for row in self.get("/instances")[1]["instances"]}
        self.assertEqual({k: rows["billing-1"][k] for k in ("ejected", "ejections")},
                         {"ejected": True, "ejections": 1})
        self.assertIsNotNone(rows["billing-1"]["ejected_until"])
        self.assertEqual({k: rows["billing-2"][k] for k in ("ejected", "ejections")},
                         {"ejected": False, "ejections": 0})
        body = self.deployment.admin_request("GET", "/metrics").body.decode()
        self.assertIn("stellarouter_instances_ejected 1.0", body)
        self.assertIn('stellarouter_ejections_total{result="ejected"} 1.0', body)
        self.assertIn('stellarouter_retries_total{outcome="retried"} 0.0', body)

    def test_instances(self) -> None:
        """
        Each instance with service, version, region, transport, peer,
        health, ping average, in-flight count, last heartbeat, connection
        time and whether it drains; C{?service=} filters.
        """
        clock = self.deployment.clock
        clock.advance(3)
        status, body = self.get("/instances")
        self.assertEqual(status, 200)
        first = body["instances"][0]
        self.assertEqual(
            {k: first[k] for k in ("instance_id", "service", "version", "region", "transport",
                                   "health", "in_flight", "draining", "connected_since",
                                   "connected_for_s", "peer_identity", "endpoints")},
            {"instance_id": "billing-1", "service": "billing", "version": "1.0.0",
             "region": "eu1", "transport": "inmemory", "health": "healthy", "in_flight": 0,
             "draining": False, "connected_since": "1970-01-01T00:00:00.000+00:00",
             "connected_for_s": 3.0, "peer_identity": [], "endpoints": 3})
        self.assertEqual(set(first), {
            "instance_id", "service", "version", "region", "connection_id", "transport",
            "peer", "peer_identity", "health", "ping_ewma_ms", "in_flight", "last_heartbeat",
            "last_heartbeat_age_s", "connected_since", "connected_for_s", "draining",
            "drained_by_operator", "endpoints", "ejected", "ejected_until", "ejections",
            "consecutive_failures"})
        self.assertEqual([i["instance_id"] for i in body["instances"]],
                         ["billing-1", "billing-2"])
        self.assertEqual(self.get("/instances?service=ledger")[1], {"instances": []})
        # Service names are lower case: the filter reads the query so too, as
        # the CLI's --service does (outside test, session 12: BILLING found none).
        self.assertEqual([i["instance_id"] for i in self.get(
            "/instances?service=BILLING")[1]["instances"]], ["billing-1", "billing-2"])

    def test_ping_average_shown(self) -> None:
        """
        Once a ping has been echoed, its average is shown in milliseconds.
        """
        self.deployment.clock.advance(self.deployment.config.health.ping_interval)
        self.deployment.pump()
        body = self.get("/instances")[1]
        self.assertEqual([i["ping_ewma_ms"] for i in body["instances"]], [0.0, 0.0])

    def test_routes(self) -> None:
        """
        Each route with method, template, service, versions, claims,
        timeout, streaming and limits, as the gateway enforces it
        (overrides applied, the tighter request limit).
        """
        status, body = self.get("/routes")
        self.assertEqual(status, 200)
        by_key = {(r["method"], r["template"]): r for r in body["routes"]}
        self.assertEqual([(r["method"], r["template"]) for r in body["routes"]],
                         [("GET", "/export"), ("POST", "/invoices/{id}/pay"), ("GET", "/ping")])
        pay = by_key[("POST", "/invoices/{id}/pay")]
        self.assertEqual(pay, {
            "method": "POST", "template": "/invoices/{id}/pay", "service": "billing",
            "versions": ["1.0.0", "1.1.0"], "instances": 2,
            "claims": [{"type": "scope", "value": "billing:write",
                        "text": "scope=billing:write"}],
            "timeout_s": 7.0, "streaming": False, "idempotent": None,
            "limits": {"max_request_bytes": 4096}})
        self.assertTrue(by_key[("GET", "/export")]["streaming"])
        self.assertEqual(by_key[("GET", "/ping")]["limits"],
                         {"max_request_bytes": 16 * 1024 * 1024})

    def test_config_redacted(self) -> None:
        """
        The configuration in force, with the HS256 secret and AMQP passwords
        redacted; no admin answer shows either (item 6, admin output).
        """
        listener = dataclasses.replace(
            self.deployment.gateway.config.transports[0],
            listen="amqp:host=127.0.0.1:user=guest:password=hunter2-hunter2")
        self.deployment.gateway.config = dataclasses.replace(
            self.deployment.gateway.config, transports=(listener,))
        self.deployment.gateway.admin.configure(self.deployment.gateway.config)
        for path in ("/", "/status", "/health", "/services", "/instances", "/routes",
                     "/config", "/metrics", "/nope"):
            body = self.deployment.admin_request("GET", path).body
            self.assertNotIn(SECRET.encode(), body, path)
            self.assertNotIn(b"hunter2", body, path)
        response = self.deployment.admin_request("GET", "/config")
        config = json.loads(response.body)["config"]
        self.assertEqual(config["auth.hs256_secret"], "***")
        self.assertEqual(config["transports[0].listen"],
                         "amqp:host=127.0.0.1:user=guest:password=***")
        self.assertEqual(config["admin.listen"], "tcp:9901:interface=127.0.0.1")
        self.assertEqual(config["node.region"], "eu1")

    def test_status(self) -> None:
        """
        The gateway at a glance.
        """
        status, body = self.get("/status")
        self.assertEqual(status, 200)
        self.assertEqual({k: body[k] for k in ("status", "node_id", "region", "services",
                                               "instances", "instances_by_health", "routes",
                                               "in_flight", "metrics")},
                         {"status": "ok", "node_id": "gw-test", "region": "eu1",
                          "services": 1, "instances": 2, "instances_by_health": {"healthy": 2},
                          "routes": 3, "in_flight": 0, "metrics": True})

    def test_views_name_every_field(self) -> None:
        """
        The JSON views' TypedDicts name exactly the fields the API returns
        (they are the documented shape, not a guess).
        """
        def keys(view: Any) -> set:
            return set(view.__required_keys__) | set(view.__optional_keys__)

        [service] = self.get("/services")[1]["services"]
        self.assertEqual(set(service), keys(ServiceView))
        self.assertEqual(set(service["versions"][0]), keys(VersionCount))
        instance = self.get("/instances")[1]["instances"][0]
        self.assertEqual(set(instance), keys(InstanceView))
        route = self.get("/routes")[1]["routes"][1]
        self.assertEqual(set(route), keys(RouteView))
        self.assertEqual(set(route["claims"][0]), keys(ClaimView))
        status = self.get("/status")[1]
        self.assertEqual(set(status), keys(StatusView) - {"expected_instances"})

    def test_unknown_resource(self) -> None:
        """
        An unknown path is a problem+json 404, a wrong method 405.
        """
        response = self.deployment.admin_request("GET", "/nope")
        self.assertEqual((response.status, response.header("Content-Type")),
                         (404, "application/problem+json"))
        response = self.deployment.admin_request("DELETE", "/instances")
        self.assertEqual((response.status, response.header("Allow")), (405, "GET, HEAD"))


class DrainTests(AdminTestCase):
    """
    Item 3: POST /instances/ID/drain stops routing to the instance and tells
    it to drain.
    """

    def setUp(self) -> None:
        super().setUp()
        self.one = self.deployment.add(billing(), instance_id="billing-1")
        self.two = self.deployment.add(billing(), instance_id="billing-2")

    def drain(self, name: str) -> HttpResponse:
        return self.deployment.admin_request("POST", f"/instances/{name}/drain")

    def connection(self, instance_id: str) -> Any:
        return next(c for c in self.deployment.gateway.connections
                    if c.state.instance.instance_id == instance_id)

    def test_drain_stops_routing_and_tells_the_instance(self) -> None:
        """
        After the drain no request goes to the instance, it reports
        DRAINING itself (acknowledged), and the admin API shows it.
        """
        response = self.drain("billing-1")
        self.assertEqual(response.status, 202)
        self.assertEqual([i["instance_id"] for i in json.loads(response.body)["drained"]],
                         ["billing-1"])
        self.deployment.pump()
        self.assertEqual(self.connection("billing-1").state.status,
                         InstanceHealthStatus.DRAINING)
        self.assertEqual(self.one.sessions[0].status, InstanceHealthStatus.DRAINING)
        self.assertTrue(self.one.sessions[0]._drain_acked.called)
        for _ in range(6):
            self.assertEqual(self.deployment.request("GET", "/ping").status, 200)
        served = {i["instance_id"]: i for i in self.get("/instances")[1]["instances"]}
        self.assertEqual((served["billing-1"]["health"], served["billing-1"]["draining"],
                          served["billing-1"]["drained_by_operator"]),
                         ("draining", True, True))
        self.assertEqual(self.get("/services")[1]["services"][0]["routable"], 1)

    def test_no_request_reaches_a_drained_instance(self) -> None:
        """
        Every request after the drain is served by the other instance.
        """
        self.drain("billing-1")
        self.deployment.pump()
        self.counts: Dict[str, int] = {}
        seen: List[str] = []
        for _ in range(8):
            response = self.deployment.request("GET", "/ping")
            self.assertEqual(response.status, 200)
            seen.append(self._served_by())
        self.assertEqual(set(seen), {"billing-2"})

    def _served_by(self) -> str:
        served = [s.instance.instance_id for s in (self.one, self.two)
                  if s.sessions and s.sessions[0].dispatcher is not None
                  and s.sessions[0].dispatcher.served > self.counts.get(
                      s.instance.instance_id, 0)]
        for s in (self.one, self.two):
            if s.sessions and s.sessions[0].dispatcher is not None:
                self.counts[s.instance.instance_id] = s.sessions[0].dispatcher.served
        self.assertEqual(len(served), 1)
        return served[0]

    def test_the_drain_stands(self) -> None:
        """
        A microservice that still reports HEALTHY afterwards (an SDK that
        ignores the request) stays DRAINING: the operator's drain wins.
        """
        self.drain("billing-1")
        self.deployment.pump()
        session = self.one.sessions[0]
        session.status = InstanceHealthStatus.HEALTHY
        session.send_heartbeat()
        self.deployment.pump()
        self.assertEqual(self.connection("billing-1").state.status,
                         InstanceHealthStatus.DRAINING)

    def test_unknown_instance(self) -> None:
        """
        Draining an id no instance or connection has is 404; by connection
        id works too.
        """
        self.assertEqual(self.drain("billing-9").status, 404)
        # The name in the detail is escaped and bounded (outside test F1's
        # follow-up: it was repr'd at any length).
        response = self.drain("%1B%5B2J" + "x" * 5000)
        detail = json.loads(response.body)["detail"]
        self.assertEqual(response.status, 404)
        self.assertNotIn("\x1b", detail)
        self.assertIn("\\x1b[2J", detail)
        self.assertLess(len(detail), 200)
        connection_id = self.connection("billing-2").state.connection_id
        self.assertEqual(self.drain(connection_id).status, 202)
        self.assertEqual(self.connection("billing-2").state.status,
                         InstanceHealthStatus.DRAINING)

    def test_body_bounded(self) -> None:
        """
        A request body over 64 KiB (declared, or sent chunked) is answered
        413 (problem+json) and the connection closed before the body is
        buffered; the request is not served.
        """
        declared = InMemoryHttpClient(self.deployment.gateway.admin_site, host="127.0.0.1")
        self.deployment.clients.append(declared)
        declared.send("POST", "/instances/billing-1/drain", b"x" * (64 * 1024 + 1))
        self.assertTrue(declared.transport.disconnecting)
        self.assertTrue(declared.transport.value().startswith(b"HTTP/1.1 413 "),
                        declared.transport.value())
        declared.channel.connectionLost(Failure(ConnectionLost("aborted")))
        chunked = InMemoryHttpClient(self.deployment.gateway.admin_site, host="127.0.0.1")
        self.deployment.clients.append(chunked)
        chunked.channel.dataReceived(b"POST /instances/billing-1/drain HTTP/1.1\r\n"
                                     b"Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            chunked.channel.dataReceived(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        chunked.channel.dataReceived(b"0\r\n\r\n")  # the body's end: still not served
        self.assertTrue(chunked.transport.disconnecting)
        self.assertTrue(chunked.transport.value().startswith(b"HTTP/1.1 413 "))
        chunked.channel.connectionLost(Failure(ConnectionLost("aborted")))
        self.assertEqual(self.connection("billing-1").state.status,
                         InstanceHealthStatus.HEALTHY)
        self.assertEqual(self.deployment.admin_request("GET", "/status").status, 200)

    def test_get_is_not_a_drain(self) -> None:
        """
        Only POST drains.
        """
        self.assertEqual(self.deployment.admin_request("GET", "/instances/billing-1/drain")
                         .status, 405)
        self.assertEqual(self.connection("billing-1").state.status,
                         InstanceHealthStatus.HEALTHY)


class AdminAccessTests(AdminTestCase):
    """
    Item 1: bearer protection with required claims, loopback only, no
    browser requests.
    """

    def setUp(self) -> None:
        super().setUp()
        self.events: List[dict] = []
        self.patch(AdminGuard, "log", Logger(observer=self.events.append))
        self.configure(admin=AdminConfig(
            require_claims=(ClaimRequirement("scope", "stellarouter:admin"),)))

    def bearer(self, value: str) -> Any:
        return [("Authorization", f"Bearer {value}")]

    def test_token_required(self) -> None:
        """
        Without a token: 401 with a Bearer challenge.
        """
        response = self.deployment.admin_request("GET", "/instances")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("WWW-Authenticate"),
                         'Bearer realm="stellarouter-admin"')

    def test_invalid_token(self) -> None:
        """
        A token the gateway's keys do not validate: 401; the token is not
        logged.
        """
        bad = token({"scope": "stellarouter:admin"}, secret="another-secret-0123456789abcdefgh")
        self.assertEqual(self.get("/instances", self.bearer(bad))[0], 401)
        self.assertEqual([formatEvent(e) for e in self.events],
                         ["admin request refused: invalid token (bad signature)"])
        self.assertNotIn(bad, json.dumps([formatEvent(e) for e in self.events]))
        self.assertNotIn(bad.split(".")[2], repr(self.events))

    def test_claim_missing(self) -> None:
        """
        A valid token without the required claim: 403 naming it.
        """
        status, body = self.get("/instances", self.bearer(token({"scope": "billing:read"})))
        self.assertEqual((status, body["detail"]),
                         (403, "the token lacks scope=stellarouter:admin"))

    def test_token_with_claim(self) -> None:
        """
        A valid token with the claim (among other scopes): 200, drain too.
        """
        good = self.bearer(token({"scope": "billing:read stellarouter:admin"}))
        self.assertEqual(self.get("/instances", good)[0], 200)
        self.assertEqual(self.get("/status", good)[0], 200)

    def test_remote_peer_refused(self) -> None:
        """
        A peer that is not on loopback is refused unless
        C{admin.allow_remote}.
        """
        self.configure(admin=AdminConfig())
        remote = IPv4Address("TCP", "10.0.0.5", 40000)
        client = InMemoryHttpClient(self.deployment.gateway.admin_site,
                                    StringTransport(peerAddress=remote), host="127.0.0.1")
        self.deployment.clients.append(client)
        client.send("GET", "/status")
        self.deployment.pump()
        response = client.response()
        assert response is not None
        self.assertEqual(response.status, 403)
        self.configure(admin=AdminConfig(allow_remote=True))
        client.send("GET", "/status")
        self.deployment.pump()
        response = client.response()
        assert response is not None
        self.assertEqual(response.status, 200)

    def test_rebound_host_and_browsers_refused(self) -> None:
        """
        A non-loopback C{Host} (DNS rebinding) and any C{Origin} (a web page)
        are refused.
        """
        self.configure(admin=AdminConfig())
        client = InMemoryHttpClient(self.deployment.gateway.admin_site, host="evil.example:9901")
        self.deployment.clients.append(client)
        client.send("GET", "/status")
        self.deployment.pump()
        response = client.response()
        assert response is not None
        self.assertEqual(response.status, 403)
        response = self.deployment.admin_request(
            "POST", "/instances/x/drain", [("Origin", "http://evil.example")])
        self.assertEqual(response.status, 403)
        for host in ("localhost:9901", "[::1]:9901", "127.0.0.1"):
            client = InMemoryHttpClient(self.deployment.gateway.admin_site, host=host)
            self.deployment.clients.append(client)
            client.send("GET", "/status")
            self.deployment.pump()
            response = client.response()
            assert response is not None
            self.assertEqual(response.status, 200, host)


    def test_duplicated_host_or_authorization(self) -> None:
        """
        Two C{Host} headers (a rebound name hidden behind a loopback one) or
        two C{Authorization} headers are answered 400, as on the public
        port, whatever C{admin.allow_remote} says.
        """
        self.configure(admin=AdminConfig())
        for allow_remote in (False, True):
            self.configure(admin=AdminConfig(allow_remote=allow_remote))
            client = InMemoryHttpClient(self.deployment.gateway.admin_site,
                                        host="evil.example:9901")
            self.deployment.clients.append(client)
            client.send("GET", "/status", headers=[("Host", "127.0.0.1:9901")])
            self.deployment.pump()
            response = client.response()
            assert response is not None
            self.assertEqual((response.status, json.loads(response.body)["detail"]),
                             (400, "2 Host headers; at most one is allowed"), allow_remote)
        self.configure(admin=AdminConfig(
            require_claims=(ClaimRequirement("scope", "stellarouter:admin"),)))
        good = token({"scope": "stellarouter:admin"})
        response = self.deployment.admin_request(
            "GET", "/status", self.bearer(good) + self.bearer("not-a-token"))
        self.assertEqual((response.status, json.loads(response.body)["detail"]),
                         (400, "2 Authorization headers; at most one is allowed"))


class MetricsSeamTests(AdminTestCase):
    """
    The seam for item 2: GET /metrics serves an L{IMetricsExposition}, 404
    without one.
    """

    def test_fake_provides_the_interface(self) -> None:
        """
        The public fake provides L{IMetricsExposition}.
        """
        self.assertTrue(verifyObject(IMetricsExposition, FakeMetricsExposition()))

    def test_no_metrics(self) -> None:
        """
        Without a metrics object, /metrics is 404 (the gateway gives its own:
        an embedding that takes it away gets a clear 404, not a 500).
        """
        self.deployment.gateway.admin.metrics = None
        self.assertEqual(self.deployment.admin_request("GET", "/metrics").status, 404)

    def test_metrics_off(self) -> None:
        """
        With C{metrics.enabled: false} in force, /metrics is 404 and
        /status says C{"metrics": false}; the setting is read live (a
        reload turns them back on).
        """
        gateway = self.deployment.gateway
        on = gateway.admin.config
        gateway.admin.config = dataclasses.replace(
            on, metrics=dataclasses.replace(on.metrics, enabled=False))
        response = self.deployment.admin_request("GET", "/metrics")
        self.assertEqual((response.status, json.loads(response.body)["detail"]),
                         (404, "metrics are off (metrics.enabled: false)"))
        self.assertIs(json.loads(self.deployment.admin_request("GET", "/status").body)
                      ["metrics"], False)
        gateway.admin.config = on
        self.assertEqual(self.deployment.admin_request("GET", "/metrics").status, 200)
        self.assertIs(json.loads(self.deployment.admin_request("GET", "/status").body)
                      ["metrics"], True)

    def test_metrics_served(self) -> None:
        """
        With one, /metrics is its body with its content type.
        """
        fake = FakeMetricsExposition()
        self.deployment.gateway.admin.metrics = fake
        response = self.deployment.admin_request("GET", "/metrics")
        self.assertEqual((response.status, response.body, response.header("Content-Type")),
                         (200, fake.body, fake.content_type))
        self.assertEqual(fake.scrapes, 1)


class _RefusingReactor(MemoryReactorClock):
    """
    Refuses to listen on port 9901.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        if port == 9901:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


class AdminListenerTests(SynchronousTestCase):
    """
    Item 1: the gateway service starts the admin listener after the public
    port; a bind failure stops the start-up like the public port's.
    """

    def start(self, reactor: MemoryReactorClock, admin: AdminConfig = AdminConfig()) -> Any:
        config = GatewayConfig(node=NodeConfig(region="eu1"), http=HttpConfig(listen="tcp:8080"),
                               admin=admin)
        service = GatewayService(config, reactor, metrics=FakeMetricsExposition())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_listens_on_loopback_9901(self) -> None:
        """
        By default: port 9901 on 127.0.0.1, with the admin site; the
        addresses name it.
        """
        reactor = MemoryReactorClock()
        service = self.start(reactor)
        port, factory, _, interface = reactor.tcpServers[1]
        self.assertEqual((port, interface, factory), (9901, "127.0.0.1", service.admin_site))
        self.assertIn("admin", self.successResultOf(service.ready))
        self.assertIsNotNone(service.admin.metrics)

    def test_disabled(self) -> None:
        """
        C{admin.enabled: false}: only the public port.
        """
        reactor = MemoryReactorClock()
        service = self.start(reactor, AdminConfig(enabled=False))
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertNotIn("admin", self.successResultOf(service.ready))

    def test_bind_failure(self) -> None:
        """
        An admin port that cannot be bound fails the start-up naming
        C{admin.listen}.
        """
        service = self.start(_RefusingReactor())
        failure = self.failureResultOf(service.ready, StartupError)
        self.assertIn("admin.listen (tcp:9901:interface=127.0.0.1): ", str(failure.value))

    def test_listen_needs_a_restart(self) -> None:
        """
        A reload that moves the admin listener reports it as needing a
        restart and keeps the old address; required claims apply at once.
        """
        reactor = MemoryReactorClock()
        service = self.start(reactor)
        new = dataclasses.replace(service.config, auth=AuthConfig(hs256_secret=SECRET),
                                  admin=AdminConfig(listen="tcp:9902:interface=127.0.0.1",
                                                    require_claims=(ClaimRequirement("sub"),)))
        live, restart = service.apply_config(new)
        self.assertTrue(any("admin.listen" in line for line in restart), restart)
        self.assertEqual(service.config.admin.listen, "tcp:9901:interface=127.0.0.1")
        self.assertEqual(service.admin.config.admin.require_claims, (ClaimRequirement("sub"),))

    def test_weakening_warned(self) -> None:
        """
        A reload that drops the admin's required claims or allows remote
        requests is logged as a weakening.
        """
        events: List[dict] = []
        self.patch(GatewayService, "log", Logger(observer=events.append))
        service = self.start(MemoryReactorClock())
        guarded = dataclasses.replace(service.config, auth=AuthConfig(hs256_secret=SECRET),
                                      admin=AdminConfig(require_claims=(
                                          ClaimRequirement("scope", "stellarouter:admin"),)))
        service.apply_config(guarded)
        del events[:]
        service.apply_config(dataclasses.replace(guarded, admin=AdminConfig(allow_remote=True)))
        lines = [formatEvent(e) for e in events if "weakens" in formatEvent(e)]
        self.assertEqual(lines, [
            "configuration reload weakens authentication: admin.require_claims no longer "
            "requires scope: the admin API answers requests without a token",
            "configuration reload weakens authentication: admin.allow_remote turned on: the "
            "admin API answers requests from other hosts"])


class AdminOpenApiTests(AdminTestCase):
    """
    Issue 23: with C{openapi.expose: admin} (the default) the admin listener
    serves C{/openapi.json} and C{/docs}, behind the admin API's guard.
    """

    def setUp(self) -> None:
        super().setUp()
        self.deployment.add(billing("1.0.0"), instance_id="billing-1")

    def test_served_by_default(self) -> None:
        """
        The document describes the connected Billing service; the docs page
        is HTML.
        """
        status, document = self.get("/openapi.json")
        self.assertEqual(status, 200)
        self.assertEqual(document["openapi"][:3], "3.1")
        self.assertIn("/ping", document["paths"])
        page = self.deployment.admin_request("GET", "/docs")
        self.assertEqual(page.status, 200)
        self.assertIn("text/html", page.header("Content-Type"))

    def test_listed(self) -> None:
        """
        C{GET /} lists C{/openapi.json} and C{/docs} with the other
        resources while they are served here, and not otherwise.
        """
        status, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertEqual(body["resources"][-2:], ["GET /openapi.json", "GET /docs"])
        self.assertIn("GET /instances", body["resources"])
        self.deployment.gateway.admin.openapi = None
        status, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertNotIn("GET /openapi.json", body["resources"])
        self.assertNotIn("GET /docs", body["resources"])
        self.assertIn("GET /instances", body["resources"])

    def test_guarded(self) -> None:
        """
        A page's request (Origin) is refused, and with
        C{admin.require_claims} a request without a token is 401, like every
        admin resource.
        """
        response = self.deployment.admin_request("GET", "/openapi.json",
                                                 [("Origin", "http://evil.example")])
        self.assertEqual(response.status, 403)
        self.configure(admin=AdminConfig(
            require_claims=(ClaimRequirement("scope", "stellarouter:admin"),)))
        self.assertEqual(self.deployment.admin_request("GET", "/openapi.json").status, 401)
        self.assertEqual(self.deployment.admin_request("GET", "/docs").status, 401)

    def test_not_here_when_exposed_elsewhere(self) -> None:
        """
        When the documents are exposed elsewhere, the admin paths are 404.
        """
        self.deployment.gateway.admin.openapi = None
        self.assertEqual(self.deployment.admin_request("GET", "/openapi.json").status, 404)

