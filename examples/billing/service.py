"""
Billing: a raw C{GET /ping}, a typed C{POST /invoices}, a parameterised
C{GET /invoices/{id}}, a claims-protected C{DELETE /invoices/{id}}, a
streaming upload C{POST /invoices/{id}/attachments} and a streaming
download C{GET /invoices/{id}/export}.  Invoices live in memory (this is a
demo).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Annotated, Any, Dict

from msgspec import Meta

from stellarouter.microservice import (
    BadRequest,
    ClaimRequirement,
    JsonResponse,
    Microservice,
    Problem,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)

service = Microservice("billing", "1.0.0")


@dataclass(frozen=True)
class NewInvoice:
    """
    The body of C{POST /invoices}: the SDK decodes and checks it (a wrong
    body is a 400 naming the field, e.g. C{$.amount_cents: expected int >= 0}).
    """

    customer: Annotated[str, Meta(min_length=1)]
    amount_cents: Annotated[int, Meta(ge=0)]


@dataclass(frozen=True)
class Invoice:
    """
    A stored invoice.
    """

    id: str
    customer: str
    amount_cents: int
    status: str = "open"


_invoices: Dict[str, Invoice] = {}
_numbers = itertools.count(1)


@service.endpoint("GET", "/ping", timeout=5.0)
def ping(ctx: RawRequestContext) -> RawResponse:
    """
    Liveness of the service itself, through the gateway.
    """
    return RawResponse.text("pong")


@service.json("POST", "/invoices", status=201, request_type=NewInvoice, response_type=Invoice)
def create_invoice(ctx: RawRequestContext, new: NewInvoice) -> JsonResponse:
    """
    Create an invoice; answers 201 with it and its C{Location}.
    """
    invoice = Invoice(f"inv-{next(_numbers)}", new.customer, new.amount_cents)
    _invoices[invoice.id] = invoice
    return JsonResponse(invoice, status=201, headers=(("Location", f"/invoices/{invoice.id}"),))


@service.json("GET", "/invoices/{id}")
def get_invoice(ctx: RawRequestContext, _: None) -> Invoice:
    """
    One invoice, or 404 problem+json.
    """
    invoice = _invoices.get(ctx.path_params["id"])
    if invoice is None:
        raise _not_found(ctx)
    return invoice


@service.endpoint("DELETE", "/invoices/{id}",
                  claims=[ClaimRequirement("scope", "billing:write")])
def delete_invoice(ctx: RawRequestContext) -> RawResponse:
    """
    Delete an invoice: needs a token with C{scope} containing
    C{billing:write} (the gateway checks it; the verified claims are in
    C{ctx.claims}).
    """
    if _invoices.pop(ctx.path_params["id"], None) is None:
        raise _not_found(ctx)
    return RawResponse(204)


def _not_found(ctx: RawRequestContext) -> Problem:
    return Problem(404, "invoice-not-found", "Invoice not found",
                   detail=f"no invoice {ctx.path_params['id']}")


@service.endpoint("POST", "/invoices/{id}/attachments", streaming=True, timeout=3600.0,
                  max_request_bytes=4 * 1024 ** 3)
async def attach(ctx: RawRequestContext) -> RawResponse:
    """
    Receive an attachment of any size up to 4 GiB as it arrives, hashing it
    chunk by chunk (nothing is kept): answers its size and sha256.
    """
    digest = hashlib.sha256()
    async for chunk in ctx.body:
        digest.update(chunk)
    return RawResponse.json({"invoice": ctx.path_params["id"], "bytes": ctx.body.received,
                             "sha256": digest.hexdigest()}, status=201)


@service.endpoint("GET", "/invoices/{id}/export", timeout=3600.0)
def export(ctx: RawRequestContext) -> Any:
    """
    Stream an export of C{bytes} bytes (query parameter, default 1 MiB, at
    most 8 GiB), produced 64 KiB at a time only as fast as the client reads.
    """
    try:
        size = int(ctx.query_params.get("bytes", [str(1024 * 1024)])[0])
    except ValueError:
        size = -1
    if not 0 <= size <= 8 * 1024 ** 3:
        raise BadRequest("bytes must be between 0 and 8 GiB")
    return StreamingResponse(200, (("Content-Type", "application/octet-stream"),),
                             export_bytes(size))


def export_bytes(size: int, chunk: int = 64 * 1024) -> Any:
    """
    The deterministic content of an export: C{size} bytes of a repeating
    pattern (so a client can check what it got).
    """
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        sent += len(piece)
        yield piece
