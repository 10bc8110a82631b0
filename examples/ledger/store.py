"""
The ledger's PostgreSQL storage, through asyncpg: accounts with a balance
and the entries that moved it.

The database named by the DSN, its tables and its index are created at the
first use if they are missing (idempotent, safe with several instances
starting at once); nothing else has to be set up by hand.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any, AsyncIterator, Optional
from urllib.parse import urlsplit

try:
    import asyncpg
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "the ledger example needs asyncpg: pip install 'stellarouter[ledger]' "
        "(or pip install asyncpg)") from e

#: Where the ledger keeps its data unless C{LEDGER_DSN} says otherwise: the
#: local PostgreSQL, role C{postgres} (trust authentication on 127.0.0.1, as
#: Debian's test setups have it), database C{ledger}.
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/ledger"

#: The name this service's connections show in C{pg_stat_activity}.
APPLICATION_NAME = "stella-ledger"

_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

#: Serialises schema creation between instances starting at once (CREATE
#: TABLE IF NOT EXISTS is not safe against a concurrent twin).
_SCHEMA_LOCK = 0x1ED6E4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_accounts (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    balance_cents bigint NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ledger_entries (
    id bigserial PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES ledger_accounts (id),
    amount_cents bigint NOT NULL,
    memo text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_entries_by_account ON ledger_entries (account_id, id);
"""


class UnknownAccount(Exception):
    """
    No account has this id.
    """


class InsufficientFunds(Exception):
    """
    The entry would take the balance below zero.
    """


def database_of(dsn: str) -> str:
    """
    The database a C{postgresql://} DSN names.

    @raise ValueError: it names none, or one that is not a plain lower-case
        identifier (the ledger creates it, so it must be safe to quote).
    """
    name = urlsplit(dsn).path.lstrip("/")
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"the DSN must name a database [a-z_][a-z0-9_]*, not {name!r}")
    return name


async def ensure_database(dsn: str) -> None:
    """
    Create the DSN's database if it does not exist yet (connecting to the
    server's C{postgres} maintenance database for that).
    """
    name = database_of(dsn)
    try:
        connection = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return
    admin = await asyncpg.connect(dsn, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass  # another instance created it meanwhile
    finally:
        await admin.close()


class LedgerStore:
    """
    Accounts and entries in PostgreSQL.  The connection pool is created at
    the first call, on the running asyncio loop (the reactor's).
    """

    def __init__(self, dsn: str, max_connections: int = 10) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: Optional[asyncpg.Pool] = None
        self._opening: Optional[asyncio.Future] = None

    async def pool(self) -> asyncpg.Pool:
        """
        The connection pool, with the database and schema in place.
        """
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            # One opening shared by the requests that arrive meanwhile; it
            # is not cancelled with the first of them.
            self._opening = asyncio.ensure_future(self._open())
        try:
            self._pool = await asyncio.shield(self._opening)
        except Exception:
            self._opening = None  # the next request tries again
            raise
        return self._pool

    async def _open(self) -> asyncpg.Pool:
        await ensure_database(self.dsn)
        pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.max_connections,
            server_settings={"application_name": APPLICATION_NAME})
        async with pool.acquire() as connection:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await connection.execute(_SCHEMA)
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def create_account(self, name: str, timeout: Optional[float]) -> Any:
        """
        A new account with a zero balance.
        """
        pool = await self.pool()
        return await pool.fetchrow(
            "INSERT INTO ledger_accounts (id, name) VALUES ($1, $2) "
            "RETURNING id, name, balance_cents", uuid.uuid4(), name, timeout=timeout)

    async def account(self, account_id: uuid.UUID, timeout: Optional[float]) -> Any:
        """
        @raise UnknownAccount: no such account.
        """
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT id, name, balance_cents FROM ledger_accounts WHERE id = $1",
            account_id, timeout=timeout)
        if row is None:
            raise UnknownAccount(account_id)
        return row

    async def post_entry(self, account_id: uuid.UUID, amount_cents: int, memo: str,
                         timeout: Optional[float]) -> Any:
        """
        Record an entry and move the balance by it, in one transaction.

        @return: the entry, with the new C{balance_cents}.
        @raise UnknownAccount: no such account.
        @raise InsufficientFunds: the balance would go below zero.
        """
        pool = await self.pool()
        async with pool.acquire() as connection:
            async with connection.transaction():
                balance = await connection.fetchval(
                    "SELECT balance_cents FROM ledger_accounts WHERE id = $1 FOR UPDATE",
                    account_id, timeout=timeout)
                if balance is None:
                    raise UnknownAccount(account_id)
                if balance + amount_cents < 0:
                    raise InsufficientFunds(balance)
                await connection.execute(
                    "UPDATE ledger_accounts SET balance_cents = $2 WHERE id = $1",
                    account_id, balance + amount_cents, timeout=timeout)
                return await connection.fetchrow(
                    "INSERT INTO ledger_entries (account_id, amount_cents, memo) "
                    "VALUES ($1, $2, $3) RETURNING id, account_id, amount_cents, memo, "
                    "$4::bigint AS balance_cents", account_id, amount_cents, memo,
                    balance + amount_cents, timeout=timeout)

    async def entries(self, account_id: uuid.UUID) -> AsyncIterator[Any]:
        """
        The account's entries, oldest first, read through a server-side
        cursor (a long history is never held in memory at once).  The
        connection is held until the iteration ends or the iterator is
        closed.
        """
        pool = await self.pool()
        async with pool.acquire() as connection:
            async with connection.transaction(readonly=True):
                async for row in connection.cursor(
                        "SELECT id, amount_cents, memo FROM ledger_entries "
                        "WHERE account_id = $1 ORDER BY id", account_id, prefetch=100):
                    yield row

    async def slow_report(self, seconds: float, timeout: Optional[float],
                          started: Any) -> float:
        """
        A deliberately slow query (C{pg_sleep}), to show cancellation: a
        cancelled request cancels it in the database.

        @param started: called with the backend's process id once the
            query is about to run.
        @return: the seconds slept.
        """
        pool = await self.pool()
        async with pool.acquire() as connection:
            started(connection.get_server_pid())
            await connection.execute("SELECT pg_sleep($1)", seconds, timeout=timeout)
        return seconds


__all__ = ["APPLICATION_NAME", "DEFAULT_DSN", "InsufficientFunds", "LedgerStore",
           "UnknownAccount", "database_of", "ensure_database"]
