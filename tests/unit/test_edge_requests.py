"""
Issue 17, request level: what the edge refuses or rewrites in a request
before it reaches a microservice (versions, unknown-but-known routes, HEAD,
client-controlled headers, path parameters, scope claims), and the JWT and
cancellation behaviour that must not regress.  Each test replays an
issue reproduction in memory, on an injected clock.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Dict, Iterator, List

import jwt
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from stellarouter.common.enums import CancelReason
from stellarouter.common.errors import InvalidDescriptor
from stellarouter.common.models import ClaimRequirement, parse_version
from stellarouter.config import ConfigError
from stellarouter.config.gateway import (
    AuthConfig,
    EndpointOverride,
    ServiceConfig,
    parse_gateway_config,
)
from stellarouter.gateway.auth import InvalidToken, TokenVerifier, unmet_requirement
from stellarouter.gateway.resolver import Route
from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import HttpResponse, InMemoryHttpClient

SECRET = "edge-request-secret-0123456789abcdef"
PROBLEM = "application/problem+json"
EXPORT_CHUNKS = 128


def token(**claims: Any) -> str:
    body: Dict[str, Any] = {"exp": int(time.time()) + 600, "sub": "alice"}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


def make_app() -> Microservice:
    """
    A Billing-like service that records what its handlers saw.
    """
    app = Microservice("billing", "1.0.0")
    app.seen = []  # type: ignore[attr-defined]
    app.produced = []  # type: ignore[attr-defined]

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        app.seen.append(ctx)  # type: ignore[attr-defined]
        return RawResponse.text("pong")

    @app.endpoint("GET", "/invoices/{id}")
    def invoice(ctx: Any) -> RawResponse:
        app.seen.append(ctx)  # type: ignore[attr-defined]
        return RawResponse.text("invoice " + ctx.path_params["id"])

    @app.endpoint("DELETE", "/invoices/{id}",
                  claims=[ClaimRequirement("scope", "billing:write")])
    def delete(ctx: Any) -> RawResponse:
        app.seen.append(ctx)  # type: ignore[attr-defined]
        return RawResponse(204)

    @app.endpoint("GET", "/invoices/{id}/export")
    def export(ctx: Any) -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            for _ in range(EXPORT_CHUNKS):  # 8 MiB: many flow-control windows
                app.produced.append(1)  # type: ignore[attr-defined]
                yield b"x" * 65536
        return StreamingResponse(200, [("Content-Type", "application/octet-stream")], chunks())

    return app


class EdgeRequestCase(SynchronousTestCase):
    """
    A gateway with a shared secret and one Billing-like instance.
    """

    def setUp(self) -> None:
        self.deployment = InMemoryDeployment(auth=AuthConfig(hs256_secret=SECRET))
        self.app = make_app()
        self.instance = self.deployment.add(self.app)
        self.addCleanup(self.deployment.stop)

    def raw(self, data: bytes, turns: int = 3) -> bytes:
        """
        Write raw bytes on a new connection and return what came back.
        """
        client = self.deployment.http()
        client.channel.dataReceived(data)
        for _ in range(turns):
            self.deployment.pump()
        return client.transport.value()

    def assertProblem(self, response: HttpResponse, status: int, kind: str) -> dict:
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header("content-type"), PROBLEM)
        problem = json.loads(response.body)
        self.assertEqual(problem["type"], "https://stellarouter.dev/problems/" + kind)
        self.assertEqual(problem["correlation_id"], response.header("x-correlation-id"))
        return problem

    def reconfigure(self, **changes: Any) -> None:
        """
        Apply the running configuration with C{changes} (as a reload would).
        """
        gateway = self.deployment.gateway
        config = gateway.config
        http = {k: v for k, v in changes.items() if k in {f.name for f in
                                                          dataclasses.fields(config.http)}}
        rest = {k: v for k, v in changes.items() if k not in http}
        gateway.apply_config(dataclasses.replace(
            config, http=dataclasses.replace(config.http, **http), **rest))


class LongVersionTests(EdgeRequestCase):
    def test_5000_digit_version_is_400(self) -> None:
        """
        X-Stella-Version with a 5000-digit part is a 400 bad-version problem,
        not a 500 with a traceback (item 2).
        """
        response = self.deployment.request(
            "GET", "/ping", headers=[("X-Stella-Version", "9" * 5000 + ".0.0")])
        problem = self.assertProblem(response, 400, "bad-version")
        self.assertLess(len(problem["detail"]), 200)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.app.seen, [])  # type: ignore[attr-defined]

    def test_parts_are_bounded(self) -> None:
        """
        A part may have 16 digits up to 2**53 - 1; more is not a version.
        """
        biggest = 2 ** 53 - 1
        self.assertEqual(parse_version(f"{biggest}.0.1"), (biggest, 0, 1))
        for text in (f"{biggest + 1}.0.0", "0." + "1" * 17 + ".0", "1.0." + "9" * 4301):
            self.assertRaises(InvalidDescriptor, parse_version, text)


class KnownRouteTests(EdgeRequestCase):
    def stop_instance(self) -> None:
        self.instance.stopService()
        self.deployment.pump()
        self.assertEqual(self.deployment.gateway.routing_state.connections(), [])

    def test_recently_served_route_is_503(self) -> None:
        """
        With the only instance gone, a route it served is 503 with
        Retry-After, for any of its paths; a path no one knows is still 404
        (item 4).
        """
        self.stop_instance()
        response = self.deployment.request("GET", "/ping")
        self.assertProblem(response, 503, "no-route")
        self.assertEqual(response.header("retry-after"), "1")
        response = self.deployment.request("GET", "/invoices/inv-7/export")
        self.assertProblem(response, 503, "no-route")
        self.assertProblem(self.deployment.request("GET", "/nope"), 404, "not-found")
        self.assertProblem(self.deployment.request("POST", "/ping"), 404, "not-found")

    def test_memory_ends_after_the_window(self) -> None:
        """
        A route remembered for C{http.forget_routes_after} seconds is 503
        until then and 404 afterwards.
        """
        self.reconfigure(forget_routes_after=60.0)
        self.stop_instance()
        self.deployment.clock.advance(59.9)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 503)
        self.deployment.clock.advance(0.1)
        self.assertEqual(self.deployment.request("GET", "/ping").status, 404)

    def test_route_back_is_served(self) -> None:
        """
        When an instance serves the route again, it is routed (the memory
        does not shadow live routes).
        """
        self.stop_instance()
        self.assertEqual(self.deployment.request("GET", "/ping").status, 503)
        self.deployment.add(make_app())
        self.assertEqual(self.deployment.request("GET", "/ping").status, 200)

    def test_memory_is_bounded(self) -> None:
        """
        The memory holds at most C{capacity} departed routes: the oldest
        departure is forgotten first.
        """
        from stellarouter.gateway.memory import RouteMemory

        memory = RouteMemory(window=600.0, capacity=2)
        for i, path in enumerate(("/a", "/b", "/c")):
            memory.departed(Route("svc", "GET", path, ()), now=float(i))
        self.assertEqual(len(memory), 2)
        self.assertIsNone(memory.find("GET", "/a", now=3.0))
        self.assertEqual(memory.find("GET", "/b", now=3.0).template, "/b")  # type: ignore
        self.assertEqual(memory.find("GET", "/c", now=3.0).template, "/c")  # type: ignore

    def test_configured_route_is_503(self) -> None:
        """
        A route the configuration names (services[].endpoints) is 503 while
        no instance serves it, even one never announced; removing it from the
        configuration makes it 404 again.
        """
        self.reconfigure(services=(ServiceConfig("reports", endpoints=(
            EndpointOverride("GET", "/reports/{day}", timeout=5.0),)),))
        response = self.deployment.request("GET", "/reports/monday")
        problem = self.assertProblem(response, 503, "no-route")
        self.assertIn("reports", problem["detail"])
        self.reconfigure(services=())
        self.assertEqual(self.deployment.request("GET", "/reports/monday").status, 404)


class HeadTests(EdgeRequestCase):
    def test_head_of_a_stream_answers_from_the_head(self) -> None:
        """
        HEAD of an endless streamed export is answered from the response
        head, the upstream stream is stopped at once (a CANCEL marked
        C{head_only}, not counted as a cancellation), and a request
        pipelined behind it is answered (item 5).
        """
        client = self.deployment.http()
        client.channel.dataReceived(
            b"HEAD /invoices/x/export?bytes=8000000000 HTTP/1.1\r\nHost: gw\r\n\r\n"
            b"GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n")
        for _ in range(5):
            self.deployment.pump()
        raw = client.transport.value()
        head, _, rest = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200])
        self.assertIn(b"Content-Type: application/octet-stream", head)
        self.assertNotIn(b"Transfer-Encoding", head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:200])
        self.assertTrue(rest.endswith(b"pong"))
        # The stream was cancelled: at most one window was produced.
        self.assertLessEqual(len(self.app.produced), 17)  # type: ignore[attr-defined]
        connection = self.deployment.gateway.connections[0]
        self.assertEqual((connection.in_flight.cancels_sent, connection.in_flight.heads_answered),
                         ({}, 1))
        self.assertFalse(client.transport.disconnecting)

    def test_head_of_a_whole_response(self) -> None:
        """
        HEAD of a whole (not streamed) response still gets its head and no
        body, and nothing is cancelled.
        """
        raw = self.raw(b"HEAD /ping HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(raw.endswith(b"\r\n\r\n"))
        self.assertIn(b"Content-Length: 4\r\n", raw)
        self.assertEqual(self.deployment.gateway.connections[0].in_flight.cancels_sent, {})


class ClientHeaderTests(EdgeRequestCase):
    def seen_headers(self) -> Any:
        self.assertEqual(len(self.app.seen), 1)  # type: ignore[attr-defined]
        return self.app.seen[0].headers  # type: ignore[attr-defined]

    def test_duplicate_authorization_is_400(self) -> None:
        """
        Two Authorization headers are a 400 problem; nothing reaches the
        service (item 7: a forged second token cannot ride along).
        """
        good = token(scope="billing:write")
        raw = self.raw(b"DELETE /invoices/1 HTTP/1.1\r\nHost: gw\r\n"
                       b"Authorization: Bearer " + good.encode() + b"\r\n"
                       b"Authorization: Bearer forged\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:100])
        self.assertIn(b"application/problem+json", raw)
        self.assertEqual(self.app.seen, [])  # type: ignore[attr-defined]

    def test_duplicate_host_is_400(self) -> None:
        """
        Two Host headers are a 400 problem.
        """
        raw = self.raw(b"GET /ping HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:100])
        self.assertEqual(self.app.seen, [])  # type: ignore[attr-defined]

    def test_http_1_1_without_host_is_400(self) -> None:
        """
        HTTP/1.1 without Host is a 400 problem (RFC 9112 section 3.2);
        HTTP/1.0 without Host is served.
        """
        raw = self.raw(b"GET /ping HTTP/1.1\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:100])
        self.assertIn(b"Host", raw)
        raw = self.raw(b"GET /ping HTTP/1.0\r\n\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.0 200 "), raw[:100])

    def test_client_address_replaces_untrusted_values(self) -> None:
        """
        From a peer not in trusted_proxies, incoming X-Forwarded-For and
        Forwarded are dropped and the gateway's own (the peer's address) are
        forwarded; an incoming X-Correlation-Id never reaches the service.
        """
        response = self.deployment.request("GET", "/ping", headers=[
            ("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=6.6.6.6"),
            ("X-Correlation-Id", "11111111-1111-1111-1111-111111111111")])
        self.assertEqual(response.status, 200)
        headers = self.seen_headers()
        self.assertEqual(headers.get_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(headers.get_all("forwarded"), ["for=127.0.0.1"])
        self.assertNotIn("x-correlation-id", headers)
        self.assertNotEqual(response.header("x-correlation-id"),
                            "11111111-1111-1111-1111-111111111111")
        self.app.seen.clear()  # type: ignore[attr-defined]
        self.deployment.request("GET", "/ping")
        headers = self.seen_headers()
        self.assertEqual(headers.get_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertNotIn("forwarded", headers)  # only when the request carried one

    def test_forwarded_proto(self) -> None:
        """
        An incoming X-Forwarded-Proto never reaches the service; the gateway
        writes C{https} for a request that came over TLS and nothing for
        plain HTTP (issue 25: a bridged Klein app's C{isSecure}).
        """
        self.deployment.request("GET", "/ping", headers=[("X-Forwarded-Proto", "https")])
        self.assertNotIn("x-forwarded-proto", self.seen_headers())
        self.app.seen.clear()  # type: ignore[attr-defined]
        client = InMemoryHttpClient(self.deployment.gateway.site, _TLSTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
        client.send("GET", "/ping", headers=[("X-Forwarded-Proto", "http")])
        self.deployment.pump()
        self.assertEqual(self.seen_headers().get_all("x-forwarded-proto"), ["https"])
        client.disconnect()

    def test_trusted_proxy_values_are_kept(self) -> None:
        """
        From a trusted proxy, incoming values are kept and the peer's
        address appended.
        """
        self.reconfigure(trusted_proxies=("127.0.0.0/8",))
        response = self.deployment.request("GET", "/ping", headers=[
            ("X-Forwarded-For", "6.6.6.6, 10.0.0.1"), ("Forwarded", 'for="[2001:db8::1]"')])
        self.assertEqual(response.status, 200)
        headers = self.seen_headers()
        self.assertEqual(headers.get_all("x-forwarded-for"), ["6.6.6.6, 10.0.0.1, 127.0.0.1"])
        self.assertEqual(headers.get_all("forwarded"), ['for="[2001:db8::1]", for=127.0.0.1'])

    def test_forward_authorization_per_route(self) -> None:
        """
        Authorization is forwarded by default; with forward_authorization
        false on a route the service gets the verified claims only.
        """
        good = token(scope="billing:write")
        response = self.deployment.request("DELETE", "/invoices/1",
                                           headers=[("Authorization", "Bearer " + good)])
        self.assertEqual(response.status, 204)
        self.assertEqual(self.seen_headers().get("authorization"), "Bearer " + good)
        self.app.seen.clear()  # type: ignore[attr-defined]
        self.reconfigure(services=(ServiceConfig("billing", endpoints=(
            EndpointOverride("DELETE", "/invoices/{id}", forward_authorization=False),)),))
        response = self.deployment.request("DELETE", "/invoices/1",
                                           headers=[("Authorization", "Bearer " + good)])
        self.assertEqual(response.status, 204)
        self.assertNotIn("authorization", self.seen_headers())
        self.assertEqual(self.app.seen[0].claims["scope"], "billing:write")  # type: ignore

    def test_settings_are_read_and_checked(self) -> None:
        """
        trusted_proxies, forget_routes_after, max_remembered_routes and
        forward_authorization are read from YAML; bad values name their key.
        """
        config = parse_gateway_config({
            "node": {"region": "eu1"}, "transports": [{"type": "inmemory", "listen": "x"}],
            "http": {"trusted_proxies": ["10.0.0.0/8", "::1"], "forget_routes_after": 30,
                     "max_remembered_routes": 10},
            "services": [{"name": "billing", "endpoints": [
                {"method": "GET", "path": "/ping", "forward_authorization": False}]}]})
        self.assertEqual(config.http.trusted_proxies, ("10.0.0.0/8", "::1"))
        self.assertEqual((config.http.forget_routes_after, config.http.max_remembered_routes),
                         (30.0, 10))
        self.assertFalse(config.services[0].endpoints[0].forward_authorization)
        error = self.assertRaises(ConfigError, parse_gateway_config, {
            "node": {"region": "eu1"}, "transports": [{"type": "inmemory", "listen": "x"}],
            "http": {"trusted_proxies": ["10.0.0.300"], "forget_routes_after": -1,
                     "max_remembered_routes": 0}})
        self.assertIn("http.trusted_proxies[0]", str(error))
        self.assertIn("http.forget_routes_after", str(error))
        self.assertIn("http.max_remembered_routes", str(error))


class PathParameterTests(EdgeRequestCase):
    def test_refused_segments(self) -> None:
        """
        NUL, an encoded slash and dot segments (encoded or not) are 400
        problems and never reach a handler (item 8).
        """
        for path in ("/invoices/%2e%2e", "/invoices/%2E", "/invoices/..", "/invoices/.",
                     "/invoices/a%2Fb", "/invoices/a%2fb", "/invoices/%00",
                     "/invoices/a%00b/export", "/unknown/%00"):
            response = self.deployment.request("GET", path)
            self.assertProblem(response, 400, "bad-request")
        self.assertEqual(self.app.seen, [])  # type: ignore[attr-defined]

    def test_other_encodings_still_decode(self) -> None:
        """
        Other percent-encoded bytes are decoded into the parameter as before,
        dots inside a value included.
        """
        for path, value in (("/invoices/a%20b", "a b"), ("/invoices/inv...1", "inv...1"),
                            ("/invoices/%2e%2e%2e", "...")):
            response = self.deployment.request("GET", path)
            self.assertEqual((response.status, response.body), (200, b"invoice " +
                                                                value.encode()))


class ScopeTests(SynchronousTestCase):
    def test_only_ascii_space_separates(self) -> None:
        """
        scope values split on ASCII space only: a no-break space, tab or
        newline does not make a second scope (item 9).
        """
        need = [ClaimRequirement("scope", "billing:write")]
        for joined in ("billing:read\u00a0billing:write", "billing:read\tbilling:write",
                       "billing:read\nbilling:write", "billing:read\u2003billing:write"):
            self.assertIsNotNone(unmet_requirement({"scope": joined}, need), repr(joined))
        for joined in ("billing:read billing:write", "billing:write", "  billing:write  "):
            self.assertIsNone(unmet_requirement({"scope": joined}, need), repr(joined))

    def test_through_the_gateway(self) -> None:
        """
        The no-break-space token of the reproduction gets 403 from the
        gateway.
        """
        deployment = InMemoryDeployment(auth=AuthConfig(hs256_secret=SECRET))
        self.addCleanup(deployment.stop)
        app = make_app()
        deployment.add(app)
        bad = token(scope="billing:read\u00a0billing:write")
        response = deployment.request("DELETE", "/invoices/1",
                                      headers=[("Authorization", "Bearer " + bad)])
        self.assertEqual(response.status, 403)
        self.assertEqual(app.seen, [])  # type: ignore[attr-defined]


class KeptJwtTests(SynchronousTestCase):
    """
    Regression pins of the "Keep" list: crit and an oversized token (alg
    none, algorithm confusion, exp/nbf/iss/aud are in test_auth.py).
    """

    def setUp(self) -> None:
        self.verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET, leeway=0))

    def test_unknown_crit_is_refused(self) -> None:
        """
        A token marking an extension critical that the gateway does not
        understand is refused.
        """
        signed = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256",
                            headers={"crit": ["exp-v2"], "exp-v2": 1})
        reason = self.assertRaises(InvalidToken, self.verifier.verify, signed).reason
        self.assertIn("critical", reason.lower())

    def test_megabyte_token_is_refused_unparsed(self) -> None:
        """
        A 1 MB token is refused by its size, before any decoding.
        """
        huge = token(pad="p" * 1024 * 1024)
        reason = self.assertRaises(InvalidToken, self.verifier.verify, huge).reason
        self.assertIn("too long", reason)

    def test_cancel_on_client_disconnect(self) -> None:
        """
        A client leaving mid-stream cancels the request upstream (reason
        ClientDisconnected) and the stream stops.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        app = make_app()
        deployment.add(app)
        client = deployment.http()
        client.send("GET", "/invoices/x/export")
        client.channel.pauseProducing()  # a client that does not read
        deployment.pump()
        # The stream has begun but waits for the client (with the response
        # budget's credit, its head goes out with its first bytes).
        connection = deployment.gateway.connections[0]
        self.assertEqual(connection.in_flight.cancels_sent, {})
        self.assertLess(len(app.produced), EXPORT_CHUNKS)  # type: ignore[attr-defined]
        client.disconnect()
        deployment.pump()
        self.assertLess(len(app.produced), EXPORT_CHUNKS)  # type: ignore[attr-defined]
        self.assertEqual(connection.in_flight.cancels_sent,
                         {CancelReason.CLIENT_DISCONNECTED.value: 1})


class ClientAddressPolicyTests(SynchronousTestCase):
    def test_peer_forms(self) -> None:
        """
        IPv4 and IPv6 peers become X-Forwarded-For and RFC 7239 Forwarded
        elements (IPv6 quoted in brackets); a peer without an IP address is
        "unknown" and never trusted.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        from stellarouter.gateway.forwarding import ClientAddressPolicy

        policy = ClientAddressPolicy(("10.0.0.0/8", "::1"))
        self.assertEqual(policy.peer(IPv4Address("TCP", "10.1.2.3", 1)),
                         ("10.1.2.3", "for=10.1.2.3", True))
        self.assertEqual(policy.peer(IPv4Address("TCP", "192.0.2.1", 1)),
                         ("192.0.2.1", "for=192.0.2.1", False))
        self.assertEqual(policy.peer(IPv6Address("TCP", "::1", 1)),
                         ("::1", 'for="[::1]"', True))
        self.assertEqual(policy.peer(UNIXAddress(b"/tmp/sock")),
                         ("unknown", "for=unknown", False))

    def test_cache_is_bounded(self) -> None:
        """
        The per-peer cache never holds more than its bound, however many
        client addresses connect.
        """
        from twisted.internet.address import IPv4Address

        from stellarouter.gateway import forwarding

        policy = forwarding.ClientAddressPolicy()
        for i in range(forwarding._CACHE_SIZE + 10):
            policy.own_headers(IPv4Address("TCP", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1))
        self.assertLessEqual(len(policy._cache), forwarding._CACHE_SIZE)
        self.assertLessEqual(len(policy._own), forwarding._CACHE_SIZE)


@implementer(ISSLTransport)
class _TLSTransport(StringTransport):
    """
    A client connection that came over TLS, as twisted.web sees one.
    """

    def getPeerCertificate(self) -> None:
        return None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass
