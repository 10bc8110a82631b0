"""
Safe retries with real processes (issue 24): a gateway and two instances
as twistd processes on loopback; one instance is SIGKILLed while GETs and
POSTs are in flight on it.  The GETs are answered by the other instance;
the POSTs are not sent again, and every POST ran exactly once.
"""

import collections
import os
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList

from .test_processes import ProcessTestCase

APP = "tests.integration.retry_app:service"


class KilledInstanceTests(ProcessTestCase):
    timeout = 60

    async def test_kill_9_with_requests_in_flight(self) -> None:
        """
        GETs in flight on a SIGKILLed instance get 200 from the other one
        (X-Stella-Attempts: 2); POSTs in flight on it get 502 and none runs
        twice (the ledger both instances append to counts executions).
        """
        ledger = os.path.abspath(self.mktemp())
        env = {"RETRY_LEDGER": ledger}
        deployment = self.deployment
        await deployment.start_gateway()
        a = await deployment.start_microservice(APP, "a", env=env)
        await deployment.start_microservice(APP, "b", env=env)
        base = deployment.base_url
        gets = [treq.get(base + "/hold?seconds=3", pool=self.pool) for _ in range(4)]
        await a.wait_for(r"started GET .* on a", reactor)
        posts = [treq.post(base + "/charge?seconds=3", b"{}", pool=self.pool)
                 for _ in range(4)]
        await a.wait_for(r"started POST .* on a", reactor)
        calls: List[Any] = gets + posts
        a.signal("KILL")
        await a.ended
        results = await DeferredList(calls, consumeErrors=True)
        outcomes = collections.Counter()
        attempts = collections.Counter()
        for (ok, response), method in zip(results, ["GET"] * 4 + ["POST"] * 4):
            self.assertTrue(ok, response)
            await response.content()
            outcomes[method, response.code] += 1
            attempts[method, (response.headers.getRawHeaders("X-Stella-Attempts") or ["1"])[0]] += 1
        with open(ledger) as f:
            started = f.read().splitlines()
        posts_on_a = sum(1 for line in started if line.startswith("started POST")
                         and line.endswith(" on a"))
        self.assertEqual(outcomes["GET", 200], 4, outcomes)
        self.assertGreaterEqual(attempts["GET", "2"], 1, attempts)
        posts_on_b = sum(1 for line in started if line.startswith("started POST")
                         and line.endswith(" on b"))
        # Every POST answered 200 ran once, on b; every other one is a 502, not
        # retried: those that started on a, and any written to a that it had
        # not read yet when it died (the gateway cannot tell it did not run).
        self.assertEqual(outcomes["POST", 200], posts_on_b, (outcomes, started))
        self.assertEqual(outcomes["POST", 200] + outcomes["POST", 502], 4, outcomes)
        self.assertGreaterEqual(outcomes["POST", 502], posts_on_a, (outcomes, started))
        post_ids = [line.split()[2] for line in started if line.startswith("started POST")]
        self.assertEqual(len(set(post_ids)), len(post_ids), f"a POST ran twice: {started}")
