"""
Issue 23: the SDK describes its endpoints in HELLO (feature
C{endpoint-schemas}), the gateway serves one OpenAPI 3.1 document per
version at C{/openapi.json} (ETag, 304) and Swagger UI at C{/docs}; every
document is checked with openapi-spec-validator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import msgspec
from openapi_spec_validator import validate
from hypothesis import given, settings
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.server import Site
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from examples.billing.service import service as billing
from stellarouter.common.enums import FrameType
from stellarouter.common.frames import FRAME_OVERHEAD
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IOpenApiSource
from stellarouter.common.models import ClaimRequirement, Frame, InstanceDescriptor
from stellarouter.common.payloads import Hello, decode_hello, decode_hello_ack, encode_hello
from stellarouter.common.schemas import (
    ENDPOINT_SCHEMAS,
    SchemasProblem,
    read_schemas,
    without_json_schemas,
)
from stellarouter.config.errors import ConfigError
from stellarouter.config.gateway import parse_gateway_config, ServiceConfig
from stellarouter.config.openapi import OpenApiConfig
from stellarouter.config.diff import diff
from stellarouter.gateway.openapi import OpenApiCatalog, add_openapi_routes, build_document
from stellarouter.gateway.state import RoutingState
from stellarouter.microservice import Microservice, RawRequestContext, RawResponse
from stellarouter.microservice.descriptions import (
    endpoint_doc,
    describe,
    fitting_hello,
    schemas_for,
    service_schemas,
    split_docstring,
)
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import InMemoryHttpClient
from stellarouter.testing.strategies import json_values

PUBLIC = OpenApiConfig(expose="public")


def _document(deployment: InMemoryDeployment, query: str = "") -> Dict[str, Any]:
    response = deployment.request("GET", "/openapi.json" + query)
    assert response.status == 200, (response.status, response.body)
    document: Dict[str, Any] = json.loads(response.body)
    validate(document)
    return document


def _versioned_billing(version: str, extra_field: bool) -> Microservice:
    """
    A Billing-like service whose C{Invoice} differs by version.
    """
    app = Microservice("billing", version)
    fields: List[Any] = [("id", str)] + ([("currency", str)] if extra_field else [])
    invoice = msgspec.defstruct("Invoice", fields)

    @app.json("GET", "/invoices/{id}", response_type=invoice, tags=["invoices"],
              parameters={"id": "the invoice number"})
    def get(ctx: RawRequestContext, _: None) -> Any:
        """
        One invoice.
        """
        return invoice(ctx.path_params["id"], *(["EUR"] if extra_field else []))

    if extra_field:
        @app.endpoint("GET", "/invoices/{id}/pdf", deprecated=True)
        def pdf(ctx: RawRequestContext) -> RawResponse:
            """
            The invoice as PDF (going away).
            """
            return RawResponse(200, (("Content-Type", "application/pdf"),), b"%PDF")

    return app


@dataclass
class Upload:
    """
    What an upload answers.
    """

    name: str
    size: int


@dataclass
class Invoice:
    """
    An archived invoice (not Billing's).
    """

    archived_at: str


def _streaming_service() -> Microservice:
    """
    A service with a streaming upload and claims, and its own C{Invoice}
    (the return annotation of a handler: a module-level class, as
    annotations are resolved in the handler's module).
    """
    app = Microservice("archive", "3.1.0")

    @app.endpoint("PUT", "/archive/{name}", streaming=True, response_type=Upload,
                  claims=[ClaimRequirement("scope", ("archive:write", "admin")),
                          ClaimRequirement("tenant")])
    async def upload(ctx: RawRequestContext) -> RawResponse:
        """
        Store a file of any size as it arrives.

        The body is streamed to the service; nothing is buffered whole.
        """
        return RawResponse.json({"name": "x", "size": 0})

    @app.json("GET", "/archive/invoices/{name}", claims=[ClaimRequirement("scope", "archive:read")])
    def invoice(ctx: RawRequestContext, _: None) -> Invoice:
        """
        An archived invoice.
        """
        return Invoice("now")

    return app


class DocstringTests(SynchronousTestCase):
    def test_summary_and_description(self) -> None:
        """
        The summary is the first sentence; the description the text before
        the epytext fields, markup as Markdown code.
        """
        self.assertEqual(split_docstring("""
            Create an invoice. Answers 201 with C{Location}.

            Second paragraph.

            @param ctx: the request.
            """), ("Create an invoice.",
                   "Create an invoice. Answers 201 with `Location`.\n\nSecond paragraph."))
        self.assertEqual(split_docstring("One line."), ("One line.", ""))
        self.assertEqual(split_docstring(None), ("", ""))

    def test_explicit_arguments_win(self) -> None:
        """
        C{summary} and C{description} given to the decorator replace the
        docstring's.
        """
        def handler(ctx: Any) -> Any:
            """Docstring summary."""

        doc = endpoint_doc(handler, summary="S", description="D")
        self.assertEqual((doc.summary, doc.description), ("S", "D"))

    def test_response_type_from_annotation(self) -> None:
        """
        A typed return annotation (or a C{Deferred} of one) is the response
        type; a response class (C{RawResponse}) is not a body, and an
        annotation msgspec cannot describe is no error, just no schema.
        """
        def typed(ctx: Any, payload: Any) -> Upload:
            raise NotImplementedError

        def raw(ctx: Any) -> RawResponse:
            raise NotImplementedError

        def later(ctx: Any) -> "Deferred[Upload]":
            raise NotImplementedError

        def raw_later(ctx: Any) -> "Deferred[RawResponse]":
            raise NotImplementedError

        def odd(ctx: Any) -> "Deferred[Clock]":
            raise NotImplementedError

        self.assertIs(endpoint_doc(typed).response_type, Upload)
        self.assertIsNone(endpoint_doc(raw).response_type)
        self.assertIs(endpoint_doc(later).response_type, Upload)
        self.assertIsNone(endpoint_doc(raw_later).response_type)
        self.assertIsNone(endpoint_doc(odd).response_type)

    def test_bad_arguments_refused(self) -> None:
        """
        Tags that are not strings and a type msgspec cannot describe are
        refused when the endpoint is registered, naming it.
        """
        app = Microservice("billing", "1.0.0")
        error = self.assertRaises(ValueError, app.endpoint("GET", "/a", tags="x"),
                                  lambda ctx: None)
        self.assertIn("billing endpoint GET /a: tags", str(error))
        error = self.assertRaises(ValueError, app.endpoint("GET", "/b", response_type=list[object]),
                                  lambda ctx: None)
        self.assertIn("billing endpoint GET /b: response_type", str(error))


class HelloTests(SynchronousTestCase):
    def hello(self, app: Microservice) -> Hello:
        return Hello(InstanceDescriptor("b-1", app.name, app.version, "eu1"), app.descriptors())

    def test_billing_schemas(self) -> None:
        """
        Billing's HELLO describes each endpoint; the typed bodies are msgspec
        components referred to by C{$ref}.
        """
        schemas = service_schemas(billing.descriptors(), billing.docs)
        self.assertEqual(set(schemas["components"]), {"NewInvoice", "Invoice"})
        by_key = {(e["method"], e["path"]): e for e in schemas["endpoints"]}
        create = by_key[("POST", "/invoices")]
        self.assertEqual(create["request"]["schema"], {"$ref": "#/components/schemas/NewInvoice"})
        self.assertEqual(create["response"], {"status": 201, "content_type": "application/json",
                                              "schema": {"$ref": "#/components/schemas/Invoice"}})
        self.assertEqual(by_key[("POST", "/invoices/{id}/attachments")]["request"],
                         {"content_type": "application/octet-stream"})

    def test_built_once_per_app(self) -> None:
        """
        Every connection of an app sends the descriptions built the first
        time; registering another endpoint builds them again.
        """
        app = _versioned_billing("1.0.0", False)
        first = schemas_for(app, app.descriptors())
        self.assertIs(schemas_for(app, app.descriptors()), first)
        self.assertEqual(json.loads(first.whole), first.schemas)
        app.endpoint("GET", "/more")(lambda ctx: RawResponse.text("x"))
        again = schemas_for(app, app.descriptors())
        self.assertIsNot(again, first)
        self.assertEqual(len(again.schemas["endpoints"]), 2)

    def test_fits_whole(self) -> None:
        """
        A HELLO that fits carries the descriptions and lists the feature;
        the gateway's decoder hands them on as sent.
        """
        schemas = service_schemas(billing.descriptors(), billing.docs)
        hello = decode_hello(fitting_hello(self.hello(billing), describe(schemas), 1024 * 1024))
        self.assertIn(ENDPOINT_SCHEMAS, hello.features)
        self.assertEqual(hello.schemas, schemas)

    def test_too_large_drops_json_schemas_then_all(self) -> None:
        """
        Over C{max_frame_bytes} the JSON Schemas go first (summaries stay),
        then the descriptions and the feature; each step is logged.
        """
        logged: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        base = self.hello(billing)
        schemas = service_schemas(billing.descriptors(), billing.docs)
        plain = len(encode_hello(base)) + FRAME_OVERHEAD
        lighter = len(encode_hello(Hello(
            base.instance, base.endpoints, features=(ENDPOINT_SCHEMAS,),
            schemas=without_json_schemas(schemas)))) + FRAME_OVERHEAD
        hello = decode_hello(fitting_hello(base, describe(schemas), lighter))
        self.assertEqual(hello.schemas, without_json_schemas(schemas))
        self.assertEqual(hello.schemas["components"], {})
        hello = decode_hello(fitting_hello(base, describe(schemas), lighter - 1))
        self.assertIsNone(hello.schemas)
        self.assertNotIn(ENDPOINT_SCHEMAS, hello.features)
        self.assertEqual(len(encode_hello(hello)) + FRAME_OVERHEAD, plain)
        warnings = [e for e in logged if "over the frame limit" in e.get("log_format", "")]
        self.assertEqual([w["dropped"] for w in warnings],
                         ["their JSON Schemas", "their JSON Schemas", "them"])

    def test_shape_problems(self) -> None:
        """
        The gateway's shape check names the key at fault.
        """
        for raw, message in (
                ([], "schemas must be an object"),
                ({"endpoints": {}}, "schemas.endpoints must be a list"),
                ({"components": []}, "schemas.components must be an object"),
                ({"endpoints": [{"method": "GET"}]}, "needs a method and a path"),
                ({"endpoints": [{"method": "GET", "path": "/", "tags": "x"}]},
                 "schemas.endpoints[0].tags must be list"),
                ({"endpoints": [{"method": "GET", "path": "/", "deprecated": 1}]},
                 "schemas.endpoints[0].deprecated must be bool")):
            error = self.assertRaises(SchemasProblem, read_schemas, raw)
            self.assertIn(message, str(error))


class NegotiationTests(SynchronousTestCase):
    def test_gateway_takes_up_the_feature(self) -> None:
        """
        The gateway's HELLO answer lists C{endpoint-schemas}; the session
        knows its endpoints are described.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        micro = deployment.add(billing)
        self.assertTrue(micro.sessions[0].described)
        [connection] = deployment.gateway.routing_state.connections()
        self.assertIsNotNone(connection.state.schemas)

    def test_gateway_without_openapi_ignores_them(self) -> None:
        """
        With C{openapi.expose: none} the gateway keeps no descriptions and
        does not list the feature; the endpoints are routed all the same.
        """
        deployment = InMemoryDeployment(openapi=OpenApiConfig(expose="none"))
        self.addCleanup(deployment.stop)
        micro = deployment.add(billing)
        self.assertFalse(micro.sessions[0].described)
        [connection] = deployment.gateway.routing_state.connections()
        self.assertIsNone(connection.state.schemas)
        self.assertEqual(deployment.request("GET", "/ping").status, 200)

    def test_malformed_descriptions_left_out(self) -> None:
        """
        A HELLO whose descriptions have the wrong shape is accepted without
        them (answer without the feature), logged.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        logged: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        answers: List[Frame] = []
        hello = Hello(InstanceDescriptor("x-1", "x", "1.0.0", "eu1"), billing.descriptors()[:1],
                      features=(ENDPOINT_SCHEMAS,), schemas={"endpoints": "nope"})
        connection = deployment.gateway._receiver_factory(deployment.config.transports[0])()
        sender = _RecordingSender(answers)
        connection.connectionOpened(sender)
        connection.frameReceived(Frame(FrameType.HELLO, new_correlation_id(),
                                       encode_hello(hello)))
        ack = decode_hello_ack(answers[0].payload)
        self.assertTrue(ack.accepted)
        self.assertNotIn(ENDPOINT_SCHEMAS, ack.features)
        self.assertIsNone(connection.state.schemas)
        self.assertTrue(any("left out" in e.get("log_format", "") for e in logged))
        connection.connectionClosed("done")


class _RecordingSender:
    """
    Just enough of a frame sender for one GatewayConnection.
    """

    peer = "test"
    peer_identity = ()

    def __init__(self, frames: List[Frame]) -> None:
        from stellarouter.common.enums import TransportType
        self.frames = frames
        self.transport_type = TransportType.INMEMORY

    def sendFrame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self, reason: str = "") -> None:
        pass


class DocumentTests(SynchronousTestCase):
    def test_catalog_provides_the_interface(self) -> None:
        """
        The gateway's catalog provides L{IOpenApiSource}, the seam the
        routes (public or admin) are given.
        """
        verifyObject(IOpenApiSource, OpenApiCatalog(RoutingState()))

    def deployment(self, **kwargs: Any) -> InMemoryDeployment:
        deployment = InMemoryDeployment(openapi=PUBLIC, **kwargs)
        self.addCleanup(deployment.stop)
        return deployment

    def test_billing_document(self) -> None:
        """
        Billing's document validates; its operations carry summaries,
        parameters, the typed bodies as namespaced components, the claims as
        a bearer security requirement and the streaming upload.
        """
        deployment = self.deployment()
        deployment.add(billing)
        document = _document(deployment)
        self.assertEqual(document["openapi"], "3.1.0")
        paths = document["paths"]
        self.assertEqual(set(paths), {"/ping", "/invoices", "/invoices/{id}",
                                      "/invoices/{id}/attachments", "/invoices/{id}/export"})
        create = paths["/invoices"]["post"]
        self.assertEqual(create["summary"], "Create an invoice; answers 201 with it and its "
                                            "Location.")
        self.assertEqual(create["requestBody"]["content"]["application/json"]["schema"],
                         {"$ref": "#/components/schemas/billing.NewInvoice"})
        self.assertEqual(create["responses"]["201"]["content"]["application/json"]["schema"],
                         {"$ref": "#/components/schemas/billing.Invoice"})
        schemas = document["components"]["schemas"]
        self.assertEqual(schemas["billing.NewInvoice"]["properties"]["amount_cents"],
                         {"type": "integer", "minimum": 0})
        delete = paths["/invoices/{id}"]["delete"]
        self.assertEqual(delete["security"], [{"bearerAuth": ["scope=billing:write"]}])
        self.assertEqual(delete["parameters"][0]["name"], "id")
        self.assertEqual(document["components"]["securitySchemes"]["bearerAuth"]["scheme"],
                         "bearer")
        upload = paths["/invoices/{id}/attachments"]["post"]
        self.assertTrue(upload["x-stella-streaming"])
        self.assertIn("application/octet-stream", upload["requestBody"]["content"])
        self.assertEqual(paths["/ping"]["get"]["operationId"], "billing.ping")
        self.assertEqual(paths["/ping"]["get"]["tags"], ["billing"])

    def test_two_versions_side_by_side(self) -> None:
        """
        Two versions of one service give two valid documents (C{?version=});
        the default document has the highest version, or the configured
        default; an unknown version is a 404 problem naming the known ones.
        """
        deployment = self.deployment()
        deployment.add(_versioned_billing("1.0.0", False), instance_id="b1")
        deployment.add(_versioned_billing("2.0.0", True), instance_id="b2")
        old = _document(deployment, "?version=1.0.0")
        new = _document(deployment, "?version=2.0.0")
        self.assertEqual(set(old["paths"]), {"/invoices/{id}"})
        self.assertEqual(set(new["paths"]), {"/invoices/{id}", "/invoices/{id}/pdf"})
        self.assertNotIn("currency", old["components"]["schemas"]["billing.Invoice"]["properties"])
        self.assertIn("currency", new["components"]["schemas"]["billing.Invoice"]["properties"])
        self.assertTrue(new["paths"]["/invoices/{id}/pdf"]["get"]["deprecated"])
        header = new["paths"]["/invoices/{id}"]["get"]["parameters"][-1]
        self.assertEqual((header["name"], header["in"], header["schema"]["enum"]),
                         ("X-Stella-Version", "header", ["2.0.0"]))
        self.assertEqual(new["paths"]["/invoices/{id}"]["get"]["tags"], ["invoices"])
        self.assertEqual(new["paths"]["/invoices/{id}"]["get"]["parameters"][0]["description"],
                         "the invoice number")
        self.assertEqual(_document(deployment)["info"]["description"].split("(")[1][:13],
                         "billing 2.0.0")
        missing = deployment.request("GET", "/openapi.json?version=9.9.9")
        self.assertEqual(missing.status, 404)
        self.assertIn("1.0.0, 2.0.0", json.loads(missing.body)["detail"])

    def test_default_version_configured(self) -> None:
        """
        C{services[].default_version} chooses the default document's version,
        as it chooses where requests without C{X-Stella-Version} go.
        """
        deployment = self.deployment(services=[ServiceConfig("billing", "1.0.0")])
        deployment.add(_versioned_billing("1.0.0", False), instance_id="b1")
        deployment.add(_versioned_billing("2.0.0", True), instance_id="b2")
        self.assertEqual(set(_document(deployment)["paths"]), {"/invoices/{id}"})

    def test_streaming_and_claims_service_with_billing(self) -> None:
        """
        A streaming service with claims and Billing in one document: both
        C{Invoice} components, namespaced, claims of several values.
        """
        deployment = self.deployment()
        deployment.add(billing)
        deployment.add(_streaming_service())
        document = _document(deployment)
        schemas = document["components"]["schemas"]
        self.assertIn("billing.Invoice", schemas)
        self.assertIn("archive.Invoice", schemas)
        self.assertEqual(document["paths"]["/archive/invoices/{name}"]["get"]["responses"]["200"]
                         ["content"]["application/json"]["schema"],
                         {"$ref": "#/components/schemas/archive.Invoice"})
        upload = document["paths"]["/archive/{name}"]["put"]
        self.assertEqual(upload["security"],
                         [{"bearerAuth": ["scope=archive:write|admin", "tenant"]}])
        self.assertTrue(upload["x-stella-streaming"])
        self.assertEqual(upload["summary"], "Store a file of any size as it arrives.")
        self.assertIn("nothing is buffered whole", upload["description"])
        self.assertEqual([t["name"] for t in document["tags"]], ["archive", "billing"])

    def test_etag_and_304(self) -> None:
        """
        The document has a strong C{ETag}; C{If-None-Match} with it (alone,
        weak, in a list) is answered 304 without a body; another tag gets
        the document.
        """
        deployment = self.deployment()
        deployment.add(billing)
        first = deployment.request("GET", "/openapi.json")
        etag = first.header("ETag")
        assert etag is not None
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        for value in (etag, "W/" + etag, f'"other", {etag}', "*"):
            again = deployment.request("GET", "/openapi.json", headers=[("If-None-Match", value)])
            self.assertEqual((again.status, again.body, again.header("ETag")), (304, b"", etag))
        other = deployment.request("GET", "/openapi.json", headers=[("If-None-Match", '"x"')])
        self.assertEqual((other.status, other.body), (200, first.body))

    def test_rebuilt_only_when_hellos_change(self) -> None:
        """
        Requests, heartbeats and time do not rebuild the document; a new
        connection does (new ETag), and a connection that goes takes its
        endpoints out of it.
        """
        deployment = self.deployment()
        micro = deployment.add(billing)
        catalog = deployment.gateway.openapi
        etag = deployment.request("GET", "/openapi.json").header("ETag")
        deployment.request("GET", "/ping")
        deployment.clock.advance(30)
        deployment.pump()
        self.assertEqual(deployment.request("GET", "/openapi.json").header("ETag"), etag)
        self.assertEqual(catalog.builds, 1)
        other = deployment.add(_streaming_service())
        changed = deployment.request("GET", "/openapi.json", headers=[("If-None-Match", etag)])
        self.assertEqual(changed.status, 200)
        self.assertIn("/archive/{name}", json.loads(changed.body)["paths"])
        self.assertEqual(catalog.builds, 2)
        other.stopService()
        deployment.pump()
        gone = _document(deployment)
        self.assertNotIn("/archive/{name}", gone["paths"])
        micro.stopService()
        deployment.pump()
        self.assertEqual(_document(deployment)["paths"], {})

    def test_same_hellos_same_etag(self) -> None:
        """
        Two instances of one version give the document one gives (the
        build is deterministic: same HELLOs, same ETag).
        """
        deployment = self.deployment()
        deployment.add(billing, instance_id="b-1")
        one = deployment.request("GET", "/openapi.json").header("ETag")
        deployment.add(billing, instance_id="b-2")
        self.assertEqual(deployment.request("GET", "/openapi.json").header("ETag"), one)

    def test_docs_page_and_files(self) -> None:
        """
        C{/docs} is the Swagger UI page over the package's own files, with a
        selector entry per version; an unknown file is 404.
        """
        deployment = self.deployment()
        deployment.add(billing)
        page = deployment.request("GET", "/docs")
        self.assertEqual(page.status, 200)
        self.assertIn(b'src="/docs/swagger-ui-bundle.js"', page.body)
        self.assertIn(b'{"name": "1.0.0", "url": "/openapi.json?version=1.0.0"}', page.body)
        self.assertNotIn(b"http", page.body.replace(b"http-equiv", b""))
        script = deployment.request("GET", "/docs/swagger-ui-bundle.js")
        self.assertEqual(script.status, 200)
        self.assertGreater(len(script.body), 1_000_000)
        self.assertEqual(deployment.request("GET", "/docs/swagger-ui.css").status, 200)
        self.assertEqual(deployment.request("GET", "/docs/setup.py").status, 404)
        self.assertEqual(deployment.request("GET", "/docs/..%2Fopenapi.py").status, 404)

    def test_mounted_on_a_bound_klein_app(self) -> None:
        """
        The routes work on a class-based Klein app used through its
        instances (how the admin listener's app is built): added once at
        class level, each instance serves its own documents; HEAD included.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(billing)
        empty = OpenApiCatalog(RoutingState())

        class AdminLike:
            app = Klein()

            def __init__(self, openapi: OpenApiCatalog) -> None:
                self.openapi = openapi

        add_openapi_routes(AdminLike.app, lambda admin: admin.openapi, "/api/openapi.json",
                           "/api/docs/")
        for catalog, paths in ((deployment.gateway.openapi, 5), (empty, 0)):
            site = Site(AdminLike(catalog).app.resource(), reactor=Clock())
            client = InMemoryHttpClient(site)
            client.send("GET", "/api/openapi.json")
            response = client.response()
            assert response is not None
            self.assertEqual(response.status, 200)
            document = json.loads(response.body)
            validate(document)
            self.assertEqual(len(document["paths"]), paths)
        head = InMemoryHttpClient(Site(AdminLike(empty).app.resource(), reactor=Clock()))
        self.addCleanup(head.disconnect)
        head.send("HEAD", "/api/docs")
        response = head.response()
        assert response is not None
        self.assertEqual((response.status, response.body), (200, b""))

    def test_not_public_by_default(self) -> None:
        """
        By default (C{expose: admin}) the public port serves neither path:
        they are ordinary (unrouted) paths there.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        deployment.add(billing)
        self.assertEqual(deployment.request("GET", "/openapi.json").status, 404)
        self.assertEqual(deployment.request("GET", "/docs").status, 404)

    def test_public_paths_reserved(self) -> None:
        """
        With the routes on the public port, a service may not announce
        them (its HELLO is refused, as for C{/health}).
        """
        deployment = self.deployment()
        logged: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for path in ("/docs/{page}", "/openapi.json"):
            app = Microservice("sneaky", "1.0.0")
            app.endpoint("GET", path)(lambda ctx: RawResponse.text("x"))
            deployment.add(app)
            self.assertEqual(deployment.gateway.routing_state.connections(), [])
            self.assertTrue(any(f"GET {path} is reserved" in str(e.get("reason", ""))
                                for e in logged))


class HostileDescriptionTests(SynchronousTestCase):
    def build(self, components: Any, schema: Any, validated: bool = True) -> Dict[str, Any]:
        """
        The document of one service whose HELLO had C{components} and an
        endpoint answering C{schema}.
        """
        return self.build_from({"endpoints": [{"method": "GET", "path": "/x", "response": {
            "status": 200, "content_type": "application/json", "schema": schema}}],
            "components": components}, validated)

    def build_from(self, raw: Any, validated: bool = True) -> Dict[str, Any]:
        """
        The document of one service C{GET /x} whose HELLO had the
        descriptions C{raw}.
        """
        state = RoutingState()
        deployment_app = Microservice("evil", "1.0.0")
        deployment_app.endpoint("GET", "/x")(lambda ctx: RawResponse.text("x"))
        descriptor = deployment_app.descriptors()[0]
        from stellarouter.common.models import ConnectionState
        from stellarouter.common.enums import TransportType

        class Connection:
            pass

        connection = Connection()
        connection.state = ConnectionState(  # type: ignore[attr-defined]
            "c-1", InstanceDescriptor("e-1", "evil", "1.0.0", "eu1"), TransportType.INMEMORY,
            {descriptor.key: descriptor}, 0.0,
            schemas=read_schemas(raw))
        state.register(connection)  # type: ignore[arg-type]
        rendered = OpenApiCatalog(state).document()
        assert rendered is not None
        document: Dict[str, Any] = json.loads(rendered.body)
        if validated:
            validate(document)
        return document

    def response_schema(self, document: Dict[str, Any]) -> Any:
        return document["paths"]["/x"]["get"]["responses"]["200"]["content"][
            "application/json"]["schema"]

    def test_foreign_references_dropped(self) -> None:
        """
        A reference outside the service's components (another document, an
        unknown name) becomes C{{}}; names OpenAPI does not allow are
        rewritten.
        """
        document = self.build({"Page[Item]": {"type": "object"}},
                              {"anyOf": [{"$ref": "http://example.invalid/x.json"},
                                         {"$ref": "#/components/schemas/Nope"},
                                         {"$ref": "#/components/schemas/Page[Item]"}]})
        self.assertEqual(self.response_schema(document)["anyOf"],
                         [{}, {}, {"$ref": "#/components/schemas/evil.Page_Item_"}])

    def test_deep_nesting_cut(self) -> None:
        """
        Nesting deeper than the cap is replaced by C{{}}, without a crash.
        """
        schema: Dict[str, Any] = {"type": "string"}
        for _ in range(500):
            schema = {"type": "array", "items": schema}
        document = self.build({}, schema)
        depth = 0
        node = self.response_schema(document)
        while node:
            node = node.get("items")
            depth += 1
        self.assertLess(depth, 70)

    @given(json_values(), json_values())
    @settings(max_examples=200, deadline=None)
    def test_any_descriptions_never_crash(self, schemas: Any, schema: Any) -> None:
        """
        Whatever JSON a HELLO's C{schemas} holds, the gateway either refuses
        its shape or builds a document from it, without an exception.
        """
        try:
            read_schemas(schemas)
        except SchemasProblem:
            pass
        else:
            self.build_from(schemas, validated=False)
        components = schemas.get("components") if isinstance(schemas, dict) else None
        if isinstance(components, dict):
            self.build(components, schema, validated=False)

    def test_built_document_validates_alone(self) -> None:
        """
        A document with no service is a valid OpenAPI document.
        """
        validate(build_document([], "empty", None))


class ConfigTests(SynchronousTestCase):
    BASE = {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:0"}]}

    def test_defaults(self) -> None:
        """
        Without an C{openapi} mapping: admin listener, C{/openapi.json},
        C{/docs}.
        """
        self.assertEqual(parse_gateway_config(self.BASE).openapi, OpenApiConfig())

    def test_problems_named(self) -> None:
        """
        An unknown exposure, a path under C{/health} and a document inside
        the docs path are refused with their key paths.
        """
        error = self.assertRaises(ConfigError, parse_gateway_config, dict(self.BASE, openapi={
            "expose": "everywhere", "path": "/docs/openapi.json", "docs_path": "/health/docs"}))
        text = str(error)
        self.assertIn("openapi.expose", text)
        self.assertIn("openapi.docs_path", text)
        error = self.assertRaises(ConfigError, parse_gateway_config, dict(self.BASE, openapi={
            "path": "/docs/openapi.json"}))
        self.assertIn("openapi.path", str(error))

    def test_server_url(self) -> None:
        """
        C{server_url} must be an http(s) URL; it becomes the documents'
        C{servers}.
        """
        error = self.assertRaises(ConfigError, parse_gateway_config, dict(self.BASE, openapi={
            "server_url": "ftp://x"}))
        self.assertIn("openapi.server_url", str(error))
        config = parse_gateway_config(dict(self.BASE, openapi={
            "server_url": "https://api.example.com/v1"}))
        self.assertEqual(config.openapi.server_url, "https://api.example.com/v1")
        catalog = OpenApiCatalog(RoutingState())
        catalog.server_url = config.openapi.server_url
        rendered = catalog.document()
        assert rendered is not None
        document = json.loads(rendered.body)
        validate(document)
        self.assertEqual(document["servers"][0]["url"], "https://api.example.com/v1")

    def test_restart_only(self) -> None:
        """
        A reload that changes the C{openapi} settings reports them as
        needing a restart.
        """
        old = parse_gateway_config(self.BASE)
        new = parse_gateway_config(dict(self.BASE, openapi={"expose": "public"}))
        live, restart = diff(old, new)
        self.assertEqual(live, [])
        self.assertTrue(any("openapi.expose" in line for line in restart))
