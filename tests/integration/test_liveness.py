"""
Liveness and routing with real processes: a frozen instance fails over to
its twin and comes back, region tiers, configured default versions, drain
under load, two gateways.
"""

import json
from collections import Counter
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from .test_processes import ProcessTestCase

WHOAMI = "examples.whoami:service"
# No pings during these tests: a ping bucket on a loaded machine would skew the even
# round-robin the first assertions rely on; liveness comes from heartbeats alone.
FAST_HEALTH = "health: {degraded_after: 0.6, unhealthy_after: 1.2, sweep_interval: 0.1, ping_interval: 60}"
FAST_BEAT = "heartbeat_interval: 0.1"


class LivenessTests(ProcessTestCase):
    timeout = 90

    async def who(self, gateway: Any = None, headers: Any = None) -> dict:
        base = (gateway or self.deployment.gateway).base_url
        response = await treq.get(base + "/whoami", headers=headers, pool=self.pool)
        body = await response.content()
        self.assertEqual(response.code, 200, body)
        return json.loads(body)

    async def served_by(self, count: int, gateway: Any = None) -> Counter:
        return Counter([(await self.who(gateway))["instance_id"] for _ in range(count)])

    async def test_frozen_instance_fails_over_and_returns(self) -> None:
        """
        An instance frozen with SIGSTOP stops heartbeating, goes DEGRADED then
        UNHEALTHY and gets no requests while its twin serves them all; after
        SIGCONT it is routed to again.
        """
        gateway = await self.deployment.start_gateway(extra=FAST_HEALTH)
        frozen = await self.deployment.start_microservice(WHOAMI, "w-frozen", extra=FAST_BEAT)
        await self.deployment.start_microservice(WHOAMI, "w-twin", extra=FAST_BEAT)
        self.assertEqual(set(await self.served_by(8)), {"w-frozen", "w-twin"})
        seen = len(gateway.lines)
        frozen.signal("STOP")
        await gateway.wait_for(r"instance w-frozen .* -> unhealthy", reactor, since=seen)
        self.assertEqual(await self.served_by(10), Counter({"w-twin": 10}))
        seen = len(gateway.lines)
        frozen.signal("CONT")
        await gateway.wait_for(r"instance w-frozen .* -> healthy", reactor, since=seen)
        self.assertIn("w-frozen", await self.served_by(10))

    async def test_region_tiers(self) -> None:
        """
        Traffic stays in the gateway's region; when both own-region instances
        stop it moves to the only other region, then to a neighbour region
        that appears, and back home when the own region returns.
        """
        # No pings (as FAST_HEALTH): on a loaded machine one instance's ping bucket
        # can be worse than its twin's for the whole test, and the gateway then
        # rightly sends every request to the twin.
        gateway = await self.deployment.start_gateway(region="eu1", neighbors=["eu2"],
                                                      extra="health: {ping_interval: 60}")
        start = self.deployment.start_microservice
        eu1a = await start(WHOAMI, "w-eu1-a", region="eu1")
        eu1b = await start(WHOAMI, "w-eu1-b", region="eu1")
        await start(WHOAMI, "w-us1", region="us1")
        self.assertEqual(set(await self.served_by(12)), {"w-eu1-a", "w-eu1-b"})
        for process in (eu1a, eu1b):
            process.signal("TERM")
            await process.ended
            await gateway.wait_for(rf"instance {process.name} .* disconnected", reactor)
        self.assertEqual(await self.served_by(5), Counter({"w-us1": 5}))
        await start(WHOAMI, "w-eu2", region="eu2")
        self.assertEqual(await self.served_by(5), Counter({"w-eu2": 5}))
        await start(WHOAMI, "w-eu1-c", region="eu1")
        self.assertEqual(await self.served_by(5), Counter({"w-eu1-c": 5}))

    async def test_default_version_and_header(self) -> None:
        """
        With 1.0.0 and 1.1.0 connected, no header gives the configured
        default 1.0.0; X-Stella-Version picks exactly; 1.1 is 400; 9.9.9 is 404.
        """
        await self.deployment.start_gateway(
            extra="services: [{name: whoami, default_version: 1.0.0}]")
        await self.deployment.start_microservice(WHOAMI, "w-100")
        await self.deployment.start_microservice("examples.whoami:service_v1_1", "w-110")
        self.assertEqual({(await self.who())["version"] for _ in range(6)}, {"1.0.0"})
        picked = await self.who(headers={"X-Stella-Version": "1.1.0"})
        self.assertEqual(picked["instance_id"], "w-110")
        base = self.deployment.base_url
        for header, status in (("1.1", 400), ("9.9.9", 404)):
            response = await treq.get(base + "/whoami", headers={"X-Stella-Version": header},
                                      pool=self.pool)
            self.assertEqual(response.code, status)
            await response.content()

    async def test_drain_under_load(self) -> None:
        """
        Under steady load on two instances, stopping one with SIGTERM gives
        the clients zero errors: it drains, the other takes the traffic.
        """
        await self.deployment.start_gateway()
        leaving = await self.deployment.start_microservice(WHOAMI, "w-leaving")
        await self.deployment.start_microservice(WHOAMI, "w-staying")
        url = self.deployment.base_url + "/whoami?delay=0.01"
        results: List[Any] = []
        running = [True]

        async def client() -> None:
            while running[0]:
                try:
                    response = await treq.get(url, pool=self.pool)
                    body = await response.content()
                    results.append((response.code, json.loads(body)["instance_id"]
                                    if response.code == 200 else body))
                except Exception as e:  # a transport error is an error too
                    results.append((0, repr(e)))

        from twisted.internet.defer import Deferred

        clients = [Deferred.fromCoroutine(client()) for _ in range(8)]
        await deferLater(reactor, 1.0, lambda: None)
        before = len(results)
        leaving.signal("TERM")
        await self.assertStoppedCleanly(leaving)
        stopped_at = len(results)
        await deferLater(reactor, 0.5, lambda: None)
        running[0] = False
        await DeferredList(clients)
        errors = [r for r in results if r[0] != 200]
        self.assertEqual(errors, [])
        self.assertGreater(before, 20)
        self.assertEqual({who for _, who in results[:before]}, {"w-leaving", "w-staying"})
        self.assertEqual({who for _, who in results[stopped_at + 8:]}, {"w-staying"})
        print(f"drain under load: {len(results)} requests, {len(errors)} errors")

    async def test_two_gateways(self) -> None:
        """
        A microservice configured with two gateways registers with both and
        is routable from either.
        """
        first = await self.deployment.start_gateway(node_id="gw-one")
        second = await self.deployment.start_gateway(node_id="gw-two")
        await self.deployment.start_microservice(WHOAMI, "w-both", gateways=[first, second])
        self.assertEqual((await self.who(first))["instance_id"], "w-both")
        self.assertEqual((await self.who(second))["instance_id"], "w-both")
