"""
The two twistd plugins as real processes on loopback: the Billing demo end
to end over TCP, driven with treq.
"""

import json
import os
import re

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from stellarouter.testing.processes import ProcessDeployment, WatchedProcess, twistd_path


class PluginDiscoveryTests(TestCase):
    timeout = 60

    async def test_twistd_lists_both_plugins(self) -> None:
        """
        The installed package exposes both plugins to twistd, from any
        directory (not only a source checkout).
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        out, err, code = await getProcessOutputAndValue(
            twistd_path(), ["--help"], env=env, path=elsewhere)
        self.assertEqual(code, 0, err)
        self.assertIn(b"stella-gateway", out)
        self.assertIn(b"stella-micro", out)


class ProcessTestCase(TestCase):
    """
    A test case with a L{ProcessDeployment} and a non-persistent HTTP pool.
    """

    timeout = 60

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.deployment = ProcessDeployment(reactor, directory)
        self.addCleanup(self.deployment.stop_all)

    async def assertBillingAnswers(self, amount: int) -> None:
        """
        The README's requests through the gateway give 200, 201, 200, 404
        and 405, whatever transport Billing is connected by.
        """
        base = self.deployment.base_url
        response = await treq.get(base + "/ping", pool=self.pool)
        self.assertEqual((response.code, await response.content()), (200, b"pong"))
        body = json.dumps({"customer": "acme", "amount_cents": amount}).encode()
        response = await treq.post(base + "/invoices", body, pool=self.pool)
        self.assertEqual(response.code, 201)
        invoice = json.loads(await response.content())
        response = await treq.get(base + "/invoices/" + invoice["id"], pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        for method, path, status in (("GET", "/nope", 404), ("DELETE", "/ping", 405)):
            response = await treq.request(method, base + path, pool=self.pool)
            self.assertEqual(response.code, status)
            await response.content()

    async def assertStoppedCleanly(self, process: WatchedProcess) -> None:
        """
        The process shut down through twistd's orderly path.  twistd re-raises
        the terminating signal after a clean shutdown, so the status is
        SIGTERM (or 0).
        """
        code = await process.ended
        output = "\n".join(process.lines)
        self.assertIn(code, (0, -15), output)
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn("Traceback", output)


class BillingDemoTests(ProcessTestCase):
    async def test_billing_end_to_end(self) -> None:
        """
        Gateway and Billing start as twistd processes on free ports; the
        README's requests give 200, 201, 200, 404 and 405; both stop cleanly
        on SIGTERM.
        """
        gateway = await self.deployment.start_gateway()
        billing = await self.deployment.start_microservice("examples.billing:service",
                                                           "billing-it")
        base = self.deployment.base_url

        response = await treq.get(base + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), b"pong")
        self.assertTrue(response.headers.getRawHeaders("x-correlation-id"))

        response = await treq.post(base + "/invoices", b'{"customer":"acme","amount_cents":1250}',
                                   pool=self.pool)
        self.assertEqual(response.code, 201)
        invoice = json.loads(await response.content())
        self.assertEqual((invoice["customer"], invoice["amount_cents"]), ("acme", 1250))

        response = await treq.get(base + "/invoices/" + invoice["id"], pool=self.pool)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content()), invoice)

        response = await treq.get(base + "/nope", pool=self.pool)
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/problem+json"])
        await response.content()

        response = await treq.request("DELETE", base + "/ping", pool=self.pool)
        self.assertEqual(response.code, 405)
        self.assertIn("GET", response.headers.getRawHeaders("allow")[0])
        await response.content()

        response = await treq.post(base + "/invoices", b'{"customer": 7}', pool=self.pool)
        self.assertEqual(response.code, 400)
        await response.content()

        billing.signal("TERM")
        await self.assertStoppedCleanly(billing)
        await gateway.wait_for(r"instance billing-it .* disconnected", reactor)
        response = await treq.get(base + "/ping", pool=self.pool)
        self.assertEqual(response.code, 503)  # a route served recently: 503, not 404
        await response.content()
        gateway.signal("TERM")
        await self.assertStoppedCleanly(gateway)

    async def test_pipelined_and_closing_requests(self) -> None:
        """
        Over one raw socket: two pipelined keep-alive requests and an
        HTTP/1.0 one behind them get their answers in order (each sent as
        soon as it is complete), and the gateway closes after the HTTP/1.0
        answer.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.protocol import Factory, Protocol

        await self.deployment.start_gateway()
        await self.deployment.start_microservice("examples.billing:service", "billing-raw")
        host, port = self.deployment.base_url[len("http://"):].rsplit(":", 1)

        class Raw(Protocol):
            def __init__(self) -> None:
                self.data = b""
                self.closed: Deferred = Deferred()

            def dataReceived(self, data: bytes) -> None:
                self.data += data

            def connectionLost(self, reason: object = None) -> None:
                self.closed.callback(self.data)

        raw = await TCP4ClientEndpoint(reactor, host, int(port)).connect(Factory.forProtocol(Raw))
        raw.transport.write(b"GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n"
                            b"GET /ping HTTP/1.1\r\nHost: gw\r\n\r\n"
                            b"GET /ping HTTP/1.0\r\nHost: gw\r\n\r\n")
        data = await raw.closed.addTimeout(10, reactor)
        statuses = re.findall(rb"HTTP/1\.[01] \d{3} [A-Za-z ]+(?=\r\n)", data)
        self.assertEqual(statuses, [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"])
        self.assertEqual(data.count(b"\r\n\r\npong"), 3)
        self.assertTrue(data.endswith(b"pong"))

    async def test_bad_config_refused(self) -> None:
        """
        twistd stella-gateway refuses to start on an invalid config, printing
        every problem, and exits non-zero.
        """
        bad = self.deployment.write("bad.yaml", "node: {regoin: eu1}\ntransports: [{type: tcpp}]\n")
        gateway = self.deployment.spawn("gateway", ["stella-gateway", "--config", bad])
        self.assertNotEqual(await gateway.ended, 0)
        output = "\n".join(gateway.lines)
        self.assertIn("node.regoin: unknown key (did you mean 'region'?)", output)
        self.assertIn("transports[0].type: 'tcpp' is not one of", output)


class BillingAuthTests(ProcessTestCase):
    async def test_401_403_204(self) -> None:
        """
        With a shared secret configured, Billing's claims-protected DELETE
        answers 401 without a token, 403 with a token lacking
        scope=billing:write, and 204 with it.
        """
        import time

        import jwt

        secret = "integration-secret-0123456789abcdef"
        await self.deployment.start_gateway(
            extra=f"auth: {{hs256_secret: {secret}, issuer: it, audience: billing}}")
        await self.deployment.start_microservice("examples.billing:service", "billing-auth")
        base = self.deployment.base_url
        created = await treq.post(base + "/invoices", b'{"customer":"acme","amount_cents":5}',
                                  pool=self.pool)
        invoice = json.loads(await created.content())["id"]

        def token(scope: str) -> bytes:
            now = int(time.time())
            return ("Bearer " + jwt.encode(
                {"sub": "it", "scope": scope, "iss": "it", "aud": "billing", "exp": now + 60},
                secret, algorithm="HS256")).encode()

        for headers, status in (({}, 401), ({b"Authorization": [token("billing:read")]}, 403),
                                ({b"Authorization": [token("billing:write")]}, 204)):
            response = await treq.request("DELETE", f"{base}/invoices/{invoice}",
                                          headers=headers, pool=self.pool)
            self.assertEqual(response.code, status, await response.content())
