"""
The SDK as a real process: a microservice whose HELLO the gateway rejects
logs the reason once per attempt and, with C{max_hello_rejections}, exits
with status 1.
"""

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.processes import ProcessDeployment

#: An app every gateway rejects: it claims a path of the gateway's own.
rejected = Microservice("rejected", "1.0.0")
rejected.endpoint("GET", "/health/mine")(lambda ctx: RawResponse.text("never"))


class HelloRejectedTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.deployment = ProcessDeployment(reactor, directory)
        self.addCleanup(self.deployment.stop_all)

    async def test_gives_up_with_status_1(self) -> None:
        """
        After C{max_hello_rejections: 2} the process stops by itself with exit
        status 1, having logged the gateway's reason once per rejection.
        """
        await self.deployment.start_gateway()
        process = await self.deployment.start_microservice(
            "tests.integration.test_sdk_processes:rejected", "rejected-1",
            extra="max_hello_rejections: 2", wait=False)
        status = await process.ended
        self.assertEqual(status, 1, "\n".join(process.lines[-20:]))
        reasons = [line for line in process.lines
                   if "reserved for the gateway's own endpoints" in line]
        self.assertEqual(len(reasons), 2, "\n".join(process.lines))
        self.assertIn("(rejection 1)", reasons[0])
        self.assertIn("max_hello_rejections: 2", reasons[1])
