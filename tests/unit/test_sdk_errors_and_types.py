"""
Tests for what a handler needs from C{stellarouter.microservice}: problems
it raises (L{Problem}, L{BadRequest}) and typed JSON bodies (dataclass,
attrs, TypedDict, msgspec.Struct in and out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, List, TypedDict

import attrs
import msgspec
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import RequestMessage, ResponseMessage, decode_response, \
    encode_request
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.testing.fakes import FakeFrameSender


def call(app: Any, method: str, template: str, body: bytes = b"",
         params: Any = None) -> ResponseMessage:
    """
    Serve one request with C{app} through a dispatcher; return the response
    (the handler must answer without waiting).
    """
    sender = FakeFrameSender()
    dispatcher = RequestDispatcher(app, sender, Clock())
    dispatcher.request_received(Frame(FrameType.REQUEST, new_correlation_id(), encode_request(
        RequestMessage(method, template, template, params or {}, body=body))))
    (frame,) = [f for f in sender.frames if f.type is FrameType.RESPONSE]
    return decode_response(frame.payload)


def problem(response: ResponseMessage) -> Any:
    """
    The problem+json body of C{response}, checking its content type.
    """
    assert dict(response.headers)["Content-Type"] == "application/problem+json", response
    return json.loads(response.body)


class PublicNamesTests(SynchronousTestCase):
    def test_everything_a_handler_needs(self) -> None:
        """
        C{stellarouter.microservice} exports the names a handler uses.
        """
        import stellarouter.microservice as sdk
        for name in ("Microservice", "RawResponse", "JsonResponse", "StreamingResponse",
                     "RawRequestContext", "Problem", "BadRequest", "ClaimRequirement",
                     "CancelReason", "HeaderMap", "BodyStream"):
            self.assertIn(name, sdk.__all__)
            self.assertTrue(hasattr(sdk, name), name)


class BadRequestBodyTests(SynchronousTestCase):
    def test_documented_bad_request_body_in_a_handler(self) -> None:
        """
        Raising the documented C{BadRequestBody} inside a handler is a 400,
        not a 500 (issue 22's reproduction).
        """
        from stellarouter.microservice import Microservice
        from stellarouter.microservice.endpoints import BadRequestBody
        app = Microservice("svc", "1.0.0")

        @app.json("POST", "/x")
        def handler(ctx: Any, body: Any) -> Any:
            raise BadRequestBody("amount must be positive")

        response = call(app, "POST", "/x", b"{}")
        self.assertEqual(response.status, 400)
        self.assertEqual(problem(response)["detail"], "amount must be positive")


class ProblemTests(SynchronousTestCase):
    def setUp(self) -> None:
        from stellarouter.microservice import BadRequest, Microservice, Problem
        self.app = app = Microservice("billing", "1.0.0")

        @app.endpoint("GET", "/sync/{id}")
        def sync(ctx: Any) -> Any:
            raise Problem(404, "invoice-not-found", detail=f"no invoice {ctx.path_params['id']}")

        @app.json("GET", "/async")
        async def coroutine(ctx: Any, body: Any) -> Any:
            raise Problem(409, "conflict", "Invoice already paid", detail="paid on Monday",
                          invoice="inv-1", headers={"Retry-After": "5"})

        @app.endpoint("GET", "/deferred")
        def deferred(ctx: Any) -> Deferred:
            return fail(BadRequest("missing ?month"))

        @app.endpoint("GET", "/boom")
        def boom(ctx: Any) -> Any:
            raise KeyError("oops")

        @app.endpoint("GET", "/ok")
        def ok(ctx: Any) -> Any:
            from stellarouter.microservice import RawResponse
            return RawResponse.text("ok")

    def test_sync(self) -> None:
        """
        A L{Problem} raised by a sync handler is answered with its status
        as problem+json with the request's correlation id.
        """
        response = call(self.app, "GET", "/sync/{id}", params={"id": "inv-9"})
        self.assertEqual(response.status, 404)
        body = problem(response)
        self.assertEqual(body["type"], "https://stellarouter.dev/problems/invoice-not-found")
        self.assertEqual(body["title"], "Not Found")
        self.assertEqual(body["detail"], "no invoice inv-9")
        self.assertEqual(len(body["correlation_id"]), 36)

    def test_async_with_extensions_and_headers(self) -> None:
        """
        A L{Problem} raised in a coroutine (typed endpoint) keeps its
        title, extension members and headers.
        """
        response = call(self.app, "GET", "/async")
        self.assertEqual(response.status, 409)
        self.assertEqual(dict(response.headers)["Retry-After"], "5")
        body = problem(response)
        self.assertEqual((body["title"], body["detail"], body["invoice"]),
                         ("Invoice already paid", "paid on Monday", "inv-1"))

    def test_deferred_bad_request(self) -> None:
        """
        A L{BadRequest} failing a handler's Deferred is a 400 bad-request.
        """
        response = call(self.app, "GET", "/deferred")
        self.assertEqual(response.status, 400)
        self.assertEqual(problem(response)["detail"], "missing ?month")

    def test_other_exceptions_are_500_and_the_connection_serves_on(self) -> None:
        """
        Any other exception is a 500 (logged), and the dispatcher keeps
        serving.
        """
        sender = FakeFrameSender()
        dispatcher = RequestDispatcher(self.app, sender, Clock())
        for template in ("/boom", "/ok"):
            dispatcher.request_received(Frame(FrameType.REQUEST, new_correlation_id(),
                                              encode_request(RequestMessage("GET", template,
                                                                            template))))
        statuses = [decode_response(f.payload).status for f in sender.frames]
        self.assertEqual(statuses, [500, 200])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_invalid_problems(self) -> None:
        """
        A L{Problem} refuses a status outside 400-599, a bad kind and an
        extension that would replace a standard member.
        """
        from stellarouter.microservice import Problem
        self.assertRaises(ValueError, Problem, 302, "moved")
        self.assertRaises(ValueError, Problem, 404, "Not Found")
        self.assertRaises(ValueError, Problem, 404, "x", correlation_id="forged")


@dataclass
class NewInvoice:
    customer: str
    amount_cents: int


@attrs.define
class NewInvoiceAttrs:
    customer: str
    amount_cents: int


class NewInvoiceDict(TypedDict):
    customer: str
    amount_cents: int


class NewInvoiceStruct(msgspec.Struct):
    customer: str
    amount_cents: int


@dataclass
class Invoice:
    id: str
    customer: str
    amount_cents: int


class TypedBodyTests(SynchronousTestCase):
    def app_for(self, request_type: Any) -> Any:
        from stellarouter.microservice import Microservice
        app = Microservice("billing", "1.0.0")
        self.seen: List[Any] = []

        @app.json("POST", "/invoices", status=201, request_type=request_type)
        def create(ctx: Any, new: Any) -> Any:
            self.seen.append(new)
            return {"ok": True}

        return app

    def test_each_kind_of_type(self) -> None:
        """
        A dataclass, an attrs class, a TypedDict and a msgspec.Struct each
        receive the decoded body (a dataclass used to answer 400 to every
        request: issue 22's reproduction).
        """
        body = b'{"customer":"acme","amount_cents":1250}'
        for kind in (NewInvoice, NewInvoiceAttrs, NewInvoiceDict, NewInvoiceStruct):
            response = call(self.app_for(kind), "POST", "/invoices", body)
            self.assertEqual(response.status, 201, (kind, response))
            new = self.seen[-1]
            if kind is NewInvoiceDict:
                self.assertEqual(new, {"customer": "acme", "amount_cents": 1250})
            else:
                self.assertEqual((type(new), new.customer, new.amount_cents),
                                 (kind, "acme", 1250))

    def test_wrong_field_named(self) -> None:
        """
        A field of the wrong type is a 400 problem naming the field and the
        expectation.
        """
        for kind in (NewInvoice, NewInvoiceAttrs, NewInvoiceDict, NewInvoiceStruct):
            response = call(self.app_for(kind), "POST", "/invoices",
                            b'{"customer":"acme","amount_cents":"12"}')
            self.assertEqual(response.status, 400)
            self.assertEqual(problem(response)["detail"],
                             "request body does not fit: $.amount_cents: expected int, got str")

    def test_missing_field_and_wrong_shape(self) -> None:
        """
        A missing field, a body of the wrong shape, an empty body and a body
        that is not JSON are 400s that say so.
        """
        app = self.app_for(NewInvoice)
        cases = {
            b'{"customer":"acme"}': "request body does not fit: $.amount_cents: required "
                                    "field missing",
            b"[1, 2]": "request body does not fit: $: expected object, got array",
            b"": "request body is empty; expected JSON",
        }
        for body, detail in cases.items():
            response = call(app, "POST", "/invoices", body)
            self.assertEqual((response.status, problem(response)["detail"]), (400, detail))
        response = call(app, "POST", "/invoices", b"{nope")
        self.assertEqual(response.status, 400)
        self.assertIn("request body is not valid JSON", problem(response)["detail"])

    def test_nested_too_deeply(self) -> None:
        """
        A deeply nested JSON body is a 400, typed or not (never a 500).
        """
        deep = b"[" * 100_000 + b"]" * 100_000
        for kind in (None, List[Any]):
            response = call(self.app_for(kind), "POST", "/invoices", deep)
            self.assertEqual(response.status, 400, kind)
            self.assertIn("nested too deeply", problem(response)["detail"])
        response = call(self.app_for(NewInvoice), "POST", "/invoices",
                        b'{"customer":' + deep + b'}')
        self.assertEqual(response.status, 400)

    def test_hand_written_from_json(self) -> None:
        """
        A C{from_json} callable still gets the parsed JSON; what it raises
        (TypeError, ValueError, KeyError, BadRequest) is a 400.
        """
        from stellarouter.microservice import BadRequest

        def from_json(obj: Any) -> Any:
            if obj.get("amount_cents", 0) < 0:
                raise BadRequest("negative amount")
            return NewInvoice(obj["customer"], obj["amount_cents"])

        app = self.app_for(from_json)
        self.assertEqual(call(app, "POST", "/invoices",
                              b'{"customer":"a","amount_cents":1}').status, 201)
        self.assertEqual(self.seen[-1], NewInvoice("a", 1))
        response = call(app, "POST", "/invoices", b'{"customer":"a","amount_cents":-1}')
        self.assertEqual(problem(response)["detail"],
                         "request body does not fit: negative amount")
        response = call(app, "POST", "/invoices", b'{"amount_cents":1}')
        self.assertEqual(problem(response)["detail"], "request body does not fit: 'customer'")

    def test_untyped(self) -> None:
        """
        Without C{request_type} the handler gets the parsed JSON, or C{None}
        for an empty body.
        """
        app = self.app_for(None)
        call(app, "POST", "/invoices", b'{"a":[1,2.5,null,"x"]}')
        call(app, "POST", "/invoices")
        self.assertEqual(self.seen, [{"a": [1, 2.5, None, "x"]}, None])

    def test_bad_request_type_refused_at_registration(self) -> None:
        """
        A C{request_type} that is neither a type nor a callable is refused
        at registration, naming the endpoint.
        """
        from stellarouter.microservice import Microservice
        error = self.assertRaises(ValueError, Microservice("s", "1.0.0").json, "POST", "/x",
                                  request_type=42)
        self.assertIn("POST /x", str(error))
        self.assertIn("request_type", str(error))


class TypedResultTests(SynchronousTestCase):
    def answer(self, result: Any, status: int = 200) -> ResponseMessage:
        from stellarouter.microservice import Microservice
        app = Microservice("billing", "1.0.0")
        app.json("GET", "/r", status=status)(lambda ctx, body: result)
        return call(app, "GET", "/r")

    def test_results_encoded(self) -> None:
        """
        Dataclass, attrs, Struct, dict and list results are encoded as JSON
        with the endpoint's status.
        """
        expected = {"customer": "acme", "amount_cents": 5}
        for result in (NewInvoice("acme", 5), NewInvoiceAttrs("acme", 5),
                       NewInvoiceStruct("acme", 5), dict(expected)):
            response = self.answer(result, 201)
            self.assertEqual((response.status, json.loads(response.body)), (201, expected))
            self.assertEqual(dict(response.headers)["Content-Type"], "application/json")
        response = self.answer([NewInvoice("a", 1), {"b": 2}])
        self.assertEqual(json.loads(response.body), [{"customer": "a", "amount_cents": 1},
                                                     {"b": 2}])

    def test_json_response(self) -> None:
        """
        A L{JsonResponse} sets status and headers; its body is encoded the
        same way.
        """
        from stellarouter.microservice import JsonResponse
        response = self.answer(JsonResponse(Invoice("inv-1", "a", 1), status=202,
                                            headers={"Location": "/invoices/inv-1"}))
        self.assertEqual(response.status, 202)
        self.assertEqual(dict(response.headers)["Location"], "/invoices/inv-1")
        self.assertEqual(json.loads(response.body)["id"], "inv-1")

    def test_no_content(self) -> None:
        """
        A typed 204 (endpoint status or JsonResponse) has neither body nor
        Content-Type; a body for it is a handler bug (500, logged).
        """
        from stellarouter.microservice import JsonResponse
        for response in (self.answer(None, 204),
                         self.answer(JsonResponse(None, 204, {"ETag": '"1"'}))):
            self.assertEqual((response.status, response.body), (204, b""))
            self.assertNotIn("Content-Type", dict(response.headers))
        self.assertEqual(self.answer({"a": 1}, 204).status, 500)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_tuple_refused(self) -> None:
        """
        C{return ({...}, 404)} is a 500 whose log says what to do instead,
        never a 200 with a JSON array (issue 22's reproduction).
        """
        response = self.answer(({"error": "nope"}, 404))
        self.assertEqual(response.status, 500)
        (error,) = self.flushLoggedErrors(TypeError)
        self.assertIn("JsonResponse(body, status=...)", str(error.value))

    def test_unencodable_result(self) -> None:
        """
        A result msgspec cannot encode is a 500, logged.
        """
        response = self.answer(object())
        self.assertEqual(response.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
