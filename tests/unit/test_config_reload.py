"""
Tests for environment overrides, endpoint overrides on both sides, the
reload watcher on a Clock, live application of a new configuration, and
the config check command.
"""

import dataclasses
import io
import json
import os
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.cli import main as cli
from stellarouter.common.models import ClaimRequirement, EndpointDescriptor
from stellarouter.config import ConfigError, load_gateway_config, load_microservice_config
from stellarouter.config.gateway import EndpointOverride, ServiceConfig
from stellarouter.config.microservice import EndpointOverrideConfig
from stellarouter.config.watcher import ConfigWatcher
from stellarouter.gateway import service as service_module
from stellarouter.gateway.service import GatewayService
from stellarouter.lifecycle import StartupError
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.endpoints import merge_overrides
from stellarouter.testing.harness import InMemoryDeployment

GATEWAY = """
node: {region: eu1}
transports: [{type: tcp, listen: "tcp:5100"}]
"""


class EnvironmentTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = FilePath(self.mktemp())
        path.setContent(text.encode())
        return path.path

    def test_gateway_overrides(self) -> None:
        """
        STELLAROUTER_NODE__REGION sets node.region; values are YAML scalars;
        numeric segments index lists; microservice variables are ignored.
        """
        config = load_gateway_config(self.write(GATEWAY), {
            "STELLAROUTER_NODE__REGION": "us1",
            "STELLAROUTER_HTTP__ACCESS_LOG": "true",
            "STELLAROUTER_TRANSPORTS__0__LISTEN": "tcp:6100",
            "STELLAROUTER_MICRO__REGION": "ignored",
            "OTHER": "x",
        })
        self.assertEqual(config.node.region, "us1")
        self.assertTrue(config.http.access_log)
        self.assertEqual(config.transports[0].listen, "tcp:6100")

    def test_overrides_are_validated(self) -> None:
        """
        An override is validated like the file, and one that does not fit
        the document's shape is a located problem.
        """
        error = self.assertRaises(ConfigError, load_gateway_config, self.write(GATEWAY),
                                  {"STELLAROUTER_TRANSPORTS__3__LISTEN": "x"})
        self.assertIn("STELLAROUTER_TRANSPORTS__3__LISTEN: no list entry '3'", str(error))
        error = self.assertRaises(ConfigError, load_gateway_config, self.write(GATEWAY),
                                  {"STELLAROUTER_HEALTH__PING_INTERVAL": "-1"})
        self.assertIn("health.ping_interval: must be positive", str(error))

    def test_microservice_overrides(self) -> None:
        """
        STELLAROUTER_MICRO__* sets microservice keys.
        """
        path = self.write("region: eu1\nrouters: [{transport: tcp, address: 'tcp:host=a:port=1'}]\n")
        config = load_microservice_config(path, {"STELLAROUTER_MICRO__REGION": "eu9"})
        self.assertEqual(config.region, "eu9")

    @settings(max_examples=100)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(
            st.sampled_from(["node", "region", "http", "listen", "transports", "type",
                             "services", "name", "endpoints", "method", "path", "timeout",
                             "requiring_claims", "routers", "health", "x"]), c, max_size=4),
        max_leaves=20))
    def test_fuzz_yaml_files(self, document: Any) -> None:
        """
        Any YAML document written to a file loads as a config or raises
        ConfigError, never anything else.
        """
        path = self.write(yaml.safe_dump(document))
        for load in (load_gateway_config, load_microservice_config):
            try:
                load(path, {})
            except ConfigError:
                pass


class EndpointOverrideTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.code = (
            EndpointDescriptor("billing", "1.0.0", "GET", "/invoices/{id}", 30.0, False,
                               (ClaimRequirement("scope", "billing:read"),)),
            EndpointDescriptor("billing", "1.0.0", "GET", "/ping", 5.0),
        )

    def test_merge(self) -> None:
        """
        YAML changes the timeout and adds claims; replace_claims replaces
        them; endpoints without an override are unchanged.
        """
        added = merge_overrides(self.code, [EndpointOverrideConfig(
            "GET", "/invoices/{id}", 2.0, (ClaimRequirement("tenant"),))])
        self.assertEqual(added[0].default_timeout, 2.0)
        self.assertEqual(added[0].requiring_claims, (ClaimRequirement("scope", "billing:read"),
                                                     ClaimRequirement("tenant")))
        self.assertEqual(added[1], self.code[1])
        replaced = merge_overrides(self.code, [EndpointOverrideConfig(
            "GET", "/invoices/{id}", None, (ClaimRequirement("tenant"),), True)])
        self.assertEqual(replaced[0].requiring_claims, (ClaimRequirement("tenant"),))
        self.assertEqual(replaced[0].default_timeout, 30.0)

    def test_streaming_flag(self) -> None:
        """
        C{supports_streaming} from YAML replaces the code's flag when set,
        and is read from YAML as a bool.
        """
        merged = merge_overrides(self.code, [EndpointOverrideConfig(
            "GET", "/ping", supports_streaming=True)])
        self.assertTrue(merged[1].supports_streaming)
        self.assertFalse(merged[0].supports_streaming)
        unchanged = merge_overrides(self.code, [EndpointOverrideConfig("GET", "/ping", 1.0)])
        self.assertFalse(unchanged[1].supports_streaming)
        from stellarouter.config.microservice import parse_microservice_config

        base = {"region": "eu1", "routers": [{"transport": "tcp",
                                              "address": "tcp:host=127.0.0.1:port=5100"}]}
        config = parse_microservice_config(dict(base, endpoints=[
            {"method": "GET", "path": "/ping", "supports_streaming": True}]))
        self.assertIs(config.endpoints[0].supports_streaming, True)
        error = self.assertRaises(ConfigError, parse_microservice_config, dict(base, endpoints=[
            {"method": "GET", "path": "/ping", "supports_streaming": "yes"}]))
        self.assertIn("endpoints[0].supports_streaming: must be", str(error))

    def test_unknown_endpoint(self) -> None:
        """
        An override for an endpoint the code does not define is an error
        naming it.
        """
        error = self.assertRaises(ConfigError, merge_overrides, self.code,
                                  [EndpointOverrideConfig("POST", "/nope")])
        self.assertIn("POST /nope is not an endpoint of this service", str(error))

    def test_hello_sends_the_merged_endpoints(self) -> None:
        """
        What HELLO announces, and so what the gateway enforces, is the merged
        metadata: the YAML timeout is the one that fires.
        """
        from stellarouter.config.microservice import MicroserviceConfig, RouterEndpointConfig
        from stellarouter.common.enums import TransportType
        from stellarouter.microservice.service import MicroserviceService

        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("billing", "1.0.0")
        app.endpoint("GET", "/wait", timeout=30.0)(lambda ctx: Deferred())
        config = MicroserviceConfig(
            "eu1", (RouterEndpointConfig(TransportType.INMEMORY, "gateway"),),
            endpoints=(EndpointOverrideConfig("GET", "/wait", 2.0),))
        service = MicroserviceService(app, config, deployment.clock, deployment.network,
                                      initial_delay=0.1, jitter=lambda: 0)
        service.startService()
        deployment.microservices.append(service)
        deployment.pump()
        connection = deployment.gateway.connections[0]
        self.assertEqual(connection.state.endpoints[("GET", "/wait")].default_timeout, 2.0)
        client = deployment.http()
        client.send("GET", "/wait")
        deployment.pump()
        deployment.clock.advance(2.0)
        deployment.pump()
        self.assertEqual(client.response().status, 504)

    def test_gateway_overrides(self) -> None:
        """
        The gateway's services[].endpoints override replaces the timeout and
        adds claim requirements (which, without token validation, fail
        closed with 401).
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("billing", "1.0.0")
        app.endpoint("GET", "/wait", timeout=30.0)(lambda ctx: Deferred())
        app.endpoint("GET", "/open")(lambda ctx: RawResponse.text("open"))
        deployment.add(app)
        deployment.gateway.apply_config(deployment.config.__class__(
            node=deployment.config.node, transports=deployment.config.transports,
            services=(ServiceConfig("billing", None, (
                EndpointOverride("GET", "/wait", 1.0),
                EndpointOverride("GET", "/open", None, (ClaimRequirement("scope", "x"),)),
            )),)))
        client = deployment.http()
        client.send("GET", "/wait")
        deployment.pump()
        deployment.clock.advance(1.0)
        deployment.pump()
        self.assertEqual(client.response().status, 504)
        self.assertEqual(deployment.request("GET", "/open").status, 401)


class WatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = FilePath(self.mktemp())
        self.path.setContent(GATEWAY.encode())
        self.seen: list = []
        self.watcher = ConfigWatcher(self.path.path, lambda p: load_gateway_config(p, {}),
                                     self.seen.append, self.clock,
                                     load_gateway_config(self.path.path, {}), interval=1.0)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def edit(self, text: str) -> None:
        self.path.setContent(text.encode())

    def test_change_applied_within_two_seconds(self) -> None:
        """
        An edit is seen at the next poll (1 s), applied at the one after if
        the file did not change in between (2 s), and handed over once.
        """
        self.edit(GATEWAY.replace("eu1", "eu2"))
        self.clock.advance(2.0 - 1e-6)
        self.assertEqual(self.seen, [])
        self.clock.advance(1e-6)
        self.assertEqual([c.node.region for c in self.seen], ["eu2"])
        self.clock.advance(5.0)
        self.assertEqual(len(self.seen), 1)

    def test_invalid_edit_keeps_last_good(self) -> None:
        """
        An invalid edit is logged and refused; the last good config stays;
        fixing the file applies it.
        """
        self.edit("node: {region: [oops]}\n")
        self.clock.pump([1.0, 1.0])
        self.assertEqual((self.seen, self.watcher.failures), ([], 1))
        self.assertEqual(self.watcher.current.node.region, "eu1")
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.edit(GATEWAY.replace("eu1", "eu3"))
        self.clock.pump([1.0, 1.0])
        self.assertEqual([c.node.region for c in self.seen], ["eu3"])

    def test_fixed_back_after_a_refusal(self) -> None:
        """
        After a refused edit, a file put back as it was (the configuration
        in force) is said to be valid again, once: before, nothing was
        logged, and an operator who fixed the file could not tell.
        """
        self.edit("node: {region: [oops]}\n")
        self.clock.pump([1.0, 1.0])
        self.assertEqual(self.watcher.failures, 1)
        with capturedLogs() as events:
            self.edit(GATEWAY)
            self.clock.pump([1.0, 1.0, 1.0, 1.0])
        self.assertEqual(self.seen, [])
        [said] = [formatEvent(e) for e in events]
        self.assertEqual(said, f"configuration file {self.path.path} is valid again; nothing "
                               "to change")
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(self.watcher.check(force=True)))
        self.assertEqual(list(events), [])

    def test_valid_again_with_changes(self) -> None:
        """
        After a refusal, a valid file that differs from the last one read is
        said to be valid again too, then handed over (second outside test,
        session 12: reverting a change that only a restart would apply, by
        way of an invalid file, logged nothing at all).
        """
        self.edit(GATEWAY.replace("eu1", "eu2"))
        self.clock.pump([1.0, 1.0])
        self.edit("node: {region: [oops]}\n")
        self.clock.pump([1.0, 1.0])
        with capturedLogs() as events:
            self.edit(GATEWAY)
            self.clock.pump([1.0, 1.0])
        self.assertEqual([c.node.region for c in self.seen], ["eu2", "eu1"])
        self.assertEqual([formatEvent(e) for e in events],
                         [f"configuration file {self.path.path} is valid again"])

    def test_forced_check(self) -> None:
        """
        A forced check (SIGHUP) reloads at once; an identical file changes
        nothing.
        """
        self.assertFalse(self.successResultOf(self.watcher.check(force=True)))
        self.path.setContent(GATEWAY.replace("eu1", "eu4").encode())
        self.assertTrue(self.successResultOf(self.watcher.check(force=True)))
        self.assertEqual(self.seen[-1].node.region, "eu4")


class LiveApplyTests(SynchronousTestCase):
    def test_live_and_restart_changes(self) -> None:
        """
        A reload changes routing at once (neighbour regions, default
        versions), reports listen-address changes as needing a restart and
        keeps the old ones, and leaves requests in flight alone.
        """
        deployment = InMemoryDeployment(neighbor_regions=["eu2"])
        self.addCleanup(deployment.stop)
        app = Microservice("whoami", "1.0.0")
        pending: list = []
        app.endpoint("GET", "/who")(lambda ctx: RawResponse.text(ctx.instance.region))
        app.endpoint("GET", "/wait")(lambda ctx: pending.append(Deferred()) or pending[-1])
        deployment.add(app, region="eu2")
        deployment.add(app, region="eu3")
        self.assertEqual(deployment.request("GET", "/who").body, b"eu2")
        waiting = deployment.http()
        waiting.send("GET", "/wait")
        deployment.pump()
        old = deployment.gateway.config
        new = old.__class__(
            node=old.node.__class__(region="eu1", node_id="gw-test", neighbor_regions=("eu3",)),
            transports=(old.transports[0].__class__(old.transports[0].type, "elsewhere"),),
        )
        live, restart = deployment.gateway.apply_config(new)
        self.assertIn("node.neighbor_regions: ('eu2',) -> ('eu3',)", live)
        self.assertEqual(restart, ["transports[0].listen: 'gateway' -> 'elsewhere'"])
        self.assertEqual(deployment.gateway.config.transports[0].listen, "gateway")
        self.assertEqual(deployment.request("GET", "/who").body, b"eu3")
        # The file put back to what is in force, but for the listen address
        # a restart would change: nothing changes, and nothing waits for a
        # restart any more; the log says so (it said nothing).
        with capturedLogs() as events:
            live, restart = deployment.gateway.apply_config(
                dataclasses.replace(new, transports=old.transports))
        self.assertEqual((live, restart), ([], []))
        self.assertEqual([formatEvent(e) for e in events], [
            "configuration reloaded; nothing in force changes, and no change waits for a "
            "restart"])
        pending[0].callback(RawResponse.text("still here"))
        deployment.pump()
        self.assertEqual(waiting.response().body, b"still here")


class CommandTests(SynchronousTestCase):
    def test_check(self) -> None:
        """
        'stellarouter config check' prints every problem and exits 1, or
        confirms a valid file and exits 0.
        """
        bad = FilePath(self.mktemp())
        bad.setContent(b"node: {regoin: eu1}\ntransports: [{type: tcpp}]\n"
                       b"services: [{name: billing, default_version: '1.2'}]\n")
        out = io.StringIO()
        self.assertEqual(cli(["config", "check", bad.path], out), 1)
        text = out.getvalue()
        self.assertIn("services[0].default_version: '1.2' is not MAJOR.MINOR.PATCH", text)
        self.assertIn("transports[0].type: 'tcpp' is not one of inmemory, tcp, tls, udp, "
                      "rabbitmq", text)
        self.assertIn("node.regoin: unknown key (did you mean 'region'?)", text)
        good = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "billing")
        out = io.StringIO()
        self.assertEqual(cli(["config", "check", os.path.join(good, "gateway.yaml"),
                              os.path.join(good, "billing.yaml")], out), 0)
        self.assertIn("valid microservice configuration", out.getvalue())


class AccessLogReloadTests(SynchronousTestCase):
    """
    A reload whose C{access_log.path} cannot be opened (outside test,
    session 10: reported applied, C{/config} showed the new path, nothing
    could be logged there).
    """

    def setUp(self) -> None:
        directory = FilePath(self.mktemp())
        directory.makedirs()
        self.directory = directory
        self.old_log = directory.child("access.log")
        self.config_file = directory.child("gateway.yaml")
        self.config_file.setContent(self.document(self.old_log.path, "eu1").encode())
        self.clock = MemoryReactorClock()
        self.gateway = GatewayService(load_gateway_config(self.config_file.path, {}),
                                      self.clock, config_path=self.config_file.path)
        self.addCleanup(self.close)

    def close(self) -> None:
        if self.gateway.telemetry is not None:
            self.gateway.telemetry.close()

    def document(self, access_log: str, region: str) -> str:
        return (f"node: {{region: {region}}}\n"
                f"transports: [{{type: tcp, listen: \"tcp:5100\"}}]\n"
                f"access_log: {{path: {json.dumps(access_log)}, buffer_lines: 1}}\n")

    def test_unopenable_path_refuses_the_reload(self) -> None:
        """
        The whole reload is refused: the previous configuration stays in
        force (C{/config} included) and its access log keeps writing, the
        reason is logged, and the reload counts as failed.
        """
        telemetry = self.gateway.telemetry
        assert telemetry is not None and telemetry.access_log is not None
        missing = self.directory.child("missing").child("access.log").path
        self.config_file.setContent(self.document(missing, "eu2").encode())
        with capturedLogs() as events:
            applied = self.successResultOf(self.gateway.reload())
        self.assertFalse(applied)
        for config in (self.gateway.config, self.gateway.admin.config):
            self.assertEqual((config.access_log.path, config.node.region),
                             (self.old_log.path, "eu1"))
        self.assertIs(self.gateway.telemetry, telemetry)
        self.assertEqual(self.gateway.figures.reloads(), (0, 1))
        [refusal] = [formatEvent(e) for e in events if e.get("log_level") is LogLevel.error]
        self.assertIn("access_log.path", refusal)
        self.assertIn(missing, refusal)
        self.assertIn("No such file or directory", refusal)
        self.assertEqual(self.flushLoggedErrors(), [])
        telemetry.access_log.add(
            (0.0, "cid", "GET", b"/x", "", "", "", "", 200, 0, 0, None, 0.0, "127.0.0.1"))
        self.assertIn(b'"cid":"cid"', self.old_log.getContent())
        self.assertFalse(os.path.exists(missing))

    def test_unopenable_path_at_start(self) -> None:
        """
        At start-up the same path is a start-up error naming the key.
        """
        missing = self.directory.child("missing").child("access.log").path
        self.config_file.setContent(self.document(missing, "eu1").encode())
        error = self.assertRaises(StartupError, GatewayService,
                                  load_gateway_config(self.config_file.path, {}), self.clock)
        self.assertIn(f"access_log.path ({missing})", str(error))


class AllOrNothingTests(SynchronousTestCase):
    """
    A reload that fails while the gateway builds what it needs (a bug: a
    validated configuration should not fail there) leaves the whole
    previous configuration in force, as its log line says.  Before, the
    settings applied before the failure stayed applied (routing, region,
    payload limits ...), the rest did not, and the log said "the previous
    one stays in force".
    """

    def test_failure_while_building(self) -> None:
        directory = FilePath(self.mktemp())
        directory.makedirs()
        config_file = directory.child("gateway.yaml")
        config_file.setContent(GATEWAY.encode())
        clock = MemoryReactorClock()
        gateway = GatewayService(load_gateway_config(config_file.path, {}), clock,
                                 config_path=config_file.path)
        self.addCleanup(lambda: gateway.telemetry.close() if gateway.telemetry else None)
        proxy = gateway.proxy

        def in_force() -> list:
            return [gateway.config, gateway.admin.config, gateway.telemetry, proxy.routing,
                    proxy.limits, proxy.overrides, proxy.forwarding, proxy.retries.budget,
                    gateway.health.expected]

        before = in_force()
        limit = gateway.site.max_request_bytes

        def broken(*args: object) -> None:
            raise RuntimeError("a bug while building")

        self.patch(service_module, "ClientAddressPolicy", broken)
        new_log = directory.child("access.log")
        config_file.setContent(GATEWAY.replace("eu1", "eu2").encode() + (
            b"payload_limits: {max_request_bytes_per_call: 1000}\n"
            b"retries: {budget_ratio: 0.5}\n"
            b"static_instances: [{service: billing, instance_id: billing-1}]\n"
            b"access_log: {path: " + new_log.path.encode() + b"}\n"))
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(gateway.reload()))
        for old, new in zip(before, in_force()):
            self.assertIs(new, old)
        self.assertEqual((proxy.region, gateway.health.region, gateway.site.max_request_bytes),
                         ("eu1", "eu1", limit))
        self.assertEqual(gateway.figures.reloads(), (0, 1))
        [failure] = [e for e in events if e.get("log_failure") is not None]
        self.assertIn("the previous one stays in force", formatEvent(failure))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
