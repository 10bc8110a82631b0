"""
The admin listener's connections (L{stellarouter.gateway.admin_listener}):
a short idle timeout, a deadline for each request, a connection cap, and
refusals logged at a bounded rate; C{admin.idle_timeout} and
C{admin.max_connections} validated up front and applied on reload.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, List

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.models import ClaimRequirement
from stellarouter.config.admin import AdminConfig
from stellarouter.config.errors import ConfigError
from stellarouter.config.gateway import GatewayConfig, parse_gateway_config
from stellarouter.gateway.admin_listener import AdminChannel, RateLimitedLog
from stellarouter.common.addresses import describe_address
from stellarouter.gateway.service import owner_only
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import InMemoryHttpClient

BASE = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:5100"}]}
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class AdminLimitsConfigTests(SynchronousTestCase):
    """
    C{admin.idle_timeout} and C{admin.max_connections}: typed, bounded,
    with defaults.
    """

    def parse(self, **admin: Any) -> GatewayConfig:
        return parse_gateway_config(dict(BASE, admin=admin))

    def problems(self, **admin: Any) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.parse(**admin)
        return str(caught.exception)

    def test_defaults(self) -> None:
        """
        Ten seconds and 64 connections unless configured.
        """
        admin = self.parse().admin
        self.assertEqual((admin.idle_timeout, admin.max_connections), (10.0, 64))
        self.assertEqual((AdminConfig().idle_timeout, AdminConfig().max_connections), (10.0, 64))

    def test_configured(self) -> None:
        """
        An integer or a fractional number of seconds; an integer cap.
        """
        admin = self.parse(idle_timeout=2.5, max_connections=4).admin
        self.assertEqual((admin.idle_timeout, admin.max_connections), (2.5, 4))
        self.assertEqual(self.parse(idle_timeout=30).admin.idle_timeout, 30.0)

    def test_refused(self) -> None:
        """
        Values out of range or of the wrong type are refused naming the key.
        """
        self.assertIn("admin.idle_timeout: must be in [0.1, 3600] seconds, not 0",
                      self.problems(idle_timeout=0))
        self.assertIn("admin.idle_timeout: must be in [0.1, 3600] seconds, not -1",
                      self.problems(idle_timeout=-1))
        self.assertIn("admin.idle_timeout: must be a number", self.problems(idle_timeout="10s"))
        self.assertIn("admin.max_connections: must be in [1, 10000], not 0",
                      self.problems(max_connections=0))
        self.assertIn("admin.max_connections: must be an integer",
                      self.problems(max_connections=2.5))
        self.assertIn("admin.max_connections: must be an integer",
                      self.problems(max_connections=True))


class AdminListenerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment()
        self.clock = self.deployment.clock
        self.site = self.deployment.gateway.admin_site
        self.events: List[dict] = []
        self.patch(RateLimitedLog, "log", Logger(observer=self.events.append))
        self.open: List[Any] = []
        self.addCleanup(self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        """
        Every connection gone, the gateway stopped: no timer is left.
        """
        for protocol in self.open:
            if protocol.transport is not None:
                protocol.connectionLost(Failure(ConnectionDone("closed")))
        self.deployment.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def configure(self, **admin: Any) -> None:
        config = self.deployment.gateway.config
        self.deployment.gateway.apply_config(dataclasses.replace(
            config, admin=dataclasses.replace(config.admin, **admin)))

    def connect(self) -> InMemoryHttpClient:
        client = InMemoryHttpClient(self.site, host="127.0.0.1:9901")
        self.open.append(client.channel)
        return client

    def lines(self) -> List[str]:
        return [formatEvent(e) for e in self.events]

    def raw(self, head: bytes) -> bytes:
        """
        Write C{head} on a new admin connection: what it is answered.
        """
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        self.open.append(channel)
        channel.dataReceived(head)
        return transport.value()


class IdleTimeoutTests(AdminListenerTestCase):
    """
    A connection that sends nothing, or a request that trickles in, is
    closed after C{admin.idle_timeout} (ten seconds by default), not
    twisted.web's sixty.
    """

    def test_silent_connection_closed(self) -> None:
        """
        A connection that sends nothing is closed ten seconds after it
        opened, and ten seconds after its last answer.
        """
        client = self.connect()
        self.clock.advance(10 - 0.01)
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(0.01)
        self.assertTrue(client.transport.disconnecting)

        kept = self.connect()
        kept.send("GET", "/status")
        response = kept.response()
        assert response is not None
        self.assertEqual(response.status, 200)
        self.clock.advance(10 - 0.01)
        self.assertFalse(kept.transport.disconnecting)
        self.clock.advance(0.01)
        self.assertTrue(kept.transport.disconnecting)

    def test_trickling_request_refused(self) -> None:
        """
        A request head sent a byte every few seconds (never idle for ten) is
        answered 408 and the connection closed ten seconds after its first
        byte; the line is logged.
        """
        client = self.connect()
        request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        client.channel.dataReceived(request[:1])
        for byte in request[1:4]:
            self.clock.advance(3)
            client.channel.dataReceived(bytes([byte]))
        self.clock.advance(1 - 0.01)
        self.assertFalse(client.transport.disconnecting)  # 9.99 s after the first byte
        self.clock.advance(0.01)
        self.assertTrue(client.transport.disconnecting)
        answer = client.transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer)
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        self.assertEqual(body["detail"], "an admin request must arrive in full within 10s of "
                                         "its first byte (admin.idle_timeout)")
        self.assertEqual(self.lines(), [
            "admin listener closed the connection of IPv4Address(type='TCP', host='127.0.0.1', "
            "port=40000): its request did not arrive in full within 10s (admin.idle_timeout)"])

    def test_trickling_body_refused(self) -> None:
        """
        The deadline covers the body too: a POST whose body trickles in is
        408 ten seconds after its first byte.
        """
        client = self.connect()
        client.channel.dataReceived(b"POST /instances/x/drain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Content-Length: 100\r\n\r\n")
        for _ in range(3):
            self.clock.advance(3)
            client.channel.dataReceived(b"x")
        self.assertFalse(client.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 408 "))

    def test_requests_in_time_kept(self) -> None:
        """
        A kept-alive connection whose requests each arrive in time is kept,
        however long it lives.
        """
        client = self.connect()
        for _ in range(5):
            client.channel.dataReceived(b"GET /status HTTP/1.1\r\n")
            self.clock.advance(9)
            client.channel.dataReceived(b"Host: 127.0.0.1\r\n\r\n")
            response = client.response()
            assert response is not None
            self.assertEqual(response.status, 200)
        self.assertFalse(client.transport.disconnecting)

    def test_configured_on_reload(self) -> None:
        """
        A reloaded C{admin.idle_timeout} applies to the connections accepted
        after it.
        """
        before = self.connect()
        self.configure(idle_timeout=2.5)
        after = self.connect()
        self.clock.advance(2.5)
        self.assertEqual((before.transport.disconnecting, after.transport.disconnecting),
                         (False, True))
        self.clock.advance(7.5)
        self.assertTrue(before.transport.disconnecting)


class ConnectionCapTests(AdminListenerTestCase):
    """
    At most C{admin.max_connections} admin connections (64 by default); one
    more is answered 503 and closed at once, and the refusals are logged at
    most once per ten seconds.
    """

    def test_cap(self) -> None:
        """
        With three allowed, the fourth connection is answered 503 and
        closed; once one of the three is gone, a new one is served.
        """
        self.configure(max_connections=3)
        clients = [self.connect() for _ in range(3)]
        refused = StringTransport(peerAddress=PEER)
        protocol = self.site.buildProtocol(PEER)
        self.assertNotIsInstance(protocol, AdminChannel)
        protocol.makeConnection(refused)
        self.assertTrue(refused.disconnecting)
        answer = refused.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"the admin listener holds 3 connections already "
                      b"(admin.max_connections)", answer)
        protocol.connectionLost(Failure(ConnectionDone("closed")))
        clients[0].channel.connectionLost(Failure(ConnectionDone("closed")))
        served = self.connect()
        served.send("GET", "/status")
        response = served.response()
        assert response is not None
        self.assertEqual(response.status, 200)

    def test_default_cap(self) -> None:
        """
        By default the 65th connection is refused.
        """
        for _ in range(64):
            self.connect()
        protocol = self.site.buildProtocol(PEER)
        self.assertNotIsInstance(protocol, AdminChannel)
        self.assertIsNotNone(protocol)
        protocol.makeConnection(StringTransport(peerAddress=PEER))
        protocol.connectionLost(Failure(ConnectionDone("closed")))

    def test_flood_logged_at_a_bounded_rate(self) -> None:
        """
        A flood of connections over the cap: one log line, then none for
        ten seconds, then one counting the others; past 16 refusals being
        answered at once, connections are closed unanswered.
        """
        self.configure(max_connections=1)
        self.connect()
        refusals = [self.site.buildProtocol(PEER) for _ in range(100)]
        answered = [p for p in refusals if p is not None]
        self.assertEqual(len(answered), 16)
        self.assertEqual(self.lines(), [
            "admin listener refused a connection from IPv4Address(type='TCP', "
            "host='127.0.0.1', port=40000): 1 admin connections are open "
            "(admin.max_connections)"])
        for protocol in answered:
            protocol.makeConnection(StringTransport(peerAddress=PEER))
            protocol.connectionLost(Failure(ConnectionDone("closed")))
        self.clock.advance(10 - 0.01)
        self.site.buildProtocol(PEER).connectionLost(Failure(ConnectionDone("closed")))
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(0.01)
        self.site.buildProtocol(PEER).connectionLost(Failure(ConnectionDone("closed")))
        self.assertEqual(len(self.lines()), 2)
        self.assertIn("; 100 more since the last such line", self.lines()[1])


class OversizedBodyLogTests(AdminListenerTestCase):
    """
    Bodies over 64 KiB are answered 413; a run of them is one log line.
    """

    def test_logged_at_a_bounded_rate(self) -> None:
        """
        Twenty oversized requests within ten seconds: twenty 413s, one line;
        the next one after ten seconds logs the nineteen others.
        """
        for _ in range(20):
            client = self.connect()
            client.send("POST", "/instances/x/drain", b"x" * (64 * 1024 + 1))
            self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 413 "))
            client.channel.connectionLost(Failure(ConnectionDone("closed")))
        self.assertEqual(self.lines(), [
            "admin listener answered IPv4Address(type='TCP', host='127.0.0.1', port=40000) 413 "
            "and closed the connection: the admin API takes bodies of at most 65536 bytes"])
        self.clock.advance(10)
        client = self.connect()
        client.send("POST", "/instances/x/drain", b"x" * (64 * 1024 + 1))
        self.assertEqual(len(self.lines()), 2)
        self.assertIn("; 19 more since the last such line", self.lines()[1])


class HarnessTests(AdminListenerTestCase):
    """
    L{InMemoryDeployment.admin_request} behaves like one C{curl}: it closes
    its connection once answered, so tests may make any number.
    """

    def test_many_admin_requests(self) -> None:
        """
        A hundred admin requests in a row are all answered 200 (none left
        open to fill the cap).
        """
        statuses = {self.deployment.admin_request("GET", "/status").status for _ in range(100)}
        self.assertEqual(statuses, {200})
        self.assertEqual(self.site.open_connections, 0)


class MalformedHostTests(AdminListenerTestCase):
    """
    A C{Host} header that is not a host (outside test, session 12: an
    empty label or one over 63 characters made werkzeug raise while Klein
    bound its routes, before the guard ran: a 500 with twisted.web's HTML
    page and a critical traceback in the log for every such request, no
    token needed) is answered 400 problem+json and closed, before anything
    else, logged at a bounded rate; so is one the loopback check used to
    read leniently (an unclosed IPv6 bracket, a port that is not a number).
    """

    MALFORMED = [b"a..b", b"a" * 64, b"localhost." + b"a" * 64, b".localhost",
                 "\u2028".encode("utf-8"), b"[::1", b"[::1]evil", b"[nothing]",
                 b"127.0.0.1:abc", b"127.0.0.1:99999", b"", b"local host", b"a" * 254]
    WELL_FORMED = [b"localhost", b"localhost.", b"LOCALHOST:9901", b"127.0.0.1",
                   b"127.0.0.1:9901", b"127.0.0.1:", b"[::1]", b"[::1]:", b"[::1]:9901"]

    def test_malformed_refused(self) -> None:
        with capturedLogs() as logged:
            for allow_remote in (False, True):
                self.configure(allow_remote=allow_remote)
                for host in self.MALFORMED:
                    answer = self.raw(b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
                    self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (host, answer[:300]))
                    self.assertIn(b"Connection: close\r\n", answer)
                    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
                    self.assertEqual(body["detail"],
                                     "the Host header is not a host name, IPv4 address or "
                                     "bracketed IPv6 address with an optional port")
        self.assertEqual([e for e in logged if e["log_level"] >= LogLevel.error], [])
        self.assertEqual(self.lines(), [
            "admin listener answered IPv4Address(type='TCP', host='127.0.0.1', port=40000) 400 "
            "and closed the connection: the Host header is not a host name, IPv4 address or "
            "bracketed IPv6 address with an optional port"])
        self.clock.advance(10)
        self.raw(b"GET /status HTTP/1.1\r\nHost: a..b\r\n\r\n")
        self.assertIn(f"; {2 * len(self.MALFORMED) - 1} more since", self.lines()[-1])

    def test_before_authentication(self) -> None:
        """
        With C{admin.require_claims}, a malformed C{Host} is still a 400
        (the request is malformed before it is unauthorized).
        """
        self.configure(require_claims=(ClaimRequirement("scope", "stellarouter:admin"),))
        self.assertTrue(self.raw(b"GET /metrics HTTP/1.1\r\nHost: a..b\r\n\r\n").startswith(
            b"HTTP/1.1 400 "))

    def test_well_formed_served(self) -> None:
        for host in self.WELL_FORMED:
            answer = self.raw(b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), (host, answer[:300]))
        answer = self.raw(b"GET /status HTTP/1.0\r\n\r\n")  # (no Host: HTTP/1.0)
        self.assertTrue(answer.startswith(b"HTTP/1.0 200 "), answer[:300])
        self.assertEqual(self.lines(), [])


class OversizedHeadTests(AdminListenerTestCase):
    """
    A request line or header line over the head limit, or too many
    headers, is answered 414 or 431 problem+json and closed, logged at a
    bounded rate, as on the public port (outside test, session 12: the
    connection was closed unanswered and unlogged, or answered a bare
    C{400 Bad Request}).  A malformed head is a 400 problem+json.
    """

    def test_request_line(self) -> None:
        answer = self.raw(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 414 "), answer[:200])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"],
                         "the request line exceeds 16384 bytes")
        self.assertEqual(self.lines(), [
            "admin listener answered IPv4Address(type='TCP', host='127.0.0.1', port=40000) 414 "
            "and closed the connection: the request line exceeds 16384 bytes"])

    def test_header_line(self) -> None:
        answer = self.raw(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                          + b"x" * 17000 + b"\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:200])
        self.assertIn(b"Connection: close\r\n", answer)

    def test_too_many_headers(self) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
        answer = self.raw(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:200])
        self.assertIn(b"application/problem+json", answer)

    def test_malformed(self) -> None:
        answer = self.raw(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer[:200])
        self.assertIn(b"application/problem+json", answer)


class UnixSocketModeTests(SynchronousTestCase):
    """
    The admin listener's unix socket is its owner's alone unless its
    endpoint string says otherwise; its address reads C{unix:PATH}.
    """

    def test_owner_only(self) -> None:
        self.assertEqual(owner_only("unix:/run/a.sock"), "unix:/run/a.sock:mode=600")
        self.assertEqual(owner_only("unix:address=/run/a.sock"),
                         "unix:address=/run/a.sock:mode=600")
        for kept in ("unix:/run/a.sock:mode=660", "tcp:9901:interface=127.0.0.1",
                     "tcp6:9901:interface=\\:\\:1"):
            self.assertEqual(owner_only(kept), kept)

    def test_mode_checked(self) -> None:
        """
        A unix endpoint's C{mode=} must be a file mode, 0 to 777 in octal
        (second outside test, session 12: C{mode=-1} was taken, and the
        socket was created 07777: world-writable, setuid, setgid, sticky).
        """
        for listen in ("unix:/run/a.sock:mode=-1", "unix:/run/a.sock:mode=7777",
                       "unix:/run/a.sock:mode=1777", "unix:/run/a.sock:mode=+660"):
            with self.assertRaises(ConfigError) as caught:
                parse_gateway_config(dict(BASE, admin={"listen": listen}))
            self.assertIn(f"admin.listen: {listen!r} has mode={listen.rsplit('=', 1)[1]}: a "
                          "socket's mode is 0 to 777 in octal (e.g. mode=660)",
                          str(caught.exception))
        for listen in ("unix:/run/a.sock:mode=660", "unix:/run/a.sock:mode=0600",
                       "unix:/run/a.sock"):
            self.assertEqual(parse_gateway_config(dict(BASE, admin={"listen": listen})
                                                  ).admin.listen, listen)
        with self.assertRaises(ConfigError):
            parse_gateway_config(dict(BASE, http={"listen": "unix:/run/h.sock:mode=-1"}))

    def test_option_given_twice(self) -> None:
        """
        An option given twice in a server endpoint string is refused: the
        checks read the first, Twisted takes the last (third outside test,
        session 12: C{interface=127.0.0.1:interface=0.0.0.0} passed the
        admin listener's loopback rule and listened on every interface;
        C{mode=660:mode=600} was checked as 660).
        """
        for section, listen in (("admin", "tcp:9901:interface=127.0.0.1:interface=0.0.0.0"),
                                ("admin", "unix:/run/a.sock:mode=660:mode=600"),
                                ("http", "tcp:8080:interface=127.0.0.1:interface=0.0.0.0")):
            with self.assertRaises(ConfigError) as caught:
                parse_gateway_config(dict(BASE, **{section: {"listen": listen}}))
            option = listen.rsplit(":", 1)[1].split("=")[0]
            self.assertIn(f"{section}.listen: {listen!r} gives {option}= twice",
                          str(caught.exception))

    def test_describe_address(self) -> None:
        self.assertEqual(describe_address(UNIXAddress("/run/a.sock")), "unix:/run/a.sock")
        self.assertEqual(describe_address(UNIXAddress(b"/run/b.sock")), "unix:/run/b.sock")
        self.assertEqual(describe_address(UNIXAddress(None)), "unix:")
        self.assertEqual(describe_address(IPv4Address("TCP", "127.0.0.1", 9901)),
                         "127.0.0.1:9901")
        # (Second outside test: an IPv6 admin address read '::1:19905'.)
        self.assertEqual(describe_address(IPv6Address("TCP", "::1", 9901)), "[::1]:9901")


class SecondOutsideTestTests(AdminListenerTestCase):
    """
    The second outside test of session 12: requests that reached Klein's
    URL handling and made it fail (500 or a text/html 400, and a logged
    traceback per request, before any check), and one the admin answered
    that HTTP/1.1 forbids.
    """

    def unix(self, head: bytes, site: Any = None) -> bytes:
        site = site or self.site
        channel = site.buildProtocol(UNIXAddress(None))
        transport = StringTransport(hostAddress=UNIXAddress("/run/a.sock"),
                                    peerAddress=UNIXAddress(None))
        channel.makeConnection(transport)
        self.open.append(channel)
        channel.dataReceived(head)
        self.deployment.pump()
        return transport.value()

    def test_unix_socket_without_host(self) -> None:
        """
        Over a unix socket a request without C{Host} (HTTP/1.0) is served,
        on the admin listener and the public port's health endpoints:
        Klein asked the socket for a host name it has not (500, and an
        C{AttributeError} traceback per request).
        """
        with capturedLogs() as logged:
            answer = self.unix(b"GET /status HTTP/1.0\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.0 200 "), answer[:300])
            for path in (b"/health", b"/health/live", b"/health/ready"):
                answer = self.unix(b"GET " + path + b" HTTP/1.0\r\n\r\n",
                                   self.deployment.gateway.site)
                self.assertTrue(answer.startswith(b"HTTP/1.0 200 "), (path, answer[:300]))
        self.assertEqual([e for e in logged if e["log_level"] >= LogLevel.error], [])

    def test_unix_socket_host_names(self) -> None:
        """
        Over a unix socket any well-formed C{Host} is taken (no browser can
        reach one: the DNS-rebinding rule is for TCP); a malformed one is
        still a 400.
        """
        answer = self.unix(b"GET /status HTTP/1.1\r\nHost: l\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:300])
        answer = self.unix(b"GET /status HTTP/1.1\r\nHost: a..b\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer[:300])

    def test_path_not_utf8(self) -> None:
        """
        A path that is not UTF-8 once percent-decoded is a 400
        problem+json, before the other checks, logged at a bounded rate
        without a traceback (it was twisted.web's text/html 400 and a
        traceback per request).
        """
        with capturedLogs() as logged:
            for target in (b"/%ff", b"/instances/%ff%fe/drain"):
                answer = self.raw(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer[:300])
                self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"],
                                 "the path is not UTF-8 once percent-decoded")
        self.assertEqual([e for e in logged if e["log_level"] >= LogLevel.error], [])
        self.assertEqual(len(self.lines()), 1)

    def test_http11_needs_a_host(self) -> None:
        """
        An HTTP/1.1 request without C{Host} is a 400 (RFC 9112 3.2), as on
        the public port; HTTP/1.0 needs none.
        """
        answer = self.raw(b"GET /status HTTP/1.1\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer[:300])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"],
                         "an HTTP/1.1 request needs a Host header")


class PublicHealthHostTests(AdminListenerTestCase):
    """
    (Third outside test, session 12.)  The public port's health endpoints
    go to Klein too: a C{Host} werkzeug cannot encode (C{a..b}, a label
    over 63 characters) gave a 500 and a critical traceback per request,
    no credentials needed.  Now a 400 problem+json, closed, and a
    refusal line at the edge's bounded rate; a proxied path is unchanged.
    """

    def test_malformed_host(self) -> None:
        site = self.deployment.gateway.site
        with capturedLogs() as logged:
            for host in (b"a..b", b".", b"a" * 64, b"a..b:80"):
                for path in (b"/health", b"/health/live", b"/health/ready"):
                    channel = site.buildProtocol(PEER)
                    transport = StringTransport(peerAddress=PEER)
                    channel.makeConnection(transport)
                    self.open.append(channel)
                    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: " + host
                                         + b"\r\n\r\n")
                    answer = transport.value()
                    self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (host, answer[:300]))
                    self.assertIn(b"Connection: close\r\n", answer)
                    self.assertIn(b"application/problem+json", answer)
        self.assertEqual([e for e in logged if e["log_level"] >= LogLevel.error], [])


class RefusalCauseTests(AdminListenerTestCase):
    def test_each_refusal_its_own_rate(self) -> None:
        """
        Two kinds of 400 within ten seconds are two lines, each counting its
        own (third outside test, session 12: the count of '/%ff' requests
        was reported on the 'needs a Host header' line).
        """
        for _ in range(3):
            self.raw(b"GET /%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.raw(b"GET /status HTTP/1.1\r\n\r\n")
        self.assertEqual(len(self.lines()), 2)
        self.clock.advance(10)
        self.raw(b"GET /status HTTP/1.1\r\n\r\n")
        self.assertNotIn("more since", self.lines()[-1])
