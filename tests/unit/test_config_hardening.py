"""
Tests for the configuration's defences (issue 19): the YAML reader refuses
aliases, duplicate keys, deep nesting and big files; messages quote values
within a bounded length; secrets are redacted by one rule everywhere.
"""

import dataclasses
import json
import io
import time
from contextlib import contextmanager, redirect_stdout
from typing import Any, Iterator, List

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.cli import main as cli
from stellarouter.common.addresses import parse_amqp_address
from stellarouter.common.redaction import is_secret_key, redact, redact_text
from stellarouter.config import ConfigError, load_gateway_config, load_microservice_config
from stellarouter.config.diff import describe_change, diff, security_warnings
from stellarouter.common.models import ClaimRequirement
from stellarouter.config.gateway import (
    AuthConfig,
    EndpointOverride,
    GatewayConfig,
    NodeConfig,
    ServiceConfig,
)
from stellarouter.config.reader import MAX_CONFIG_BYTES
from stellarouter.config.watcher import ConfigWatcher
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.service import _describe_router
from stellarouter.testing.harness import InMemoryDeployment

GATEWAY = """
node: {region: eu1}
transports: [{type: tcp, listen: "tcp:5100"}]
"""

#: The classic "billion laughs": 9 levels of 9 aliases.
BOMB = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@contextmanager
def capturedLogs(events: List[dict]) -> Iterator[None]:
    """
    Collect the log events emitted inside the block.
    """
    globalLogPublisher.addObserver(events.append)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(events.append)


class FileTestCase(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = FilePath(self.mktemp())
        path.setContent(text.encode())
        return path.path


class DuplicateKeyTests(FileTestCase):
    def test_duplicate_section_names_both_lines(self) -> None:
        """
        A second C{auth:} is an error naming the lines of both, instead of
        silently replacing the first (which dropped require_authentication).
        """
        path = self.write(GATEWAY + "auth:\n  require_authentication: true\n"
                          "auth:\n  leeway: 5\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("duplicate key 'auth' (first at line 4, again at line 6)", str(error))

    def test_duplicate_nested_key(self) -> None:
        """
        Duplicates inside a flow mapping are caught as well.
        """
        path = self.write("node: {region: eu1, region: eu2}\n"
                          "transports: [{type: tcp, listen: \"tcp:5100\"}]\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("duplicate key 'region' (first at line 1, again at line 1)", str(error))

    def test_microservice_duplicates(self) -> None:
        """
        The microservice's reader refuses them too.
        """
        path = self.write("region: eu1\nregion: eu2\n"
                          "routers: [{transport: tcp, address: \"tcp:host=h:port=1\"}]\n")
        error = self.assertRaises(ConfigError, load_microservice_config, path, {})
        self.assertIn("first at line 1, again at line 2", str(error))


class BombTests(FileTestCase):
    def test_alias_bomb_refused_at_once(self) -> None:
        """
        A 400-byte alias bomb is refused in milliseconds with a short message
        (it used to take 9 s, 1.27 GB and a 312 MB message).
        """
        path = self.write(GATEWAY + BOMB)
        self.assertLess(len(BOMB), 500)
        started = time.perf_counter()
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertLess(time.perf_counter() - started, 1.0)
        self.assertIn("aliases (*name) are not accepted", str(error))
        self.assertLess(len(str(error)), 500)

    def test_merge_keys_need_aliases(self) -> None:
        """
        YAML merge keys (C{<<: *base}) are aliases too: refused.
        """
        path = self.write("base: &base {region: eu1}\nnode:\n  <<: *base\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("aliases (*name) are not accepted", str(error))

    def test_big_file_refused_before_parsing(self) -> None:
        """
        A file over the cap (256 KiB) is refused without being parsed.
        """
        path = self.write(GATEWAY + "#" * MAX_CONFIG_BYTES + "\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn(f"larger than {MAX_CONFIG_BYTES} bytes", str(error))

    def test_big_jwks_refused(self) -> None:
        """
        The JWKS file the configuration names is capped the same way.
        """
        jwks = self.write('{"keys": [' + " " * MAX_CONFIG_BYTES + "]}")
        path = self.write(GATEWAY + f"auth: {{jwks_file: {jwks}}}\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn(f"is larger than {MAX_CONFIG_BYTES} characters", str(error))

    def test_deep_nesting_refused(self) -> None:
        """
        Thousands of nested lists are a located error, not a RecursionError.
        """
        path = self.write(GATEWAY + "x: " + "[" * 5000 + "]" * 5000 + "\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertRegex(str(error), "nested more than 64 levels deep|exceeded maximum nesting depth")

    def test_repr_of_a_value_is_capped(self) -> None:
        """
        A huge value in the wrong place is quoted in at most ~80 characters.
        """
        path = self.write(GATEWAY + "http: {listen: 5, access_log: \"" + "y" * 200_000 + "\"}\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("http.access_log: must be true or false, not a string 'yyy", str(error))
        self.assertLess(len(str(error)), 600)

    def test_many_problems_are_capped(self) -> None:
        """
        Thousands of unknown keys give a bounded message that says how many
        more there were.
        """
        path = self.write(GATEWAY + "".join(f"k{i}: 1\n" for i in range(5000)))
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("... and 4950 more", str(error))
        self.assertLess(len(str(error)), 50 * 400)


class RedactionTests(FileTestCase):
    def test_secret_keys(self) -> None:
        """
        Secret fields are recognised by their name, wherever they sit.
        """
        for key in ("auth.hs256_secret", "routers[0].password", "x.api_token", "passphrase"):
            self.assertTrue(is_secret_key(key), key)
        for key in ("auth.issuer", "auth.jwks_file", "node.region", "secretary"):
            self.assertFalse(is_secret_key(key), key)
        self.assertEqual(redact("auth.hs256_secret", "demo-secret-0123456789abcdefghij"), "***")
        self.assertIsNone(redact("auth.hs256_secret", None))

    def test_addresses(self) -> None:
        """
        The password of an endpoint-style or URL address is replaced, the
        rest kept.
        """
        self.assertEqual(
            redact_text("amqp:host=h:port=5672:user=guest:password=s3cr\\:et:gateway=g"),
            "amqp:host=h:port=5672:user=guest:password=***:gateway=g")
        self.assertEqual(redact_text("dial amqp://guest:hunter2@broker/ now"),
                         "dial amqp://guest:***@broker/ now")
        self.assertEqual(redact_text("no secret here"), "no secret here")

    def test_password_with_colons(self) -> None:
        """
        (Outside test, session 12.)  An AMQP address reads C{\\:} and
        C{\\\\} in a password as Twisted's endpoint strings do, as the
        redaction always assumed: C{s3cr\\:et} is the password C{s3cr:et}
        (it was C{s3cr\\} and then an error quoting C{'et'}, a piece of
        the password).  Whatever follows C{password=} up to the next
        C{key=} is redacted, and an error never quotes a part that follows
        the password.
        """
        self.assertEqual(parse_amqp_address("amqp:host=h:password=s3cr\\:et:vhost=/")["password"],
                         "s3cr:et")
        self.assertEqual(parse_amqp_address("amqp:host=h:password=a\\\\b")["password"], "a\\b")
        self.assertEqual(redact_text("amqp:host=h:password=SekZZ2\\\\:tailZZ2:vhost=/:bogus=1"),
                         "amqp:host=h:password=***:vhost=/:bogus=1")
        self.assertEqual(redact_text("'amqp://guest:p@ssZZ7@127.0.0.1/' is a URL"),
                         "'amqp://guest:***@127.0.0.1/' is a URL")
        for listen in ("amqp:host=127.0.0.1:port=5672:user=guest:password=SekZZ2\\\\:tailZZ2:"
                       "vhost=/:bogus=1", "amqp://guest:p@ssZZ7@127.0.0.1/"):
            path = self.write("node: {region: eu1}\ntransports:\n  - {type: rabbitmq, listen: "
                              + json.dumps(listen) + "}\n")
            error = str(self.assertRaises(ConfigError, load_gateway_config, path, {}))
            for secret in ("SekZZ2", "tailZZ2", "ssZZ7"):
                self.assertNotIn(secret, error)
        self.assertIn("the part after password= is not key=value (a ':' in a password is "
                      "written '\\:')", str(self.assertRaises(
                          ValueError, parse_amqp_address, "amqp:host=h:password=a:b:vhost=/")))
        # A key given twice is refused (second outside test: the second user= was
        # the tail of a password with an unescaped colon, and was taken).
        self.assertIn("'amqp:host=h:user=u:password=Zqe:user=LEAKE': the key user is given twice",
                      str(self.assertRaises(ValueError, parse_amqp_address,
                                            "amqp:host=h:user=u:password=Zqe:user=LEAKE")))
        # (The key's name, not 'password=': the redaction would hide the rest.)
        self.assertIn("the key password is given twice", redact_text(str(self.assertRaises(
            ValueError, parse_amqp_address, "amqp:host=h:password=a:password=b"))))
        self.assertIn("is a URL; write it as amqp:host=HOST:port=PORT:user=USER:password=PASSWORD",
                      str(self.assertRaises(ValueError, parse_amqp_address,
                                            "amqp://guest:guest@h/")))

    def test_reload_diff_never_shows_a_secret(self) -> None:
        """
        A rotated shared secret appears in the reload diff as changed, not
        by value.
        """
        old = GatewayConfig(NodeConfig("eu1"), auth=AuthConfig(hs256_secret="demo-secret-0123456"))
        new = dataclasses.replace(old, auth=AuthConfig(hs256_secret="rotated-secret-012345"))
        live, _ = diff(old, new)
        self.assertEqual(live, ["auth.hs256_secret: '***' -> '***' (secret changed)"])
        # An address whose password alone changed says so too (second outside test,
        # session 12: both sides read the same, as if nothing had changed).
        self.assertEqual(describe_change("transports[0].listen",
                                         "amqp:host=h:password=old:vhost=/",
                                         "amqp:host=h:password=new:vhost=/"),
                         "transports[0].listen: 'amqp:host=h:password=***:vhost=/' -> "
                         "'amqp:host=h:password=***:vhost=/' (secret changed)")

    def test_empty_services_section(self) -> None:
        """
        Adding a C{services} section lists the new keys, not
        C{services: () -> '<absent>'}.
        """
        old = GatewayConfig(NodeConfig("eu1"))
        new = dataclasses.replace(old, services=(ServiceConfig("billing", "1.0.0"),))
        live, _ = diff(old, new)
        self.assertEqual(live, ["services[0].default_version: <absent> -> '1.0.0'",
                                "services[0].name: <absent> -> 'billing'"])

    def test_config_errors_redact_addresses(self) -> None:
        """
        A bad AMQP address is reported without its password.
        """
        path = self.write("region: eu1\nrouters:\n  - {transport: rabbitmq, address: "
                          "\"amqp:host=h:user=u:password=TopSecret1:vhost=/\"}\n")
        error = self.assertRaises(ConfigError, load_microservice_config, path, {})
        self.assertIn("password=***", str(error))
        self.assertNotIn("TopSecret1", str(error))

    def test_secret_of_the_wrong_type(self) -> None:
        """
        A secret of the wrong type is reported without its value.
        """
        path = self.write(GATEWAY + "auth: {hs256_secret: 12345678901234567890}\n")
        error = self.assertRaises(ConfigError, load_gateway_config, path, {})
        self.assertIn("auth.hs256_secret: must be a string, not an integer '***'", str(error))
        self.assertNotIn("12345678901234567890", str(error))

    def test_router_description_in_logs(self) -> None:
        """
        The microservice names its routers in its logs without passwords.
        """
        self.assertEqual(_describe_router("rabbitmq", "amqp:host=h:password=pw1:gateway=g"),
                         "rabbitmq:amqp:host=h:password=***:gateway=g")


SECURE = GATEWAY + """auth:
  require_authentication: true
  hs256_secret: demo-secret-0123456789abcdefghij
payload_limits:
  max_request_bytes_per_call: 1048576
"""


class HalfWrittenFileTests(FileTestCase):
    """
    The watcher applies a file only once two polls one interval apart saw
    it identical (or at once on SIGHUP).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.path = self.write(SECURE)
        self.seen: list = []
        self.watcher = ConfigWatcher(self.path, lambda p: load_gateway_config(p, {}),
                                     self.seen.append, self.clock,
                                     load_gateway_config(self.path, {}), interval=1.0)
        self.watcher.start()
        self.addCleanup(self.watcher.stop)

    def edit(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def test_truncated_before_auth_never_applied(self) -> None:
        """
        A file cut before C{auth:} (valid, but without authentication) seen
        by one poll is not applied; the complete file, once stable, is.
        """
        final = SECURE.replace("eu1", "eu2")
        self.edit(final[:final.index("auth:")])
        self.clock.advance(1.0)
        self.edit(final)
        self.clock.advance(1.0)
        self.assertEqual(self.seen, [])
        self.clock.advance(1.0)
        self.assertEqual(len(self.seen), 1)
        self.assertEqual(self.seen[0].node.region, "eu2")
        self.assertTrue(self.seen[0].auth.require_authentication)

    def test_truncated_mid_number_never_applied(self) -> None:
        """
        A file cut in the middle of a number (1048576 read as 104) is not
        applied while it keeps changing.
        """
        final = SECURE.replace("eu1", "eu2")
        self.edit(final[:final.index("1048576") + 3])
        self.clock.advance(1.0)
        self.edit(final)
        self.clock.pump([1.0, 1.0])
        self.assertEqual([c.payload_limits.max_request_bytes_per_call for c in self.seen],
                         [1048576])

    def test_sighup_applies_at_once(self) -> None:
        """
        A forced check (SIGHUP) does not wait for a second look.
        """
        self.edit(SECURE.replace("eu1", "eu3"))
        self.assertTrue(self.successResultOf(self.watcher.check(force=True)))
        self.assertEqual(self.seen[0].node.region, "eu3")

    def test_reading_runs_through_run_blocking(self) -> None:
        """
        Hashing and parsing the file run through the injected
        C{run_blocking} (a thread pool in the gateway), never on the
        caller's stack: the check waits for each piece of work.
        """
        queued: list = []

        def run_blocking(function: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            queued.append((function, args, d))
            return d

        loads: list = []
        watcher = ConfigWatcher(self.path, lambda p: loads.append(p) or load_gateway_config(p, {}),
                                self.seen.append, self.clock, load_gateway_config(self.path, {}),
                                run_blocking=run_blocking)
        self.edit(SECURE.replace("eu1", "eu4"))
        result = watcher.check(force=True)
        self.assertNoResult(result)
        self.assertEqual(loads, [])
        while queued:
            function, args, d = queued.pop(0)
            d.callback(function(*args))
        self.assertTrue(self.successResultOf(result))
        self.assertEqual((loads, self.seen[0].node.region), ([self.path], "eu4"))


    def test_sighup_during_a_poll_is_not_lost(self) -> None:
        """
        A forced check asked for while a poll is running runs once the poll
        is done.
        """
        queued: list = []

        def run_blocking(function: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            queued.append((function, args, d))
            return d

        watcher = ConfigWatcher(self.path, lambda p: load_gateway_config(p, {}),
                                self.seen.append, self.clock, load_gateway_config(self.path, {}),
                                run_blocking=run_blocking)
        poll = watcher.check()
        self.edit(SECURE.replace("eu1", "eu5"))
        self.assertFalse(self.successResultOf(watcher.check(force=True)))
        while queued:
            function, args, d = queued.pop(0)
            d.callback(function(*args))
        self.assertFalse(self.successResultOf(poll))
        self.assertEqual([c.node.region for c in self.seen], ["eu5"])


class WeakeningWarningTests(SynchronousTestCase):
    def test_warnings(self) -> None:
        """
        Turning authentication off, or removing a key source, is named.
        """
        old = GatewayConfig(NodeConfig("eu1"), auth=AuthConfig(
            require_authentication=True, hs256_secret="demo-secret-0123456789abcdefghij"))
        new = GatewayConfig(NodeConfig("eu1"))
        warnings = security_warnings(old, new)
        self.assertEqual(len(warnings), 3)
        self.assertIn("auth.require_authentication turned off", warnings[0])
        self.assertIn("auth.hs256_secret removed", warnings[1])
        self.assertIn("no token key is configured any more", warnings[2])
        self.assertEqual(security_warnings(new, old), [])

    def test_reload_logs_a_warning(self) -> None:
        """
        The gateway logs each weakening as a warning when it applies the
        reload (and never the secret itself).
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        secure = dataclasses.replace(deployment.config, auth=AuthConfig(
            require_authentication=True, hs256_secret="demo-secret-0123456789abcdefghij"))
        deployment.gateway.apply_config(secure)
        events: list = []
        with capturedLogs(events):
            deployment.gateway.apply_config(dataclasses.replace(secure, auth=AuthConfig()))
        warnings = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 3, warnings)
        self.assertIn("configuration reload weakens authentication: "
                      "auth.require_authentication turned off", warnings[0])
        self.assertNotIn("demo-secret", "\n".join(formatEvent(e) for e in events))


class SmallFixesTests(FileTestCase):
    def test_help_has_no_epytext(self) -> None:
        """
        C{stellarouter --help} shows plain text, not C{C{stellarouter}}.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertRaises(SystemExit, cli, ["--help"])
        self.assertIn("The stellarouter command: tools around", out.getvalue())
        self.assertNotIn("C{", out.getvalue())

    def test_check_imports_the_app(self) -> None:
        """
        C{config check} fails a microservice configuration whose app module
        cannot be imported (twistd would refuse it), and passes one that can.
        """
        path = self.write("app: stellarouter_no_such_module:service\nregion: eu1\n"
                          "routers: [{transport: tcp, address: \"tcp:host=h:port=1\"}]\n")
        out = io.StringIO()
        self.assertEqual(cli(["config", "check", path], out), 1)
        self.assertIn("app: cannot import 'stellarouter_no_such_module'", out.getvalue())
        good = self.write("app: examples.billing:service\nregion: eu1\n"
                          "routers: [{transport: tcp, address: \"tcp:host=h:port=1\"}]\n"
                          "endpoints: [{method: GET, path: /nope, timeout: 1}]\n")
        out = io.StringIO()
        self.assertEqual(cli(["config", "check", good], out), 1)
        self.assertIn("GET /nope is not an endpoint of this service", out.getvalue())

    def test_503_names_the_default_version(self) -> None:
        """
        When the configured default version has no instance, the 503 says
        which version it looked for.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("billing", "1.0.0")
        app.endpoint("GET", "/ping")(lambda ctx: RawResponse.text("pong"))
        deployment.add(app)
        deployment.gateway.apply_config(dataclasses.replace(
            deployment.config, services=(ServiceConfig("billing", "2.0.0"),)))
        response = deployment.request("GET", "/ping")
        self.assertEqual(response.status, 503)
        self.assertIn(b"no healthy instance of billing at its default version 2.0.0",
                      response.body)


class OverrideShapeTests(SynchronousTestCase):
    """
    Gateway endpoint overrides match announced templates by shape; one that
    matches nothing is reported, and fails closed when it adds claims.
    """

    def deploy(self, *overrides: EndpointOverride) -> InMemoryDeployment:
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = Microservice("echo", "1.0.0")
        app.endpoint("GET", "/echo/{x}")(lambda ctx: RawResponse.text(ctx.path_params["x"]))
        deployment.add(app)
        deployment.gateway.apply_config(dataclasses.replace(
            deployment.config, services=(ServiceConfig("echo", None, overrides),)))
        return deployment

    def test_parameter_names_do_not_matter(self) -> None:
        """
        An override of C{GET /echo/{id}} with claims protects the announced
        C{GET /echo/{x}} (it used to leave it anonymous).
        """
        deployment = self.deploy(EndpointOverride(
            "GET", "/echo/{id}", None, (ClaimRequirement("scope", "echo:read"),)))
        self.assertEqual(deployment.request("GET", "/echo/1").status, 401)

    def test_unmatched_claim_override_fails_closed(self) -> None:
        """
        A claim-carrying override that matches no announced endpoint (a
        typo) refuses the service's requests with a 503 naming it, and is
        logged as a warning.
        """
        events: list = []
        with capturedLogs(events):
            deployment = self.deploy(EndpointOverride(
                "GET", "/ecko/{id}", None, (ClaimRequirement("scope", "echo:read"),)))
            response = deployment.request("GET", "/echo/1")
        self.assertEqual(response.status, 503)
        self.assertIn(b"override GET /ecko/{id} of service echo (with requiring_claims) "
                      b"matches no endpoint", response.body)
        warnings = [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn]
        self.assertIn("gateway override GET /ecko/{id} of service echo matches no announced "
                      "endpoint; its service's requests are refused", "\n".join(warnings))
        self.assertEqual(deployment.gateway.proxy.overrides.unmatched,
                         {("echo", "GET", "/ecko/{id}")})

    def test_unmatched_plain_override_is_reported(self) -> None:
        """
        An unmatched override without claims is logged and harmless.
        """
        events: list = []
        with capturedLogs(events):
            deployment = self.deploy(EndpointOverride("GET", "/ecko/{id}", 5.0))
        self.assertEqual(deployment.request("GET", "/echo/1").status, 200)
        self.assertIn("matches no announced endpoint; it has no effect",
                      "\n".join(formatEvent(e) for e in events))


class AllowedVersionsTests(FileTestCase):
    """
    C{services[].allowed_versions} pins which versions of a service may
    register.
    """

    def whoami(self, version: str) -> Microservice:
        app = Microservice("billing", version)
        app.endpoint("GET", "/who")(lambda ctx: RawResponse.text(version))
        return app

    def registered(self, deployment: InMemoryDeployment) -> List[str]:
        return sorted(c.state.instance.version for c in deployment.gateway.connections
                      if c.state is not None)

    def test_unlisted_version_refused(self) -> None:
        """
        An instance announcing 9.9.9 cannot register and take the
        unversioned traffic (the highest version would win without a pin).
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.gateway.apply_config(dataclasses.replace(
            deployment.config, services=(ServiceConfig("billing", allowed_versions=("1.0.0",)),)))
        deployment.add(self.whoami("1.0.0"))
        events: list = []
        with capturedLogs(events):
            deployment.add(self.whoami("9.9.9"))
        self.assertEqual(self.registered(deployment), ["1.0.0"])
        self.assertEqual(deployment.request("GET", "/who").body, b"1.0.0")
        self.assertIn("HELLO refused: version 9.9.9 of service billing is not in its "
                      "allowed_versions (1.0.0)", "\n".join(formatEvent(e) for e in events))

    def test_reload_pin_disconnects(self) -> None:
        """
        A reload that pins the versions closes registered instances of other
        versions.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(self.whoami("1.0.0"))
        deployment.add(self.whoami("9.9.9"))
        self.assertEqual(deployment.request("GET", "/who").body, b"9.9.9")
        deployment.gateway.apply_config(dataclasses.replace(
            deployment.config, services=(ServiceConfig("billing", allowed_versions=("1.0.0",)),)))
        deployment.pump()
        self.assertEqual(deployment.request("GET", "/who").body, b"1.0.0")

    def test_parsed_and_checked(self) -> None:
        """
        The key is read as a list of versions; a default version outside it
        is a problem.
        """
        path = self.write(GATEWAY + "services:\n  - {name: billing, allowed_versions: [1.0.0, "
                          "'1.1.0'], default_version: 1.1.0}\n")
        config = load_gateway_config(path, {})
        self.assertEqual(config.services[0].allowed_versions, ("1.0.0", "1.1.0"))
        bad = self.write(GATEWAY + "services:\n  - {name: billing, allowed_versions: [1.0.0, "
                         "'1.2'], default_version: 2.0.0}\n")
        error = str(self.assertRaises(ConfigError, load_gateway_config, bad, {}))
        self.assertIn("services[0].allowed_versions[1]: '1.2' is not MAJOR.MINOR.PATCH", error)
        self.assertIn("services[0].default_version: 2.0.0 is not in allowed_versions (1.0.0)",
                      error)
