"""
Outside findings F1, F2 and F4 against real processes: a forged JWT header
cannot write a line of its own into the gateway's log, a microservice whose
instance id holds control characters is refused before it dials, and a
routed HEAD is logged as HEAD.
"""

import base64
import json
import re

import treq
from twisted.internet import reactor

from tests.integration.test_processes import ProcessTestCase

SECRET = "an-integration-secret-32-chars!!"
#: What a forged line looks like: the shape of a gateway access line.
FORGED = json.dumps({"time": "2026-12-03T17:45:40.000Z", "cid": "forged-0000",
                     "method": "DELETE", "path": "/invoices/inv-1", "status": 204},
                    separators=(",", ":"))


def forged_token() -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = {"alg": "HS256", "crit": ["x\n" + FORGED + "\u2028\x1b[31m"]}
    return f"{b64(json.dumps(header).encode())}.e30.AAAA"


class LogInjectionTests(ProcessTestCase):
    async def test_forged_crit_and_head(self) -> None:
        """
        F1: the outside tester's token (a C{crit} entry holding a newline
        and an access line) gets 401 and one gateway log line, the newline,
        U+2028 and ESC escaped; no line of the log starts with the forgery.
        F4: a HEAD routed to C{GET /ping} is logged with method HEAD.
        """
        gateway = await self.deployment.start_gateway(
            extra=f"auth: {{hs256_secret: {SECRET}}}")
        await self.deployment.start_microservice("examples.billing:service", "billing-f1")
        base = self.deployment.base_url
        response = await treq.get(base + "/ping", pool=self.pool,
                                  headers={"Authorization": "Bearer " + forged_token()})
        self.assertEqual(response.code, 401)
        await response.content()
        cid = response.headers.getRawHeaders("X-Correlation-Id")[0]
        await gateway.wait_for(re.escape(f'"cid":"{cid}"'), reactor)
        [refusal] = [line for line in gateway.lines if "invalid token" in line]
        self.assertIn(f"request {cid}: invalid token: malformed token: Unsupported critical "
                      "extension: x\\n{", refusal)
        self.assertIn("\\u2028\\x1b[31m", refusal)
        self.assertEqual([line for line in gateway.lines if "forged-0000" in line], [refusal])
        self.assertFalse([line for line in gateway.lines if "\x1b" in line or "\u2028" in line])

        response = await treq.request("HEAD", base + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        cid = response.headers.getRawHeaders("X-Correlation-Id")[0]
        line = await gateway.wait_for(rf'\{{"time":"[^"]+","cid":"{re.escape(cid)}".*', reactor)
        record = json.loads(line.group(0))
        self.assertEqual((record["method"], record["route"], record["status"]),
                         ("HEAD", "/ping", 200))

    async def test_control_characters_in_instance_id(self) -> None:
        """
        F2: a microservice configured with an instance id holding ESC and a
        newline does not start (its configuration names the key); the
        gateway registers nothing.
        """
        gateway = await self.deployment.start_gateway()
        process = await self.deployment.start_microservice(
            "examples.billing:service", "billing-ok", wait=False,
            env={"STELLAROUTER_MICRO__INSTANCE_ID": '"evil\\x1b[2J\\n{\\"x\\":1}"'})
        code = await process.ended
        output = "\n".join(process.lines)
        self.assertNotEqual(code, 0, output)
        self.assertIn("instance_id: must be 1 to 256 printable ASCII characters without spaces",
                      output)
        self.assertFalse([line for line in gateway.lines if "registered instance" in line])
