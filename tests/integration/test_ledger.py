"""
The Ledger example end to end: a gateway and the Ledger microservice as
real twistd processes, the Ledger on Twisted's asyncio reactor with asyncio
handlers awaiting asyncpg against the local PostgreSQL (127.0.0.1:5432,
which scripts/test.sh makes sure answers); a cancelled request stops its
query in the database.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, List

import asyncpg
import treq
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.web.client import ResponseNeverReceived

from examples.ledger.store import APPLICATION_NAME

from .test_processes import ProcessTestCase

LEDGER = "examples.ledger.service:service"

#: The Ledger's database in these tests (it creates it at its first request).
TEST_DSN = "postgresql://postgres@127.0.0.1:5432/ledger_test"


def database(query: str, *args: Any) -> Deferred:
    """
    Run one query against the test database, from a thread with its own
    asyncio loop (this process runs trial's default reactor).

    @return: fires with the rows.
    """
    async def run() -> List[asyncpg.Record]:
        connection = await asyncpg.connect(TEST_DSN)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    return threads.deferToThread(lambda: asyncio.run(run()))


class LedgerTests(ProcessTestCase):
    async def start(self, extra: str = "reactor: asyncio", twistd_args: Any = (),
                    gateway_extra: str = "") -> None:
        await self.deployment.start_gateway(extra=gateway_extra)
        self.ledger = await self.deployment.start_microservice(
            LEDGER, "ledger-it", extra=extra, twistd_args=twistd_args,
            env={"LEDGER_DSN": TEST_DSN})

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """
        One request through the gateway: C{(status, content type, body)},
        the body decoded as JSON when it is.
        """
        data = json.dumps(body).encode() if body is not None else None
        response = await treq.request(method, self.deployment.base_url + path, data=data,
                                      pool=self.pool)
        content = await response.content()
        kind = (response.headers.getRawHeaders("content-type") or [""])[0]
        decoded = json.loads(content) if kind.endswith("/json") or kind.endswith("+json") else content
        return response.code, kind, decoded

    async def test_accounts_and_entries(self) -> None:
        """
        With C{reactor: asyncio} in its YAML (no C{-r} option) the Ledger runs
        on the asyncio reactor and its asyncpg handlers open accounts, post
        entries in transactions (409 on overdraft), answer 404 for unknown
        accounts and stream the entries from a cursor; the rows are in
        PostgreSQL.
        """
        await self.start()
        await self.ledger.wait_for(
            r"reactor class: twisted\.internet\.asyncioreactor\.AsyncioSelectorReactor", reactor)
        status, _, account = await self.call("POST", "/accounts", {"name": "groceries"})
        self.assertEqual((status, account["name"], account["balance_cents"]),
                         (201, "groceries", 0))
        path = f"/accounts/{account['id']}"
        status, _, entry = await self.call("POST", path + "/entries",
                                           {"amount_cents": 5000, "memo": "salary"})
        self.assertEqual((status, entry["balance_cents"]), (201, 5000))
        status, _, entry = await self.call("POST", path + "/entries",
                                           {"amount_cents": -1200, "memo": "market"})
        self.assertEqual((status, entry["balance_cents"]), (201, 3800))
        status, kind, problem = await self.call("POST", path + "/entries",
                                                {"amount_cents": -3801})
        self.assertEqual((status, kind, problem["type"]),
                         (409, "application/problem+json",
                          "https://stellarouter.dev/problems/insufficient-funds"))
        status, _, body = await self.call("GET", path)
        self.assertEqual((status, body["balance_cents"]), (200, 3800))
        status, kind, body = await self.call("GET", path + "/entries")
        self.assertEqual((status, kind), (200, "application/x-ndjson"))
        self.assertEqual([(e["amount_cents"], e["memo"])
                          for e in map(json.loads, body.splitlines())],
                         [(5000, "salary"), (-1200, "market")])
        status, _, problem = await self.call("GET", f"/accounts/{uuid.uuid4()}")
        self.assertEqual((status, problem["type"]),
                         (404, "https://stellarouter.dev/problems/account-not-found"))
        rows = await database("SELECT a.balance_cents, e.amount_cents FROM ledger_accounts a "
                              "JOIN ledger_entries e ON e.account_id = a.id WHERE a.id = $1 "
                              "ORDER BY e.id", uuid.UUID(account["id"]))
        self.assertEqual([tuple(r) for r in rows], [(3800, 5000), (3800, -1200)])

    async def test_twistd_r_asyncio(self) -> None:
        """
        C{twistd -r asyncio stella-micro} (no C{reactor} key) runs the asyncio
        handlers, which see their deadline; before, each answered 500
        "await wasn't used with future".
        """
        await self.start(extra="", twistd_args=["-r", "asyncio"])
        before = time.time()
        status, _, body = await self.call("GET", "/reports/slow?seconds=0")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["slept"], 0)
        self.assertGreater(body["deadline"], before)
        self.assertTrue(0 < body["seconds_left"] <= 60, body)

    async def test_default_reactor_names_the_fix(self) -> None:
        """
        Started on the default reactor (no C{-r}, no C{reactor} key) the
        asyncpg handlers answer a 500 problem naming the fix, and the log
        says it too.
        """
        await self.start(extra="")
        status, kind, problem = await self.call("GET", "/reports/slow?seconds=0")
        self.assertEqual((status, kind), (500, "application/problem+json"))
        self.assertEqual(problem["type"],
                         "https://stellarouter.dev/problems/asyncio-reactor-required")
        self.assertIn("twistd -r asyncio stella-micro", problem["detail"])
        await self.ledger.wait_for(r"awaited asyncio, which needs Twisted's asyncio reactor .*"
                                   r"twistd -r asyncio stella-micro", reactor)

    async def test_cancelled_query_stops_in_the_database(self) -> None:
        """
        A client that leaves during a slow query (C{pg_sleep(30)}) gets its
        request cancelled; the handler's asyncio task is cancelled, asyncpg
        cancels the query, and PostgreSQL's own view (C{pg_stat_activity})
        shows the backend no longer running it, long before the 30 s.
        """
        await self.start()
        request = treq.get(self.deployment.base_url + "/reports/slow?seconds=30",
                           pool=self.pool)
        match = await self.ledger.wait_for(
            r"slow report (\S+) running on PostgreSQL backend (\d+)", reactor)
        cid, backend = match.group(1), int(match.group(2))
        started = time.monotonic()
        await self.until_backend(backend, lambda row: row is not None and row["state"] == "active"
                                 and "pg_sleep" in row["query"])
        request.cancel()
        self.failureResultOf(request, ResponseNeverReceived)
        await self.ledger.wait_for(rf"request {cid} cancelled: ClientDisconnected", reactor)
        await self.ledger.wait_for(rf"slow report {cid} stopped: CancelledError", reactor)
        await self.until_backend(backend, lambda row: row is None or row["state"] != "active")
        self.assertLess(time.monotonic() - started, 20)
        status, _, body = await self.call("GET", "/reports/slow?seconds=0")
        self.assertEqual((status, body["slept"]), (200, 0))

    async def test_gateway_timeout_stops_the_query(self) -> None:
        """
        A slow query outliving the endpoint's timeout (1 s, set in the
        gateway's YAML): the client gets 504, and the query stops in the
        database (the CANCEL, or the deadline given to asyncpg as its
        timeout, whichever comes first).
        """
        await self.start(gateway_extra=(
            "services: [{name: ledger, endpoints: "
            "[{method: GET, path: /reports/slow, timeout: 1}]}]"))
        request = treq.get(self.deployment.base_url + "/reports/slow?seconds=30",
                           pool=self.pool)
        match = await self.ledger.wait_for(
            r"slow report (\S+) running on PostgreSQL backend (\d+) \(deadline [0-9.]+\)",
            reactor)
        cid, backend = match.group(1), int(match.group(2))
        response = await request
        self.assertEqual(response.code, 504)
        self.assertEqual(json.loads(await response.content())["correlation_id"], cid)
        await self.ledger.wait_for(rf"slow report {cid} stopped: ", reactor)
        await self.until_backend(backend, lambda row: row is None or row["state"] != "active")

    async def until_backend(self, backend: int, condition: Any, limit: float = 10.0) -> None:
        """
        Poll C{pg_stat_activity} for the Ledger's backend C{backend} (its row,
        or C{None} once gone) until C{condition} holds, at most C{limit}
        seconds.
        """
        deadline = time.monotonic() + limit
        while True:
            rows = await database(
                "SELECT state, query FROM pg_stat_activity WHERE pid = $1 "
                "AND application_name = $2", backend, APPLICATION_NAME)
            row = rows[0] if rows else None
            if condition(row):
                return
            if time.monotonic() > deadline:
                self.fail(f"backend {backend} still {dict(row) if row else None} "
                          f"after {limit}s")
            await deferLater(reactor, 0.05, lambda: None)
