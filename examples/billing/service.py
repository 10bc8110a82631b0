"""
Billing: a raw C{GET /ping}, a typed C{POST /invoices} and a parameterised
C{GET /invoices/{id}}.  Invoices live in memory (this is a demo).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict

from stellarouter.microservice import (
    JsonResponse,
    Microservice,
    RawRequestContext,
    RawResponse,
)
from stellarouter.microservice.endpoints import BadRequestBody

service = Microservice("billing", "1.0.0")


@dataclass(frozen=True)
class NewInvoice:
    """
    The body of C{POST /invoices}.
    """

    customer: str
    amount_cents: int

    @classmethod
    def from_json(cls, obj: Any) -> "NewInvoice":
        if not isinstance(obj, dict):
            raise BadRequestBody("expected a JSON object")
        customer, amount = obj.get("customer"), obj.get("amount_cents")
        if not isinstance(customer, str) or not customer:
            raise BadRequestBody("'customer' must be a non-empty string")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise BadRequestBody("'amount_cents' must be a non-negative integer")
        return cls(customer, amount)


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


@service.json("POST", "/invoices", status=201, request_type=NewInvoice.from_json)
def create_invoice(ctx: RawRequestContext, new: NewInvoice) -> JsonResponse:
    """
    Create an invoice; answers 201 with it and its C{Location}.
    """
    invoice = Invoice(f"inv-{next(_numbers)}", new.customer, new.amount_cents)
    _invoices[invoice.id] = invoice
    return JsonResponse(invoice, status=201, headers=(("Location", f"/invoices/{invoice.id}"),))


@service.json("GET", "/invoices/{id}")
def get_invoice(ctx: RawRequestContext, _: None) -> Any:
    """
    One invoice, or 404 problem+json.
    """
    invoice = _invoices.get(ctx.path_params["id"])
    if invoice is None:
        return RawResponse(
            404, (("Content-Type", "application/problem+json"),),
            (b'{"type":"https://stellarouter.dev/problems/invoice-not-found",'
             b'"title":"Invoice not found","status":404}'),
        )
    return invoice
