"""
Tests for L{stellarouter.testing.client.ServiceClient}: a microservice
unit-tested without sockets or a gateway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, List

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import CancelReason
from stellarouter.common.interfaces import IFrameSender
from stellarouter.microservice import (
    ClaimRequirement,
    Microservice,
    Problem,
    RawResponse,
    StreamingResponse,
)
from stellarouter.testing.client import ServiceClient, StreamAborted


@dataclass
class NewInvoice:
    customer: str
    amount_cents: int


def make_service(events: List[Any]) -> Microservice:
    service = Microservice("billing", "1.2.3")

    @service.json("GET", "/invoices/{id}")
    def get_invoice(ctx: Any, _: None) -> Any:
        if ctx.path_params["id"] == "missing":
            raise Problem(404, "invoice-not-found", detail="no invoice missing")
        return {"id": ctx.path_params["id"], "full": ctx.query_params.get("full"),
                "claims": dict(ctx.claims)}

    @service.json("POST", "/invoices", status=201, request_type=NewInvoice)
    def create(ctx: Any, new: NewInvoice) -> Any:
        return {"customer": new.customer}

    @service.endpoint("DELETE", "/invoices/{id}",
                      claims=[ClaimRequirement("scope", "billing:write")])
    def delete(ctx: Any) -> RawResponse:
        return RawResponse(204)

    @service.endpoint("GET", "/slow", timeout=5.0)
    def slow(ctx: Any) -> Deferred:
        events.append(("deadline", ctx.deadline))
        ctx.cancelled.addCallback(lambda reason: events.append(("cancelled", reason)))
        return Deferred()

    @service.endpoint("GET", "/export")
    def export(ctx: Any) -> StreamingResponse:
        def body() -> Iterator[bytes]:
            try:
                for i in range(int(ctx.query_params["chunks"][0])):
                    events.append(("produced", i))
                    yield b"x" * 65536
            finally:
                events.append(("closed",))
        return StreamingResponse(200, {"Content-Type": "application/octet-stream"}, body())

    @service.endpoint("GET", "/broken")
    def broken(ctx: Any) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"start"
            raise RuntimeError("disk gone")
        return StreamingResponse(200, (), body())

    @service.endpoint("POST", "/upload", streaming=True)
    async def upload(ctx: Any) -> RawResponse:
        digest = hashlib.sha256()
        async for chunk in ctx.body:
            digest.update(chunk)
        return RawResponse.json({"bytes": ctx.body.received, "sha256": digest.hexdigest()})

    return service


class ServiceClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Any] = []
        self.client = ServiceClient(make_service(self.events))

    def test_sender_interface(self) -> None:
        """
        The client's end of the connection is an IFrameSender.
        """
        verifyObject(IFrameSender, self.client._replies)

    def test_json_endpoint(self) -> None:
        """
        Path parameters, the query and claims reach the handler; the JSON
        answer and the serving version come back.
        """
        response = self.successResultOf(self.client.get(
            "/invoices/inv%201?full=1", claims={"sub": "u-1"}))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json(), {"id": "inv 1", "full": ["1"],
                                           "claims": {"sub": "u-1"}})
        self.assertEqual(response.headers.get("x-stella-version"), "1.2.3")

    def test_typed_post_and_problems(self) -> None:
        """
        A typed body is decoded (or refused with 400); a Problem comes back
        as problem+json.
        """
        created = self.successResultOf(self.client.post(
            "/invoices", json={"customer": "acme", "amount_cents": 5}))
        self.assertEqual((created.status, created.json()), (201, {"customer": "acme"}))
        bad = self.successResultOf(self.client.post("/invoices", json={"customer": "acme"}))
        self.assertEqual(bad.status, 400)
        self.assertIn("$.amount_cents", bad.json()["detail"])
        missing = self.successResultOf(self.client.get("/invoices/missing"))
        self.assertEqual((missing.status, missing.headers.get("content-type")),
                         (404, "application/problem+json"))
        self.assertEqual(missing.json()["detail"], "no invoice missing")

    def test_routing_and_claims_as_the_gateway(self) -> None:
        """
        Unknown paths are 404, other methods 405 with Allow; an endpoint
        with requirements is 401 without claims, 403 when one is unmet.
        """
        self.assertEqual(self.successResultOf(self.client.get("/nope")).status, 404)
        response = self.successResultOf(self.client.put("/invoices/1"))
        self.assertEqual((response.status, response.headers.get("allow")),
                         (405, "DELETE, GET, HEAD"))
        self.assertEqual(self.successResultOf(self.client.delete("/invoices/1")).status, 401)
        self.assertEqual(self.successResultOf(self.client.delete(
            "/invoices/1", claims={"scope": "billing:read"})).status, 403)
        self.assertEqual(self.successResultOf(self.client.delete(
            "/invoices/1", claims={"scope": "billing:read billing:write"})).status, 204)
        head = self.successResultOf(self.client.head("/invoices/1"))
        self.assertEqual((head.status, head.body), (200, b""))

    def test_cancel(self) -> None:
        """
        Cancelling the request's Deferred is a client that hangs up: the
        handler sees CANCEL (client disconnected).
        """
        d = self.client.get("/slow")
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertIn(("cancelled", CancelReason.CLIENT_DISCONNECTED), self.events)
        self.assertEqual(self.client.in_flight, 0)

    def test_timeout_and_deadline(self) -> None:
        """
        The handler sees the deadline; once the endpoint's timeout passed on
        the client's clock the request is cancelled (TIMEOUT) and answered
        504.
        """
        self.client.clock.advance(100)
        d = self.client.get("/slow")
        self.assertIn(("deadline", 105.0), self.events)
        self.client.clock.advance(5 - 0.001)
        self.assertNoResult(d)
        self.client.clock.advance(0.001)
        self.assertEqual(self.successResultOf(d).status, 504)
        self.assertIn(("cancelled", CancelReason.TIMEOUT), self.events)
        self.assertEqual(self.client.clock.getDelayedCalls(), [])

    def test_streamed_response_whole(self) -> None:
        """
        A streamed response is collected whole by default (credit granted
        as it arrives).
        """
        response = self.successResultOf(self.client.get("/export?chunks=40"))
        self.assertEqual(len(response.body), 40 * 65536)
        self.assertEqual(self.events[-1], ("closed",))

    def test_streamed_response_read_and_left(self) -> None:
        """
        With C{stream=True} the body comes as the test reads it; closing the
        response mid-stream cancels the request and closes the producer.
        """
        response = self.successResultOf(self.client.get("/export?chunks=1000", stream=True))
        produced = len([e for e in self.events if e[0] == "produced"])
        self.assertLess(produced, 40)  # one window, not the whole body
        first = self.successResultOf(Deferred.fromCoroutine(response.stream.__anext__()))
        self.assertEqual(len(first), 65536)
        response.close()
        self.assertEqual(self.events[-1], ("closed",))
        self.assertEqual(self.client.in_flight, 0)

    def test_aborted_stream(self) -> None:
        """
        A producer that raises mid-stream fails the request with
        L{StreamAborted}.
        """
        self.failureResultOf(self.client.get("/broken"), StreamAborted)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_streamed_upload(self) -> None:
        """
        An iterable body is sent as a stream, with credit, to a streaming
        endpoint.
        """
        chunks = [bytes([i]) * 300_000 for i in range(10)]
        response = self.successResultOf(self.client.post("/upload", body=iter(chunks)))
        self.assertEqual(response.json(), {
            "bytes": 3_000_000, "sha256": hashlib.sha256(b"".join(chunks)).hexdigest()})


class AwaitTests(TestCase):
    async def test_await(self) -> None:
        """
        The documented form: C{response = await client.get(...)} in an
        C{async def} test.
        """
        client = ServiceClient(make_service([]))
        response = await client.get("/invoices/inv-1", claims={"scope": "billing:read"})
        self.assertEqual(response.json()["id"], "inv-1")


class AsyncioLoopTests(SynchronousTestCase):
    def test_asyncio_handler(self) -> None:
        """
        With C{event_loop}, a handler that awaits asyncio runs as a task on
        that loop and its answer comes back.
        """
        import asyncio

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        service = Microservice("ledger", "1.0.0")

        @service.endpoint("GET", "/sleepy")
        async def sleepy(ctx: Any) -> RawResponse:
            await asyncio.sleep(0)
            return RawResponse.text("awake")

        d = ServiceClient(service, event_loop=loop).get("/sleepy")
        self.assertNoResult(d)
        loop.run_until_complete(asyncio.sleep(0.01))
        self.assertEqual(self.successResultOf(d).body, b"awake")
