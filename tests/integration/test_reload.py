"""
Hot reload of a running gateway process: an edit is applied within about a
second (polling) or at once on SIGHUP, an invalid edit is refused with the
last good configuration kept, and clients under steady load see no error.
"""

import json
import os
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList

from .test_processes import ProcessTestCase

WHOAMI = "examples.whoami:service"


class ReloadTests(ProcessTestCase):
    timeout = 90

    async def test_reload_under_load(self) -> None:
        """
        Edits to the gateway's file change routing live (here: the neighbour
        region preferred), report listen changes as needing a restart, refuse
        an invalid file, and never fail a client request.
        """
        gateway = await self.deployment.start_gateway(region="eu1", neighbors=["eu2"])
        path = os.path.join(self.deployment.directory, "gw-it.yaml")
        with open(path) as f:
            original = f.read()
        await self.deployment.start_microservice(WHOAMI, "w-eu2", region="eu2")
        await self.deployment.start_microservice(WHOAMI, "w-eu3", region="eu3")
        url = self.deployment.base_url + "/whoami"
        results: List[Any] = []
        running = [True]

        async def client() -> None:
            while running[0]:
                response = await treq.get(url, pool=self.pool)
                body = await response.content()
                results.append((response.code, json.loads(body).get("region")
                                if response.code == 200 else body))

        clients = [Deferred.fromCoroutine(client()) for _ in range(4)]

        def edit(text: str) -> None:
            with open(path + ".new", "w") as f:
                f.write(text)
            os.replace(path + ".new", path)

        seen = len(gateway.lines)
        edit(original.replace("neighbor_regions: [eu2]", "neighbor_regions: [eu3]"))
        await gateway.wait_for(r"configuration reloaded; changed: .*node\.neighbor_regions",
                               reactor, since=seen)
        switched = len(results)
        seen = len(gateway.lines)
        edit(original.replace("neighbor_regions: [eu2]", "neighbor_regions: [eu3]")
             .replace('http: {listen: "tcp:0:', 'http: {listen: "tcp:1:'))
        gateway.signal("HUP")
        await gateway.wait_for(r"need a restart were NOT applied: http\.listen", reactor, since=seen)
        seen = len(gateway.lines)
        edit("node: {region: [broken]\n")
        await gateway.wait_for(r"configuration reload refused; keeping the last good one",
                               reactor, since=seen)
        after = len(results)
        response = await treq.get(url, pool=self.pool)
        self.assertEqual(json.loads(await response.content())["region"], "eu3")
        running[0] = False
        await DeferredList(clients)
        self.assertEqual([r for r in results if r[0] != 200], [])
        self.assertEqual({region for _, region in results[switched + 4:after]}, {"eu3"})
