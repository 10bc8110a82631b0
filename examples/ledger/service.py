"""
Ledger: accounts and their entries in PostgreSQL, served by asyncio
handlers that await asyncpg.  It runs on Twisted's asyncio reactor
(C{reactor: asyncio} in C{ledger.yaml}).

    POST /accounts                  {"name": "rent"}                 -> 201 account
    GET  /accounts/{id}                                              -> the account, or 404
    POST /accounts/{id}/entries     {"amount_cents": -1200, "memo": "..."}
                                    -> 201 entry with the new balance; 409 if it would overdraw
    GET  /accounts/{id}/entries     -> the entries as NDJSON, streamed from a database cursor
    GET  /reports/slow?seconds=N    -> runs SELECT pg_sleep(N): cancel the request (leave, or
                                       let the gateway time it out) and the query stops

The database is C{LEDGER_DSN} (default L{DEFAULT_DSN}); it and its tables
are created at the first request if missing.  Every query gets the
request's deadline as its timeout, so the database stops working on a
request nobody waits for even if the gateway's CANCEL were lost.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from twisted.logger import Logger

from stellarouter.microservice import (
    BadRequest,
    JsonResponse,
    Microservice,
    Problem,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)

from .store import DEFAULT_DSN, InsufficientFunds, LedgerStore, UnknownAccount

service = Microservice("ledger", "1.0.0")
store = LedgerStore(os.environ.get("LEDGER_DSN", DEFAULT_DSN))
log = Logger(namespace="examples.ledger")


@dataclass(frozen=True)
class NewAccount:
    """
    The body of C{POST /accounts}.
    """

    name: str

    @classmethod
    def from_json(cls, obj: Any) -> "NewAccount":
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
            raise BadRequest("expected {\"name\": a non-empty string}")
        return cls(obj["name"])


@dataclass(frozen=True)
class NewEntry:
    """
    The body of C{POST /accounts/{id}/entries}: a credit (positive) or a
    debit (negative), in cents.
    """

    amount_cents: int
    memo: str

    @classmethod
    def from_json(cls, obj: Any) -> "NewEntry":
        if not isinstance(obj, dict):
            raise BadRequest("expected a JSON object")
        amount, memo = obj.get("amount_cents"), obj.get("memo", "")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise BadRequest("'amount_cents' must be a non-zero integer")
        if not isinstance(memo, str):
            raise BadRequest("'memo' must be a string")
        return cls(amount, memo)


def seconds_left(ctx: RawRequestContext) -> Optional[float]:
    """
    The time the request has before its deadline, as a query timeout
    (C{None}: no deadline).
    """
    if ctx.deadline is None:
        return None
    return max(ctx.deadline - time.time(), 0.001)


def _account_json(row: Any) -> dict:
    return {"id": str(row["id"]), "name": row["name"], "balance_cents": row["balance_cents"]}


@service.json("POST", "/accounts", status=201, request_type=NewAccount.from_json)
async def create_account(ctx: RawRequestContext, new: NewAccount) -> JsonResponse:
    """
    Open an account with a zero balance.
    """
    row = await store.create_account(new.name, timeout=seconds_left(ctx))
    return JsonResponse(_account_json(row), status=201,
                        headers=(("Location", f"/accounts/{row['id']}"),))


@service.json("GET", "/accounts/{id}")
async def get_account(ctx: RawRequestContext, _: None) -> Any:
    """
    One account and its balance, or 404 problem+json.
    """
    account_id = _account_id(ctx)
    try:
        return _account_json(await store.account(account_id, timeout=seconds_left(ctx)))
    except UnknownAccount:
        raise _not_found(ctx) from None


@service.json("POST", "/accounts/{id}/entries", status=201, request_type=NewEntry.from_json)
async def post_entry(ctx: RawRequestContext, new: NewEntry) -> Any:
    """
    Record a credit or debit; 409 if the balance would go below zero.
    """
    account_id = _account_id(ctx)
    try:
        row = await store.post_entry(account_id, new.amount_cents, new.memo,
                                     timeout=seconds_left(ctx))
    except UnknownAccount:
        raise _not_found(ctx) from None
    except InsufficientFunds as e:
        raise Problem(409, "insufficient-funds", "Insufficient funds",
                      detail=f"the balance is {e.args[0]} cents; "
                             f"{-new.amount_cents} cannot be taken") from None
    return JsonResponse({"id": row["id"], "account_id": str(row["account_id"]),
                         "amount_cents": row["amount_cents"], "memo": row["memo"],
                         "balance_cents": row["balance_cents"]}, status=201)


@service.endpoint("GET", "/accounts/{id}/entries", timeout=300.0)
async def list_entries(ctx: RawRequestContext) -> Any:
    """
    Every entry of the account as one JSON object per line, streamed from a
    database cursor as fast as the client reads.
    """
    account_id = _account_id(ctx)
    try:
        await store.account(account_id, timeout=seconds_left(ctx))
    except UnknownAccount:
        raise _not_found(ctx) from None

    async def lines() -> AsyncIterator[bytes]:
        async for row in store.entries(account_id):
            yield json.dumps({"id": row["id"], "amount_cents": row["amount_cents"],
                              "memo": row["memo"]}).encode() + b"\n"

    return StreamingResponse(200, (("Content-Type", "application/x-ndjson"),), lines())


@service.endpoint("GET", "/reports/slow", timeout=60.0)
async def slow_report(ctx: RawRequestContext) -> RawResponse:
    """
    Run C{SELECT pg_sleep(seconds)} (query parameter, default 10, at most
    55).  If the request is cancelled meanwhile, asyncpg cancels the query
    in the database.
    """
    try:
        seconds = float(ctx.query_params.get("seconds", ["10"])[0])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 55:
        raise BadRequest("seconds must be a number between 0 and 55")

    def started(backend: int) -> None:
        log.info("slow report {cid} running on PostgreSQL backend {backend} "
                 "(deadline {deadline})", cid=ctx.correlation_id, backend=backend,
                 deadline=ctx.deadline)

    try:
        slept = await store.slow_report(seconds, seconds_left(ctx), started)
    except BaseException as e:
        log.info("slow report {cid} stopped: {error}", cid=ctx.correlation_id,
                 error=type(e).__name__)
        raise
    return RawResponse.json({"slept": slept, "deadline": ctx.deadline,
                             "seconds_left": seconds_left(ctx)})


def _account_id(ctx: RawRequestContext) -> uuid.UUID:
    """
    @raise Problem: 404, the id is not a UUID (so no account has it).
    """
    try:
        return uuid.UUID(ctx.path_params["id"])
    except ValueError:
        raise _not_found(ctx) from None


def _not_found(ctx: RawRequestContext) -> Problem:
    return Problem(404, "account-not-found", "Account not found",
                   detail=f"no account {ctx.path_params['id']}")


__all__ = ["service", "store"]
