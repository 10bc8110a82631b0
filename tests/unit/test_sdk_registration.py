"""
Tests that registration checks every argument (so HELLO encoding cannot
fail later), and that a microservice whose HELLO a gateway rejects backs
off, logs the reason once per attempt and gives up when configured to.
"""

from __future__ import annotations

from typing import Any, List

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.models import ClaimRequirement, InstanceDescriptor, RegistrationLimits
from stellarouter.common.payloads import Hello, decode_hello, encode_hello
from stellarouter.config.microservice import MicroserviceConfig, RouterEndpointConfig, \
    parse_microservice_config
from stellarouter.common.enums import TransportType
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.gateway.hello import HelloRefused, accept_hello
from stellarouter.microservice.service import MicroserviceService
from stellarouter.testing.harness import GATEWAY_ADDRESS, InMemoryDeployment


def handler(ctx: Any) -> RawResponse:
    return RawResponse.text("x")


class RegistrationValidationTests(SynchronousTestCase):
    def assertRefused(self, argument: str, **kwargs: Any) -> None:
        """
        Registering C{GET /invoices} with C{kwargs} raises a ValueError that
        names the endpoint and C{argument}.
        """
        app = Microservice("billing", "1.0.0")
        error = self.assertRaises(ValueError, app.endpoint("GET", "/invoices", **kwargs),
                                  handler)
        self.assertIn("billing endpoint GET /invoices", str(error))
        self.assertIn(argument, str(error))
        self.assertEqual(app.descriptors(), ())

    def test_claims_of_the_wrong_shape(self) -> None:
        """
        Claims given as pairs, a string or a dict are refused at
        registration (they used to pass and break HELLO at connect time:
        issue 22's reproduction).
        """
        for claims in ([("scope", "x:write")], "scope", {"scope": "x:write"},
                       [ClaimRequirement("", "x")], [ClaimRequirement("scope", ["a", "b"])],
                       [ClaimRequirement("scope", 5)], [ClaimRequirement("scope", ())], 7):
            self.assertRefused("claims", claims=claims)

    def test_other_arguments(self) -> None:
        """
        Bad timeouts, limits, flags, methods and paths are refused, naming
        the argument.
        """
        for timeout in (0, -1, float("nan"), float("inf"), 86401, True, "5"):
            self.assertRefused("timeout", timeout=timeout)
        for limit in (-1, 1.5, "10", True):
            self.assertRefused("max_request_bytes", max_request_bytes=limit)
        self.assertRefused("idempotent", idempotent="yes")
        self.assertRefused("streaming", streaming=1)
        app = Microservice("billing", "1.0.0")
        error = self.assertRaises(ValueError, app.endpoint("G ET", "/x"), handler)
        self.assertIn("method", str(error))
        error = self.assertRaises(ValueError, app.endpoint("GET", "/a/{b"), handler)
        self.assertIn("path", str(error))
        error = self.assertRaises(ValueError, app.endpoint("GET", "/x"), "not a function")
        self.assertIn("not callable", str(error))
        error = self.assertRaises(ValueError, app.json, "GET", "/y", status=99)
        self.assertIn("status", str(error))

    def test_good_arguments(self) -> None:
        """
        Valid arguments are kept as given (any-of claim values as tuples).
        """
        app = Microservice("billing", "1.0.0")
        app.endpoint("POST", "/x", timeout=2, claims=[ClaimRequirement("scope", ("a", "b")),
                                                       ClaimRequirement("sub")],
                     max_request_bytes=0, idempotent=True, streaming=True)(handler)
        (d,) = app.descriptors()
        self.assertEqual((d.default_timeout, d.requiring_claims, d.max_request_bytes),
                         (2.0, (ClaimRequirement("scope", ("a", "b")),
                                ClaimRequirement("sub")), 0))

    @settings(max_examples=300, deadline=None)
    @given(
        method=st.sampled_from(["GET", "post", "G ET", "", "PATCH"]),
        path=st.sampled_from(["/a", "/a/{id}", "a", "/a/{", "/x y"]),
        timeout=st.one_of(st.floats(allow_nan=True), st.integers(-5, 100_000), st.booleans(),
                          st.text(max_size=3), st.none()),
        claims=st.one_of(
            st.lists(st.builds(ClaimRequirement, st.text(max_size=5), st.one_of(
                st.none(), st.text(max_size=5), st.tuples(st.text(max_size=3)),
                st.lists(st.text(max_size=3)), st.integers()))),
            st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
            st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3)))),
        limit=st.one_of(st.none(), st.integers(-3, 10**12), st.floats(), st.booleans()),
        idempotent=st.one_of(st.none(), st.booleans(), st.integers(0, 2)),
        streaming=st.one_of(st.booleans(), st.integers(0, 2), st.none()),
    )
    def test_registered_means_announceable(self, method: Any, path: Any, timeout: Any,
                                           claims: Any, limit: Any, idempotent: Any,
                                           streaming: Any) -> None:
        """
        Whatever the arguments, registration either raises ValueError or
        gives an endpoint that HELLO encodes and a gateway decodes.
        """
        app = Microservice("billing", "1.0.0")
        try:
            app.endpoint(method, path, timeout=timeout, claims=claims,
                         max_request_bytes=limit, idempotent=idempotent,
                         streaming=streaming)(handler)
        except ValueError:
            self.assertEqual(app.descriptors(), ())
            return
        hello = Hello(InstanceDescriptor("i-1", "billing", "1.0.0", "eu1"), app.descriptors())
        self.assertEqual(decode_hello(encode_hello(hello)).endpoints, app.descriptors())


def rejected_app() -> Microservice:
    """
    An app every gateway rejects: it claims a path of the gateway's own.
    """
    app = Microservice("rejected", "1.0.0")
    app.endpoint("GET", "/health/mine")(handler)
    return app


class HelloRejectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.deployment = InMemoryDeployment()
        self.exits: List[int] = []

    def start(self, max_rejections: Any = None) -> MicroserviceService:
        config = MicroserviceConfig(
            "eu1", (RouterEndpointConfig(TransportType.INMEMORY, GATEWAY_ADDRESS),),
            max_hello_rejections=max_rejections)
        service = MicroserviceService(rejected_app(), config, self.deployment.clock,
                                      self.deployment.network, give_up=self.exits.append,
                                      rejection_jitter=lambda: 0, initial_delay=0.1,
                                      jitter=lambda: 0)
        service.startService()
        self.deployment.pump()
        return service

    def rejections_logged(self) -> List[dict]:
        return [e for e in self.events if "HELLO refused" in str(e.get("reason", ""))
                and e.get("log_namespace", "").startswith("stellarouter.microservice")]

    def advance(self, seconds: float) -> None:
        self.deployment.clock.advance(seconds)
        self.deployment.pump()

    def test_backoff_grows_to_a_minute(self) -> None:
        """
        Each rejection is logged once with the gateway's reason, and the
        next HELLO waits 1, 2, 4 ... then 60 s (it used to be about once a
        second forever: issue 22's reproduction).
        """
        service = self.start()
        self.assertEqual(len(self.rejections_logged()), 1)
        for expected, delay in enumerate([1, 2, 4, 8, 16, 32, 60, 60], start=2):
            self.advance(delay - 0.01)
            self.assertEqual(len(self.rejections_logged()), expected - 1, delay)
            self.advance(0.01)
            self.assertEqual(len(self.rejections_logged()), expected, delay)
        event = self.rejections_logged()[-1]
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIn("reserved for the gateway's own endpoints", event["reason"])
        self.assertEqual(service.rejections, {0: 9})
        self.assertEqual(self.exits, [])
        service.stopService()
        self.deployment.pump()
        self.assertEqual([c for c in self.deployment.clock.getDelayedCalls()
                          if getattr(c.func, "__name__", "") == "_retry"], [])

    def test_gives_up(self) -> None:
        """
        After C{max_hello_rejections} rejections in a row the service stops
        dialling and asks the process to exit with status 1.
        """
        self.start(max_rejections=3)
        self.advance(1)
        self.assertEqual(self.exits, [])
        self.advance(2)
        self.assertEqual(self.exits, [1])
        self.advance(600)
        self.assertEqual(len(self.rejections_logged()), 3)
        self.assertEqual(self.exits, [1])

    def test_config_key(self) -> None:
        """
        C{max_hello_rejections} is read from YAML (at least 1; default: keep
        trying).
        """
        base = {"region": "eu1", "routers": [{"transport": "inmemory", "address": "gw"}]}
        self.assertIsNone(parse_microservice_config(dict(base)).max_hello_rejections)
        self.assertEqual(parse_microservice_config(
            dict(base, max_hello_rejections=5)).max_hello_rejections, 5)
        from stellarouter.config import ConfigError
        self.assertRaises(ConfigError, parse_microservice_config,
                          dict(base, max_hello_rejections=0))



class IdentityCharacterTests(SynchronousTestCase):
    BAD_ID = 'evil\x1b[2J\n\t\t{"cid":"forged-hello"}'

    def test_gateway_refuses_control_characters(self) -> None:
        """
        A HELLO whose instance id holds ESC and a newline (F2: it cleared
        the operator's screen and split the gateway's log lines) is refused,
        the reason naming the field and showing the id escaped.
        """
        instance = InstanceDescriptor(self.BAD_ID, "billing", "1.0.0", "eu1")
        payload = encode_hello(Hello(instance, ()))
        error = self.assertRaises(HelloRefused, accept_hello, payload,
                                  RegistrationLimits(), (), {}, None)
        reason = str(error)
        self.assertIn("invalid HELLO: HELLO.instance.instance_id must be 1 to 256 printable "
                      "ASCII characters without spaces, not 'evil\\x1b[2J\\n", reason)
        self.assertTrue(reason.isprintable(), reason)

    def test_sdk_refuses_them_before_dialling(self) -> None:
        """
        The SDK refuses to start with such an instance id or region (what a
        gateway would refuse), as C{config check} does for the YAML.
        """
        app = Microservice("billing", "1.0.0")
        routers = (RouterEndpointConfig(TransportType.INMEMORY, GATEWAY_ADDRESS),)
        for config in (MicroserviceConfig("eu1", routers, instance_id=self.BAD_ID),
                       MicroserviceConfig("eu 1", routers)):
            error = self.assertRaises(ValueError, MicroserviceService, app, config, Clock())
            self.assertIn("must be 1 to 256 printable ASCII characters", str(error))
