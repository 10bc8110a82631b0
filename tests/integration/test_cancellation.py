"""
Cancellation end to end with real processes: client disconnect, endpoint
timeout and gateway shutdown, seen from the client and the microservice.
"""

import json
import re

import treq
from twisted.internet import reactor
from twisted.web.client import ResponseNeverReceived

from .test_processes import ProcessTestCase

SLOWPOKE = "examples.slowpoke:service"


class CancellationTests(ProcessTestCase):
    async def start(self) -> None:
        self.gateway = await self.deployment.start_gateway()
        self.slowpoke = await self.deployment.start_microservice(SLOWPOKE, "slowpoke-it")

    async def started(self) -> str:
        match = await self.slowpoke.wait_for(r"slow request ([0-9a-f-]{36}) started", reactor)
        return match.group(1)

    async def test_client_disconnect(self) -> None:
        """
        A client that goes away mid-request gets its handler cancelled: the
        handler sees CancelledError and the microservice logs the reason with
        the correlation id.
        """
        await self.start()
        request = treq.get(self.deployment.base_url + "/slow?seconds=30", pool=self.pool)
        cid = await self.started()
        request.cancel()
        self.failureResultOf(request, ResponseNeverReceived)
        await self.slowpoke.wait_for(rf"request {cid} cancelled: ClientDisconnected", reactor)
        await self.slowpoke.wait_for(rf"slow request {cid} cancelled at [0-9.]+: "
                                     "ClientDisconnected", reactor)
        await self.gateway.wait_for(rf"client of request {cid} disconnected; CANCEL sent",
                                    reactor)
        response = await treq.get(self.deployment.base_url + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_timeout(self) -> None:
        """
        An endpoint whose timeout elapses gives the client 504 problem+json
        and the microservice exactly one CANCEL Timeout.
        """
        await self.start()
        response = await treq.get(self.deployment.base_url + "/slow/timeout", pool=self.pool)
        self.assertEqual(response.code, 504)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/problem+json"])
        problem = json.loads(await response.content())
        cid = problem["correlation_id"]
        self.assertEqual(response.headers.getRawHeaders("x-correlation-id"), [cid])
        await self.slowpoke.wait_for(rf"slow request {cid} cancelled at [0-9.]+: Timeout", reactor)
        # A later request on the same connection completes after any CANCEL
        # frame the gateway could still have queued for the first one.
        response = await treq.get(self.deployment.base_url + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        cancels = [line for line in self.slowpoke.lines
                   if re.search(rf"request {cid} cancelled: Timeout", line)]
        self.assertEqual(len(cancels), 1, cancels)

    async def test_gateway_shutdown(self) -> None:
        """
        A gateway stopped with SIGTERM while a request is in flight answers
        it 503 and sends CANCEL Shutdown before it closes.
        """
        await self.start()
        request = treq.get(self.deployment.base_url + "/slow?seconds=30", pool=self.pool)
        cid = await self.started()
        self.gateway.signal("TERM")
        response = await request
        self.assertEqual(response.code, 503)
        problem = json.loads(await response.content())
        self.assertEqual(problem["type"], "https://stellarouter.dev/problems/shutting-down")
        await self.slowpoke.wait_for(rf"slow request {cid} cancelled at [0-9.]+: Shutdown", reactor)
        await self.assertStoppedCleanly(self.gateway)
