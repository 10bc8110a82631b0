"""
Start-up failures of the two twistd plugins as real processes: a listener
or a router that cannot be set up is one clear line and exit status 1, not
a process left running half-listening.
"""

import os

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from stellarouter.testing.processes import ProcessDeployment, WatchedProcess


class StartupFailureTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.deployment = ProcessDeployment(reactor, directory)
        self.addCleanup(self.deployment.stop_all)
        # A port some other process holds.
        self.busy = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(self.busy.stopListening)
        self.busy_port = self.busy.getHost().port

    def gateway(self, http: str, transport: str,
                admin: str = "tcp:0:interface=127.0.0.1") -> WatchedProcess:
        config = self.deployment.write("gw.yaml", f"""
node: {{node_id: gw-busy, region: eu1}}
http: {{listen: "{http}"}}
transports: [{{type: tcp, listen: "{transport}"}}]
admin: {{listen: "{admin}"}}
""")
        return self.deployment.spawn("gw-busy", ["stella-gateway", "--config", config])

    async def assertFailsWith(self, process: WatchedProcess, line: str) -> None:
        """
        The process exits with status 1, and exactly one line of its output
        says why (containing C{line}); no traceback.
        """
        code = await process.ended
        output = "\n".join(process.lines)
        self.assertEqual(code, 1, output)
        reasons = [text for text in process.lines if "cannot start:" in text]
        self.assertEqual(len(reasons), 1, output)
        self.assertIn(line, reasons[0])
        self.assertNotIn("Traceback", output)

    async def test_busy_http_port(self) -> None:
        """
        A gateway whose HTTP port is taken exits 1 naming http.listen (it
        used to log a critical error and stay alive on its transport port).
        """
        process = self.gateway(f"tcp:{self.busy_port}:interface=127.0.0.1",
                               "tcp:0:interface=127.0.0.1")
        await self.assertFailsWith(
            process, f"stella-gateway cannot start: http.listen "
                     f"(tcp:{self.busy_port}:interface=127.0.0.1): Couldn't listen on "
                     f"127.0.0.1:{self.busy_port}")

    async def test_busy_transport_port(self) -> None:
        """
        A gateway whose transport port is taken exits 1 naming the listener.
        """
        process = self.gateway("tcp:0:interface=127.0.0.1",
                               f"tcp:{self.busy_port}:interface=127.0.0.1")
        await self.assertFailsWith(
            process, "stella-gateway cannot start: transports[0] (tcp "
                     f"tcp:{self.busy_port}:interface=127.0.0.1): ")

    async def test_busy_admin_port(self) -> None:
        """
        A gateway whose admin port is taken exits 1 naming admin.listen,
        like the public port (issue 21 item 1).
        """
        process = self.gateway("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1",
                               f"tcp:{self.busy_port}:interface=127.0.0.1")
        await self.assertFailsWith(
            process, f"stella-gateway cannot start: admin.listen "
                     f"(tcp:{self.busy_port}:interface=127.0.0.1): Couldn't listen on "
                     f"127.0.0.1:{self.busy_port}")

    async def test_router_that_cannot_be_set_up(self) -> None:
        """
        A microservice whose TLS router's CA file is not a certificate exits
        1 naming the router.
        """
        ca = self.deployment.write("ca.pem", "not a certificate\n")
        config = self.deployment.write("m.yaml", f"""
region: eu1
routers:
  - {{transport: tls, address: "tcp:host=127.0.0.1:port={self.busy_port}",
     server_name: localhost, ca: {ca}}}
""")
        process = self.deployment.spawn(
            "m", ["stella-micro", "--config", config, "--app", "examples.billing:service"])
        await self.assertFailsWith(
            process, f"stella-micro cannot start: routers[0] "
                     f"(tls:tcp:host=127.0.0.1:port={self.busy_port}): ")
