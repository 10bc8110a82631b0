"""
The Billing example (examples/billing/service.py), tested as a user tests
their own service: with L{ServiceClient}, no sockets, no gateway.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.testing.client import ServiceClient

# The module (the package's attribute "service" is the Microservice).
billing = importlib.import_module("examples.billing.service")

WRITE = {"scope": "billing:write"}


class BillingExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(billing, "_invoices", {})
        self.patch(billing, "_numbers", itertools.count(1))
        self.client = ServiceClient(billing.service)

    def test_create_read_delete(self) -> None:
        """
        An invoice is created (201 with Location), read back, and deleted
        with the write scope (401 without a token, 403 without the scope).
        """
        created = self.successResultOf(self.client.post(
            "/invoices", json={"customer": "acme", "amount_cents": 1250}))
        self.assertEqual(created.status, 201)
        self.assertEqual(created.headers.get("Location"), "/invoices/inv-1")
        self.assertEqual(created.json(), {"id": "inv-1", "customer": "acme",
                                          "amount_cents": 1250, "status": "open"})
        read = self.successResultOf(self.client.get("/invoices/inv-1"))
        self.assertEqual(read.json()["amount_cents"], 1250)
        self.assertEqual(self.successResultOf(self.client.delete("/invoices/inv-1")).status, 401)
        self.assertEqual(self.successResultOf(self.client.delete(
            "/invoices/inv-1", claims={"scope": "billing:read"})).status, 403)
        self.assertEqual(self.successResultOf(self.client.delete(
            "/invoices/inv-1", claims=WRITE)).status, 204)
        gone = self.successResultOf(self.client.get("/invoices/inv-1"))
        self.assertEqual(gone.status, 404)
        self.assertEqual(gone.json()["type"],
                         "https://stellarouter.dev/problems/invoice-not-found")

    def test_bodies_checked_by_the_sdk(self) -> None:
        """
        A body that does not fit is a 400 naming the field and what was
        expected (the example has no hand-written validation).
        """
        cases = [
            ({"customer": "acme", "amount_cents": "12"}, "$.amount_cents: expected int, got str"),
            ({"customer": "acme", "amount_cents": -1}, "$.amount_cents: expected int >= 0"),
            ({"customer": "", "amount_cents": 1}, "$.customer: expected str of length >= 1"),
            ({"amount_cents": 1}, "$.customer: required field missing"),
        ]
        for body, detail in cases:
            response = self.successResultOf(self.client.post("/invoices", json=body))
            self.assertEqual(response.status, 400, body)
            self.assertEqual(response.json()["detail"], "request body does not fit: " + detail)
        self.assertEqual(billing._invoices, {})

    def test_streams(self) -> None:
        """
        The export streams the deterministic pattern; the attachment upload
        is hashed as it arrives; a bad size is a 400 problem.
        """
        export = self.successResultOf(self.client.get("/invoices/inv-1/export?bytes=300000"))
        self.assertEqual(export.body, b"".join(billing.export_bytes(300_000)))
        chunks = [b"a" * 100_000] * 30
        upload = self.successResultOf(self.client.post("/invoices/inv-1/attachments",
                                                       body=iter(chunks)))
        self.assertEqual(upload.status, 201)
        self.assertEqual(upload.json()["sha256"], hashlib.sha256(b"".join(chunks)).hexdigest())
        bad = self.successResultOf(self.client.get("/invoices/inv-1/export?bytes=-1"))
        self.assertEqual((bad.status, bad.headers.get("content-type")),
                         (400, "application/problem+json"))

    def test_leaving_an_export_closes_it(self) -> None:
        """
        A client that leaves a large export stops its production.
        """
        response = self.successResultOf(self.client.get(
            "/invoices/inv-1/export?bytes=1000000000", stream=True))
        response.close()
        self.assertEqual(self.client.in_flight, 0)
