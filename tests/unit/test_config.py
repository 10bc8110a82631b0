"""
Tests for configuration loading and validation, and the twistd options.
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import TransportType
from stellarouter.config import (
    ConfigError,
    load_gateway_config,
    load_microservice_config,
)
from stellarouter.config.gateway import parse_gateway_config
from stellarouter.config.microservice import parse_microservice_config
from stellarouter.gateway import tap as gateway_tap
from stellarouter.microservice import tap as micro_tap

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples", "billing")


class ExampleConfigTests(SynchronousTestCase):
    def test_examples_load(self) -> None:
        """
        The Billing example's configs load, so they never rot.
        """
        gateway = load_gateway_config(os.path.join(EXAMPLES, "gateway.yaml"))
        self.assertEqual(gateway.node.region, "eu1")
        self.assertEqual(gateway.http.listen, "tcp:8080:interface=127.0.0.1")
        self.assertEqual([t.type for t in gateway.transports], [TransportType.TCP])
        micro = load_microservice_config(os.path.join(EXAMPLES, "billing.yaml"))
        self.assertEqual(micro.app, "examples.billing:service")
        self.assertEqual([(s.service, s.instance_id) for s in gateway.static_instances],
                         [("billing", micro.instance_id)])
        self.assertEqual(micro.routers[0].address, "tcp:host=127.0.0.1:port=5100")


    def test_tls_examples_load(self) -> None:
        """
        The mutual-TLS examples load once 'stellarouter certs init
        .demo/certs' has made their certificates.
        """
        import shutil

        from stellarouter import certs

        root = self.mktemp()
        certs.init_dev_certs(os.path.join(root, ".demo", "certs"), ["billing"])
        target = os.path.join(root, "examples", "billing")
        os.makedirs(target)
        for name in ("gateway-tls.yaml", "billing-tls.yaml"):
            shutil.copy(os.path.join(EXAMPLES, name), target)
        gateway = load_gateway_config(os.path.join(target, "gateway-tls.yaml"), {})
        self.assertEqual(gateway.transports[0].type, TransportType.TLS)
        self.assertEqual(gateway.transports[0].tls.allowed_names(), {"billing": ("billing",)})
        micro = load_microservice_config(os.path.join(target, "billing-tls.yaml"), {})
        self.assertEqual(micro.routers[0].tls.server_name, "localhost")
        self.assertTrue(os.path.isfile(micro.routers[0].tls.ca))

    def test_amqp_examples_load(self) -> None:
        """
        The RabbitMQ examples load.
        """
        gateway = load_gateway_config(os.path.join(EXAMPLES, "gateway-amqp.yaml"), {})
        self.assertEqual(gateway.transports[0].type, TransportType.RABBITMQ)
        micro = load_microservice_config(os.path.join(EXAMPLES, "billing-amqp.yaml"), {})
        self.assertIn("gateway=gw-demo-1", micro.routers[0].address)

    def test_tls_settings_checked(self) -> None:
        """
        Missing certificate files and TLS keys on a tcp listener are located
        problems.
        """
        error = self.assertRaises(ConfigError, parse_gateway_config, {
            "node": {"region": "eu1"},
            "transports": [{"type": "tls", "listen": "tcp:1", "certificate": "/nope.pem"},
                           {"type": "tcp", "listen": "tcp:2", "client_ca": "x"}]})
        text = str(error)
        self.assertIn("transports[0].certificate: cannot read /nope.pem", text)
        self.assertIn("transports[0].private_key: is required", text)
        self.assertIn("transports[1].client_ca: only a tls listener takes TLS settings", text)


class GatewayConfigTests(SynchronousTestCase):
    def problems(self, document: object) -> tuple:
        return self.assertRaises(ConfigError, parse_gateway_config, document, "g.yaml").problems

    def test_defaults(self) -> None:
        """
        Only the region and one transport are required; the rest defaults.
        """
        config = parse_gateway_config({"node": {"region": "eu1"},
                                       "transports": [{"type": "tcp", "listen": "tcp:5100"}]})
        self.assertEqual(config.payload_limits.max_request_bytes_per_call, 16 * 1024 * 1024)
        self.assertEqual(config.transports[0].max_frame_bytes, 1024 * 1024)
        self.assertFalse(config.http.access_log)

    def test_every_problem_located(self) -> None:
        """
        All problems are reported at once, each with its key path.
        """
        problems = self.problems({
            "node": {"regoin": "eu1"},
            "http": {"listen": "nonsense:1"},
            "transports": [{"type": "tcpp", "listen": "tcp:1"}, {"type": "tcp"}],
            "payload_limits": {"max_request_bytes_per_call": -1},
        })
        text = "\n".join(problems)
        self.assertIn("node.regoin: unknown key (did you mean 'region'?)", text)
        self.assertIn("node.region: is required", text)
        self.assertIn("http.listen: 'nonsense:1' is not a usable server endpoint string", text)
        self.assertIn("transports[0].type: 'tcpp' is not one of inmemory, tcp, tls, udp, rabbitmq",
                      text)
        self.assertIn("transports[1].listen: is required", text)
        self.assertIn("payload_limits.max_request_bytes_per_call: must be positive", text)
        self.assertEqual(len(problems), 6)

    def test_ipv6_address_unescaped(self) -> None:
        """
        An IPv6 address written as it is in an endpoint string (its colons
        unescaped): the problem says how to write it; escaped, it is valid.
        """
        base = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:5100"}]}
        text = "\n".join(self.problems({**base, "admin": {"listen": "tcp:9901:interface=::1"}}))
        self.assertIn("admin.listen: 'tcp:9901:interface=::1' is not a usable server endpoint "
                      "string (", text)
        self.assertIn("; a colon inside a value is written \\: (an IPv6 address: "
                      "interface=\\:\\:1", text)
        config = parse_gateway_config({**base, "admin": {"listen": "tcp:9901:interface=\\:\\:1"}})
        self.assertEqual(config.admin.listen, "tcp:9901:interface=\\:\\:1")
        self.assertNotIn("IPv6", "\n".join(self.problems({**base, "http": {"listen": "x:1"}})))

    def test_regions_and_expected_ids_as_in_hello(self) -> None:
        """
        The gateway's region, its neighbour regions and the expected
        instances' ids and regions are checked as HELLO checks an instance's
        (F2): a value no instance may announce could never match.
        """
        problems = self.problems({
            "node": {"region": "eu 1", "neighbor_regions": ["ok", "b\nad", 3]},
            "transports": [{"type": "tcp", "listen": "tcp:5100"}],
            "static_instances": [{"service": "billing", "instance_id": "x\x1b", "region": ""}]})
        text = "\n".join(str(p) for p in problems)
        for key in ("node.region", "node.neighbor_regions[1]", "node.neighbor_regions[2]",
                    "static_instances[0].instance_id", "static_instances[0].region"):
            self.assertIn(f"{key}: must be 1 to 256 printable ASCII characters without spaces",
                          text)
        self.assertNotIn("neighbor_regions[0]", text)

    def test_rabbitmq_address_checked(self) -> None:
        """
        A rabbitmq listener's address is checked like any other.
        """
        problems = self.problems({"node": {"region": "eu1"},
                                  "transports": [{"type": "rabbitmq", "listen": "x"}]})
        self.assertIn("transports[0].listen: 'x' does not start with 'amqp:'", problems[0])

    def test_empty_and_wrong_shapes(self) -> None:
        """
        Empty documents and wrong shapes are problems, not crashes.
        """
        self.assertIn("empty", self.problems(None)[0])
        self.assertIn("must be a mapping", self.problems(["x"])[0])
        self.assertIn("must be a list", "\n".join(self.problems(
            {"node": {"region": "eu1"}, "transports": "tcp"})))

    def test_invalid_yaml_file(self) -> None:
        """
        Invalid YAML is reported with its position; a missing file clearly.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"node: [unclosed\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path.path)
        self.assertIn("invalid YAML at line", str(error))
        error = self.assertRaises(ConfigError, load_gateway_config, path.path + ".missing")
        self.assertIn("cannot read the file", str(error))

    @settings(max_examples=200)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(
            st.sampled_from(["node", "region", "http", "listen", "transports", "type",
                             "payload_limits", "x"]), c, max_size=4),
        max_leaves=15))
    def test_fuzz(self, document: object) -> None:
        """
        Any YAML-shaped document gives a config or a ConfigError.
        """
        for parse in (parse_gateway_config, parse_microservice_config):
            try:
                parse(document)
            except ConfigError:
                pass


class MicroserviceConfigTests(SynchronousTestCase):
    def test_router_required(self) -> None:
        """
        A microservice config without routers is refused with a clear message.
        """
        error = self.assertRaises(ConfigError, parse_microservice_config, {"region": "eu1"})
        self.assertIn("needs at least one router", str(error))

    def test_problems(self) -> None:
        """
        Bad app references, transports and addresses are located.
        """
        error = self.assertRaises(ConfigError, parse_microservice_config, {
            "app": "no-colon", "region": "eu1",
            "routers": [{"transport": "tcp", "address": "tcp:nohost"}, {"transport": "smoke"}]})
        text = str(error)
        self.assertIn("app: 'no-colon' is not 'module:attribute'", text)
        self.assertIn("routers[0].address:", text)
        self.assertIn("routers[1].transport: 'smoke' is not one of", text)

    def test_identity_characters(self) -> None:
        """
        C{instance_id} and C{region} are checked as the gateway checks them
        in HELLO (printable ASCII without spaces, at most 256 characters), so
        C{config check} refuses what a gateway would refuse (F2).
        """
        routers = [{"transport": "tcp", "address": "tcp:host=127.0.0.1:port=5100"}]
        error = self.assertRaises(ConfigError, parse_microservice_config, {
            "region": "eu 1", "instance_id": "evil\x1b[2J\n{", "routers": routers})
        text = str(error)
        self.assertIn("instance_id: must be 1 to 256 printable ASCII characters without "
                      "spaces, not 'evil\\x1b[2J\\n{'", text)
        self.assertIn("region: must be 1 to 256 printable ASCII", text)
        config = parse_microservice_config({"region": "eu-west-1", "instance_id": "billing-2",
                                            "routers": routers})
        self.assertEqual((config.instance_id, config.region), ("billing-2", "eu-west-1"))

    def test_compact_headers(self) -> None:
        """
        C{routers[].compact_headers} is on unless set to false; anything
        but a bool is refused.
        """
        def routers(**extra: object) -> list:
            return [dict({"transport": "tcp", "address": "tcp:host=127.0.0.1:port=5100"},
                         **extra)]

        config = parse_microservice_config({"region": "eu1", "routers": routers()})
        self.assertTrue(config.routers[0].compact_headers)
        config = parse_microservice_config({"region": "eu1",
                                            "routers": routers(compact_headers=False)})
        self.assertFalse(config.routers[0].compact_headers)
        error = self.assertRaises(ConfigError, parse_microservice_config, {
            "region": "eu1", "routers": routers(compact_headers="no")})
        self.assertIn("routers[0].compact_headers", str(error))


class TapOptionsTests(SynchronousTestCase):
    def test_gateway_needs_config(self) -> None:
        """
        stella-gateway without --config is a usage error that says what to pass.
        """
        error = self.assertRaises(usage.UsageError, gateway_tap.Options().parseOptions, [])
        self.assertIn("--config is required", str(error))

    def test_gateway_bad_config(self) -> None:
        """
        stella-gateway with an unreadable or invalid file lists the problems.
        """
        error = self.assertRaises(usage.UsageError, gateway_tap.Options().parseOptions,
                                  ["--config", "/nonexistent.yaml"])
        self.assertIn("cannot read the file", str(error))

    def test_gateway_ok(self) -> None:
        """
        A valid file is loaded into the options.
        """
        options = gateway_tap.Options()
        options.parseOptions(["--config", os.path.join(EXAMPLES, "gateway.yaml")])
        self.assertEqual(options["gateway_config"].node.node_id, "gw-demo-1")

    def test_micro_needs_config(self) -> None:
        """
        stella-micro without --config is a usage error mentioning routers.
        """
        error = self.assertRaises(usage.UsageError, micro_tap.Options().parseOptions, [])
        self.assertIn("at least one router", str(error))

    def test_micro_app(self) -> None:
        """
        --app loads a Microservice; bad references are usage errors.
        """
        config = os.path.join(EXAMPLES, "billing.yaml")
        options = micro_tap.Options()
        options.parseOptions(["--config", config, "--app", "examples.billing:service"])
        self.assertEqual(options["micro_app"].name, "billing")
        for app, message in [("nope.nope:x", "cannot import"),
                             ("examples.billing:missing", "not a stellarouter Microservice"),
                             ("bad", "is not 'module:attribute'")]:
            error = self.assertRaises(usage.UsageError, micro_tap.Options().parseOptions,
                                      ["--config", config, "--app", app])
            self.assertIn(message, str(error))
