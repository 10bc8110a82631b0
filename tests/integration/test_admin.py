"""
Issue 21 items 1, 3 and 4 with real processes: a real gateway and a real
Billing microservice, the admin API over a real socket, and the
C{stellarouter} command run as a child process against the live gateway
(tables, C{--json}, drain, a refused token, an unreachable listener).
"""

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import jwt
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from stellarouter.testing.http import parse_responses
from stellarouter.testing.processes import ROOT, ProcessDeployment

SECRET = "admin-integration-secret-0123456789"


async def cli(*args: str, env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """
    Run C{python -m stellarouter.cli ARGS} from this source tree.

    @return: exit status, stdout, stderr.
    """
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("STELLA_ADMIN")}
    environment["PYTHONPATH"] = ROOT
    environment.update(env or {})
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "stellarouter.cli", *args], env=environment, path=ROOT)
    return code, out.decode(), err.decode()


def token(scope: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "ops", "scope": scope, "iat": now, "exp": now + 600},
                      SECRET, algorithm="HS256")


class AdminProcessTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.deployment = ProcessDeployment(reactor, directory)
        self.addCleanup(self.deployment.stop_all)


class AdminCliTests(AdminProcessTestCase):
    async def test_cli_against_a_live_gateway(self) -> None:
        """
        With one Billing instance registered: the public /health shows the
        status only; C{stellarouter instances}, C{services}, C{routes} and
        C{status} print aligned tables (JSON with C{--json}); C{drain}
        stops the routing to it (503) and the instance is told.
        """
        gateway = await self.deployment.start_gateway(node_id="gw-admin")
        self.assertTrue(gateway.admin_url.startswith("http://127.0.0.1:"), gateway.admin_url)
        micro = await self.deployment.start_microservice("examples.billing:service",
                                                         "billing-admin")
        response = await treq.get(gateway.base_url + "/health", pool=self.pool)
        self.assertEqual(json.loads(await response.content()), {"status": "ok"})
        # The public port given as --admin: one line that says what to use.
        code, out, err = await cli("instances", "--admin", gateway.base_url)
        self.assertEqual((code, out, len(err.splitlines())), (1, "", 1), err)
        self.assertIn("404 ", err)
        self.assertIn(f"is {gateway.base_url} the admin listener? (not the gateway's public "
                      "HTTP port: see admin.listen", err)

        code, out, err = await cli("instances", "--admin", gateway.admin_url)
        self.assertEqual((code, err), (0, ""))
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["INSTANCE", "SERVICE", "VERSION", "REGION", "TRANSPORT",
                                          "PEER", "HEALTH", "PING-MS", "IN-FLIGHT", "HEARTBEAT",
                                          "UP"])
        self.assertEqual(row.split()[:5], ["billing-admin", "billing", "1.0.0", "eu1", "tcp"])
        self.assertEqual(row.index(" billing ") + 1, header.index("SERVICE"))
        self.assertEqual(row.index(" healthy ") + 1, header.index("HEALTH"))

        code, out, err = await cli("instances", "--json", "--admin", gateway.admin_url)
        self.assertEqual(code, 0, err)
        instances = json.loads(out)["instances"]
        self.assertEqual([(i["instance_id"], i["service"], i["health"], i["draining"])
                          for i in instances], [("billing-admin", "billing", "healthy", False)])

        code, out, err = await cli("services", "--admin", gateway.admin_url)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines()[1].split()[:4], ["billing", "1.0.0", "(1)", "1"])

        code, out, err = await cli("routes", "--admin", gateway.admin_url)
        self.assertEqual(code, 0, err)
        rows = [line.split()[:3] for line in out.splitlines()[1:]]
        self.assertIn(["GET", "/ping", "billing"], rows)
        self.assertIn(["GET", "/invoices/{id}", "billing"], rows)

        code, out, err = await cli("status", "--admin", gateway.admin_url)
        self.assertEqual(code, 0, err)
        self.assertIn("status      ok", out)
        self.assertIn("instances   1 (1 healthy)", out)

        seen = len(micro.lines)
        code, out, err = await cli("drain", "billing-admin", "--admin", gateway.admin_url)
        self.assertEqual(code, 0, err)
        self.assertIn("draining billing-admin (billing 1.0.0", out)
        await micro.wait_for(r"asks billing-admin to drain", reactor, since=seen)
        response = await treq.get(gateway.base_url + "/ping", pool=self.pool)
        self.assertEqual(response.code, 503)
        await response.content()
        code, out, err = await cli("instances", "--json", "--admin", gateway.admin_url)
        self.assertEqual([(i["health"], i["drained_by_operator"])
                          for i in json.loads(out)["instances"]], [("draining", True)])

    async def test_unreachable(self) -> None:
        """
        Nothing listening at C{--admin}: exit status 1 and one line saying
        so.
        """
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        code, out, err = await cli("instances", "--admin", f"http://127.0.0.1:{number}")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(f"stellarouter instances: cannot reach the admin listener at "
                      f"http://127.0.0.1:{number}: ", err)


class AdminDrainTests(AdminProcessTestCase):
    async def test_drained_instance_gets_no_request(self) -> None:
        """
        Of two instances, the one drained through the admin API gets no
        request afterwards while the other serves them all, and neither
        request fails; the drained one is told and stays connected.
        """
        gateway = await self.deployment.start_gateway(node_id="gw-admin-drain")
        one = await self.deployment.start_microservice("examples.whoami:service", "w-one")
        await self.deployment.start_microservice("examples.whoami:service", "w-two")
        seen = len(one.lines)
        response = await treq.post(gateway.admin_url + "/instances/w-one/drain",
                                   pool=self.pool)
        self.assertEqual(response.code, 202)
        await response.content()
        served = []
        for _ in range(10):
            response = await treq.get(gateway.base_url + "/whoami", pool=self.pool)
            self.assertEqual(response.code, 200)
            served.append(json.loads(await response.content())["instance_id"])
        self.assertEqual(served, ["w-two"] * 10)
        await one.wait_for(r"asks w-one to drain", reactor, since=seen)
        self.assertTrue(one.running)
        response = await treq.get(gateway.admin_url + "/instances", pool=self.pool)
        rows = {i["instance_id"]: i["health"]
                for i in json.loads(await response.content())["instances"]}
        self.assertEqual(rows, {"w-one": "draining", "w-two": "healthy"})


class AdminTokenTests(AdminProcessTestCase):
    async def test_token_refused_and_accepted(self) -> None:
        """
        With C{admin.require_claims}: no token and a token without the claim
        are one line and exit 1; the right token (from the environment)
        works; no token appears in the gateway's log.
        """
        gateway = await self.deployment.start_gateway(
            node_id="gw-admin-auth",
            extra=f"auth: {{hs256_secret: {SECRET}}}",
            admin='listen: "tcp:0:interface=127.0.0.1", '
                  'require_claims: {scope: "stellarouter:admin"}')
        url = gateway.admin_url
        code, out, err = await cli("services", "--admin", url)
        self.assertEqual((code, out, len(err.splitlines())), (1, "", 1))
        self.assertIn("refused a request without a token: 401", err)
        self.assertIn("--token", err)

        wrong = token("billing:read")
        code, out, err = await cli("services", "--admin", url, "--token", wrong)
        self.assertEqual((code, out, len(err.splitlines())), (1, "", 1))
        self.assertIn("refused the request: 403 the token lacks scope=stellarouter:admin", err)

        right = token("stellarouter:admin")
        code, out, err = await cli("services", "--json", "--admin", url,
                                   env={"STELLA_ADMIN_TOKEN": right})
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), {"services": []})
        response = await treq.get(url + "/config", headers={"Authorization": f"Bearer {right}"},
                                  pool=self.pool)
        body = await response.content()
        self.assertEqual(response.code, 200)
        self.assertNotIn(SECRET.encode(), body)
        self.assertEqual(json.loads(body)["config"]["auth.hs256_secret"], "***")
        logged: List[str] = gateway.lines
        for secret in (SECRET, wrong, right):
            self.assertFalse([line for line in logged if secret in line])


class RawClient(Protocol):
    """
    A TCP client that collects what comes back: C{answered} fires with the
    bytes once they hold a complete response; C{closed} with everything once
    the connection is gone, and the time it went.
    """

    def __init__(self) -> None:
        self.received = b""
        self.answered: Deferred = Deferred()
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.answered.called and parse_responses(self.received):
            self.answered.callback(self.received)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback((self.received, reactor.seconds()))


class AdminListenerLimitsTests(AdminProcessTestCase):
    """
    The outside testers' findings on a real admin port: a silent connection
    was kept 60 s and connections were not capped.
    """

    async def connect(self, port: int) -> RawClient:
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(lambda: client.transport.loseConnection()  # type: ignore[union-attr]
                        if not client.closed.called else None)
        return client

    async def test_idle_timeout_and_cap(self) -> None:
        """
        With C{idle_timeout: 1} and C{max_connections: 2}: a third connection
        is answered 503 and closed while two are open, and the gateway logs
        why; the two are closed about a second after their last answer; a
        request trickled in a byte every 0.3 s is answered 408 about a
        second after its first byte.
        """
        gateway = await self.deployment.start_gateway(
            node_id="gw-admin-limits",
            admin='listen: "tcp:0:interface=127.0.0.1", idle_timeout: 1, max_connections: 2')
        port = int(gateway.admin_url.rsplit(":", 1)[1])
        request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        held = []
        for _ in range(2):
            client = await self.connect(port)
            client.transport.write(request)  # type: ignore[union-attr]
            await client.answered.addTimeout(10, reactor)
            held.append(client)
        answered_at = reactor.seconds()
        seen = len(gateway.lines)
        third = await self.connect(port)
        third.transport.write(request)  # type: ignore[union-attr]
        data, _ = await third.closed.addTimeout(10, reactor)
        self.assertEqual([r.status for r in parse_responses(data)], [503], data)
        self.assertIn(b"(admin.max_connections)", data)
        await gateway.wait_for(r"admin listener refused a connection from .*: 2 admin "
                               r"connections are open \(admin.max_connections\)", reactor,
                               since=seen)
        for client in held:
            data, closed_at = await client.closed.addTimeout(10, reactor)
            self.assertEqual([r.status for r in parse_responses(data)], [200])
            self.assertLess(closed_at - answered_at, 5.0)

        slow = await self.connect(port)
        started = reactor.seconds()
        calls: List[Any] = []

        def trickle(i: int) -> None:
            if slow.closed.called or i >= len(request):
                return
            slow.transport.write(request[i:i + 1])  # type: ignore[union-attr]
            calls.append(reactor.callLater(0.3, trickle, i + 1))

        trickle(0)
        self.addCleanup(lambda: [c.cancel() for c in calls if c.active()])
        data, closed_at = await slow.closed.addTimeout(10, reactor)
        self.assertEqual([r.status for r in parse_responses(data)], [408], data)
        self.assertLess(closed_at - started, 5.0)


class UnixSocketTests(AdminProcessTestCase):
    async def test_public_and_admin_on_unix_sockets(self) -> None:
        """
        (Outside test, session 12.)  C{http.listen} and C{admin.listen} on
        unix sockets: the gateway starts (it passed C{config check} and
        then exited, C{'UNIXAddress' object has no attribute 'host'}), the
        ready line names them C{unix:PATH} (the admin's was a Python repr),
        the admin socket is mode 0600 unless its endpoint says otherwise
        (it was 0666: any local user could drain instances), and requests
        go through both, to a Billing instance.
        """
        directory = tempfile.mkdtemp(prefix="sr-")  # (a socket path has at most 107 bytes)
        self.addCleanup(shutil.rmtree, directory, True)
        public, admin = os.path.join(directory, "public.sock"), os.path.join(directory, "a.sock")
        config = self.deployment.write("gw-unix.yaml", f"""
node: {{node_id: gw-unix, region: eu1}}
http: {{listen: "unix:{public}"}}
transports: [{{type: tcp, listen: "tcp:0:interface=127.0.0.1"}}]
admin: {{listen: "unix:{admin}"}}
""")
        gateway = self.deployment.spawn("gw-unix", ["stella-gateway", "--config", config])
        ready = await gateway.wait_for(r"ready: (\{.*\})", reactor)
        addresses = json.loads(ready.group(1))
        self.assertEqual((addresses["http"], addresses["admin"]),
                         (f"unix:{public}", f"unix:{admin}"))
        self.assertEqual(stat.S_IMODE(os.stat(admin).st_mode), 0o600)
        gateway.transport_port = int(addresses["transports"][0].rsplit(":", 1)[1])
        await self.deployment.start_microservice("examples.billing:service", "billing-unix",
                                                 gateways=[gateway])

        async def get(path: str, target: str) -> bytes:
            client = RawClient()
            await connectProtocol(UNIXClientEndpoint(reactor, path), client)
            client.transport.write(  # type: ignore[union-attr]
                b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            received, _ = await client.closed.addTimeout(10, reactor)
            return received

        self.assertTrue((await get(public, b"/ping")).startswith(b"HTTP/1.1 200 "))
        status = await get(admin, b"/status")
        self.assertTrue(status.startswith(b"HTTP/1.1 200 "), status[:200])
        [response] = parse_responses(status)
        self.assertEqual(json.loads(response.body)["listening"]["admin"], f"unix:{admin}")
        # The CLI takes the same unix:PATH (it only spoke http:// and https://).
        code, out, err = await cli("instances", "--admin", f"unix:{admin}")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.splitlines()[1].split()[:2], ["billing-unix", "billing"])
        code, out, err = await cli("status", "--admin", os.path.join(directory, "nothing.sock"))
        self.assertEqual(code, 1)
        self.assertIn("is not an http://, https:// or unix: address", err)
        code, out, err = await cli("status", "--admin", f"unix:{directory}/nothing.sock")
        self.assertEqual(code, 1)
        self.assertIn(f"cannot reach the admin listener at unix:{directory}/nothing.sock: ", err)
