"""
No secret in any output: a gateway and a microservice as real processes,
configured with known secrets (a shared HS256 secret, rotated by a reload;
AMQP passwords in a router address and in a listener added by a reload),
plus C{stellarouter config check} of a broken file holding secrets, and an
authenticated request in both sides' access logs; every line any of them
printed is searched for the secrets and the bearer token.
"""

import os
import re
import socket
import sys
import time

import jwt
import treq

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from stellarouter.testing.processes import ROOT, ProcessDeployment, WatchedProcess

SECRETS = ("FirstSharedSecret-8c1e-0123456789ab", "RotatedSharedSecret-77aa-0123456789",
           "RouterAmqpPw-51f0", "ListenerAmqpPw-93d2", "CheckAmqpPw-0b7c",
           "CheckSecretInt-123456789012345678")


def ready_http(process: WatchedProcess) -> str:
    """
    The gateway's HTTP base URL, from its ready line.
    """
    for line in process.lines:
        match = re.search(r'ready: \{"http": "([^"]+)"', line)
        if match:
            return "http://" + match.group(1)
    raise AssertionError("no ready line")


class SecretsNeverPrintedTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.deployment = ProcessDeployment(reactor, directory)
        self.addCleanup(self.deployment.stop_all)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def gateway_yaml(self, secret: str, extra_transport: str = "") -> str:
        return f"""
node: {{node_id: gw-secrets, region: eu1}}
http: {{listen: "tcp:0:interface=127.0.0.1"}}
transports:
  - {{type: tcp, listen: "tcp:0:interface=127.0.0.1"}}
{extra_transport}
auth: {{hs256_secret: {secret}, require_authentication: true}}
admin: {{listen: "tcp:0:interface=127.0.0.1"}}
"""

    async def test_no_secret_in_any_output(self) -> None:
        """
        Start, register, send an authenticated request (its bearer token
        also in the query string: both access logs log it), reload with a
        rotated secret and an added AMQP listener, check a broken file: no
        secret and no token appears anywhere, and the redacted forms do.
        """
        deployment = self.deployment
        config = deployment.write("gw.yaml", self.gateway_yaml(SECRETS[0]))
        gateway = deployment.spawn("gw", ["stella-gateway", "--config", config])
        ready = await gateway.wait_for(r"ready: .*\"tcp:127\.0\.0\.1:(\d+)\"", reactor)
        port = ready.group(1)
        # A broker that cannot be reached (a port nothing listens on): the
        # router is retried and its address logged. (The shared broker
        # refuses this password: a start-up failure, test_rabbitmq_refused.)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        micro_config = deployment.write("billing.yaml", f"""
app: examples.billing:service
region: eu1
instance_id: billing-secrets
routers:
  - {{transport: tcp, address: "tcp:host=127.0.0.1:port={port}"}}
  - {{transport: rabbitmq,
     address: "amqp:host=127.0.0.1:port={closed}:user=guest:password={SECRETS[2]}:gateway=gw-x"}}
""")
        seen = len(gateway.lines)
        micro = deployment.spawn("billing", ["stella-micro", "--config", micro_config])
        await gateway.wait_for(r"registered instance billing-secrets ", reactor, since=seen)
        # An authenticated request, its token also in the query string: the
        # access log lines of both sides (on by default) carry its
        # correlation id, never the token.
        token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, SECRETS[0],
                           algorithm="HS256")
        http = ready_http(gateway)
        response = await treq.get(f"{http}/ping?access_token={token}",
                                  headers={"Authorization": f"Bearer {token}"},
                                  pool=self.pool)
        await response.content()
        self.assertEqual(response.code, 200)
        cid = response.headers.getRawHeaders("X-Correlation-Id")[0]
        await gateway.wait_for(rf'"cid":"{cid}"', reactor)
        await micro.wait_for(rf'"cid":"{cid}"', reactor)
        # The same token in an admin URL's query (the admin listener wrote
        # twisted.web's Apache-style line, query included, until an outside
        # test found the token there).
        admin = await gateway.wait_for(r'"admin": "(127\.0\.0\.1:\d+)"', reactor)
        response = await treq.get(f"http://{admin.group(1)}/status?access_token={token}",
                                  pool=self.pool)
        await response.content()
        self.assertEqual(response.code, 200)
        seen = len(gateway.lines)
        deployment.write("gw.yaml", self.gateway_yaml(SECRETS[1], f"""  - {{type: rabbitmq,
     listen: "amqp:host=127.0.0.1:port=5672:user=guest:password={SECRETS[3]}:vhost=/"}}"""))
        gateway.signal("HUP")
        await gateway.wait_for(r"configuration reloaded", reactor, since=seen)
        await gateway.wait_for(r"need a restart were NOT applied", reactor, since=seen)
        broken = deployment.write("broken.yaml", f"""
node: {{region: eu1}}
transports:
  - {{type: rabbitmq, listen: "amqp:hots=127.0.0.1:password={SECRETS[4]}"}}
auth: {{hs256_secret: {SECRETS[5][len("CheckSecretInt-"):]}}}
""")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "stellarouter.cli", "config", "check", broken],
            env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
        self.assertEqual(code, 1, out + err)
        check_output = (out + err).decode()
        output = "\n".join(gateway.lines + micro.lines) + "\n" + check_output
        self.assertNotIn(token, output)
        self.assertNotIn(token.split(".")[2], output)
        for secret in SECRETS:
            self.assertNotIn(secret.split("-")[-1] if secret.startswith("CheckSecretInt")
                             else secret, output)
        self.assertIn("auth.hs256_secret: '***' -> '***' (secret changed)", output)
        self.assertIn("password=***", check_output)
        self.assertIn("user=guest:password=***:gateway=gw-x", "\n".join(micro.lines))
        self.assertIn("is unreachable", "\n".join(micro.lines))
        self.assertIn("user=guest:password=***:vhost=/", "\n".join(gateway.lines))
