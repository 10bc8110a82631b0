"""
The two twistd plugins as real processes on loopback: the Billing demo end
to end over TCP, driven with treq.
"""

import json
import os

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from stellarouter.testing.processes import spawn_twistd, twistd_path


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


class BillingDemoTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        self.processes: list = []

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, name: str, args: list) -> object:
        process = spawn_twistd(reactor, name, args)
        self.processes.append(process)
        self.addCleanup(self._kill, process)
        return process

    async def _kill(self, process: object) -> None:
        if process.running:
            process.signal("KILL")
            await process.ended

    async def assertStoppedCleanly(self, process: object) -> None:
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

    async def test_billing_end_to_end(self) -> None:
        """
        Gateway and Billing start as twistd processes on free ports; the
        README's requests give 200, 201, 200, 404 and 405; both stop cleanly
        on SIGTERM.
        """
        gateway_config = self.write("gateway.yaml", """
node: {node_id: gw-it, region: eu1}
http: {listen: "tcp:0:interface=127.0.0.1"}
transports: [{type: tcp, listen: "tcp:0:interface=127.0.0.1"}]
""")
        gateway = self.start("gateway", ["stella-gateway", "--config", gateway_config])
        ready = await gateway.wait_for(r"ready: (\{.*\})", reactor)
        addresses = json.loads(ready.group(1))
        base = "http://" + addresses["http"]
        transport_port = addresses["transports"][0].rsplit(":", 1)[1]
        billing_config = self.write("billing.yaml", f"""
region: eu1
instance_id: billing-it
routers: [{{transport: tcp, address: "tcp:host=127.0.0.1:port={transport_port}"}}]
""")
        billing = self.start("billing", ["stella-micro", "--config", billing_config,
                                         "--app", "examples.billing:service"])
        await gateway.wait_for(r"registered instance billing-it of billing 1\.0\.0", reactor)

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
        self.assertEqual(response.code, 404)
        await response.content()
        gateway.signal("TERM")
        await self.assertStoppedCleanly(gateway)

    async def test_bad_config_refused(self) -> None:
        """
        twistd stella-gateway refuses to start on an invalid config, printing
        every problem, and exits non-zero.
        """
        bad = self.write("bad.yaml", "node: {regoin: eu1}\ntransports: [{type: tcpp}]\n")
        gateway = self.start("gateway", ["stella-gateway", "--config", bad])
        self.assertNotEqual(await gateway.ended, 0)
        output = "\n".join(gateway.lines)
        self.assertIn("node.regoin: unknown key (did you mean 'region'?)", output)
        self.assertIn("transports[0].type: 'tcpp' is not one of", output)
