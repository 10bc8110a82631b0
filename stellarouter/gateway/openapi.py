"""
The gateway's OpenAPI 3.1 document, built from the endpoint descriptions
the connected microservices sent in HELLO (feature C{endpoint-schemas},
L{stellarouter.common.schemas}), and the routes that serve it and a
Swagger UI page (docs/router/openapi.md).

 - One document per version: C{GET /openapi.json} describes every service
   at the version a request without C{X-Stella-Version} reaches (the
   configured default, else the highest connected); C{?version=V}
   describes every service that has an instance at C{V}, as requests with
   C{X-Stella-Version: V} reach them.
 - Components are namespaced by service (C{billing.Invoice}), so two
   services' C{Invoice} do not clash.
 - A document is built when first asked for after the set of HELLOs
   changed (L{RoutingState.generation}), never on the proxy's path, and
   kept with its C{ETag}; C{If-None-Match} with it is answered 304.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

import msgspec
from klein import Klein
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest
from zope.interface import implementer

from ..common.interfaces import IOpenApiSource
from ..common.models import ClaimRequirement, EndpointDescriptor, parse_version
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..common.schemas import ServiceSchemas
from .state import RoutingState

log = Logger()

#: The prefix of the component references in the descriptions.
_COMPONENTS = "#/components/schemas/"
#: Characters OpenAPI allows in a component name.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")
_PARAMETER = re.compile(r"\{([^{}]+)\}")
#: The deepest JSON Schema nesting copied into the document (deeper parts
#: are replaced by C{{}}: any value).
MAX_SCHEMA_DEPTH = 64
#: The security scheme required claims are expressed with.
BEARER = "bearerAuth"
#: The problem document the gateway (and the SDK) answer errors with.
PROBLEM = "stellarouter.Problem"
_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details (gateway and SDK errors).",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"},
                   "instance": {"type": "string"}},
}
#: The Swagger UI files served under the docs path (vendored swagger-ui-dist,
#: docs/router/decisions.md), with their content types.
SWAGGER_FILES = {
    "swagger-ui-bundle.js": b"application/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": b"application/javascript; charset=utf-8",
    "swagger-ui.css": b"text/css; charset=utf-8",
    "favicon-32x32.png": b"image/png",
    "favicon-16x16.png": b"image/png",
    "LICENSE": b"text/plain; charset=utf-8",
    "NOTICE": b"text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class RenderedDocument:
    """
    A serialized OpenAPI document and its strong entity tag (quoted).
    """

    body: bytes
    etag: bytes


@dataclass
class _ServiceAtVersion:
    """
    What the live connections of one service at one version announce,
    merged (instances of one version normally announce the same).
    """

    service: str
    version: str
    endpoints: Dict[Tuple[str, str], EndpointDescriptor]
    descriptions: Dict[Tuple[str, str], Mapping[str, Any]]
    components: Dict[str, Any]


@implementer(IOpenApiSource)
class OpenApiCatalog:
    """
    The OpenAPI documents of what is connected now, built on demand and
    kept until the set of HELLOs changes.
    """

    def __init__(
        self,
        routing_state: RoutingState,
        title: str = "stellarouter gateway",
        default_versions: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        """
        @param default_versions: service name to the version a request
            without C{X-Stella-Version} is routed to (C{services[].default_version}).
        """
        self.routing_state = routing_state
        self.title = title
        self.default_versions = default_versions
        #: The document's C{servers} URL (C{None}: none, the page's origin).
        self.server_url: Optional[str] = None
        self._key: Any = None
        self._documents: Dict[Optional[str], RenderedDocument] = {}
        self._services: Dict[Tuple[str, str], _ServiceAtVersion] = {}
        #: Documents built so far (for the tests and the benchmark).
        self.builds = 0

    def _current(self) -> None:
        """
        Forget the documents built if the HELLOs (or the default versions)
        changed since.
        """
        key = (self.routing_state.generation, tuple(sorted(self.default_versions().items())),
               self.server_url)
        if key != self._key:
            self._key = key
            self._documents.clear()
            self._services = _collect(self.routing_state)

    def versions(self) -> List[str]:
        """
        Every version some connected service has, lowest first.
        """
        self._current()
        return sorted({v for (_, v) in self._services}, key=parse_version)

    def document(self, version: Optional[str] = None) -> Optional[RenderedDocument]:
        """
        The document for requests with C{X-Stella-Version: version}, or
        without one (C{None}); C{None} if no service has C{version}.
        """
        self._current()
        rendered = self._documents.get(version)
        if rendered is not None:
            return rendered
        if version is None:
            chosen = _default_choice(self._services, self.default_versions())
        else:
            chosen = sorted(k for k in self._services if k[1] == version)
            if not chosen:
                return None
        document = build_document([self._services[k] for k in chosen], self.title, version)
        if self.server_url is not None:
            document["servers"] = [{"url": self.server_url,
                                    "description": "the gateway's HTTP port"}]
        body = msgspec.json.encode(document)  # a quarter of json.dumps's time
        rendered = RenderedDocument(body, b'"' + hashlib.sha256(body).hexdigest()[:32].encode()
                                    + b'"')
        self._documents[version] = rendered
        self.builds += 1
        return rendered


def _collect(routing_state: RoutingState) -> Dict[Tuple[str, str], _ServiceAtVersion]:
    """
    The live connections grouped by service and version, in a stable order
    (so that the same HELLOs give the same document and C{ETag}).
    """
    services: Dict[Tuple[str, str], _ServiceAtVersion] = {}
    states = sorted((c.state for c in routing_state.connections()),
                    key=lambda s: (s.instance.instance_id, s.connection_id))
    for state in states:
        key = (state.instance.service_name, state.instance.version)
        entry = services.get(key)
        if entry is None:
            entry = services[key] = _ServiceAtVersion(key[0], key[1], {}, {}, {})
        schemas: Optional[ServiceSchemas] = state.schemas
        for endpoint_key, endpoint in sorted(state.endpoints.items()):
            entry.endpoints.setdefault(endpoint_key, endpoint)
            if schemas is not None and endpoint_key not in entry.descriptions:
                description = schemas.endpoints.get(endpoint_key)
                if description is not None:
                    entry.descriptions[endpoint_key] = description
        if schemas is not None:
            for name, schema in schemas.components.items():
                entry.components.setdefault(name, schema)
    return services


def _default_choice(services: Mapping[Tuple[str, str], _ServiceAtVersion],
                    defaults: Mapping[str, str]) -> List[Tuple[str, str]]:
    """
    Per service, the version a request without C{X-Stella-Version} reaches:
    the configured default when connected, else the highest.
    """
    by_service: Dict[str, List[str]] = {}
    for service, version in services:
        by_service.setdefault(service, []).append(version)
    chosen = []
    for service, versions in sorted(by_service.items()):
        default = defaults.get(service)
        chosen.append((service, default if default in versions
                       else max(versions, key=parse_version)))
    return chosen


# -- the document -----------------------------------------------------------


def build_document(services: Iterable[_ServiceAtVersion], title: str,
                   version: Optional[str]) -> Dict[str, Any]:
    """
    One OpenAPI 3.1 document for C{services} (one version each).

    @param version: the C{X-Stella-Version} the document is for, or
        C{None} (the default versions).
    """
    paths: Dict[str, Dict[str, Any]] = {}
    components: Dict[str, Any] = {PROBLEM: _PROBLEM_SCHEMA}
    tags: List[Dict[str, str]] = []
    operation_ids: Dict[str, int] = {}
    secured = False
    for service in services:
        names = {name: _component_name(service.service, name) for name in service.components}
        rewrite = _SchemaRewriter(service.service, names)
        for name, schema in sorted(service.components.items()):
            copied = rewrite.schema(schema)
            if isinstance(copied, dict) and copied.get("title") == name:
                copied["title"] = names[name]  # what Swagger UI shows
            components[names[name]] = copied
        tags.append({"name": service.service,
                     "description": f"{service.service} {service.version}"})
        for key, endpoint in sorted(service.endpoints.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            description = service.descriptions.get(key, {})
            operation = _operation(service, endpoint, description, rewrite, version)
            base = operation["operationId"]
            count = operation_ids.get(base, 0)
            operation_ids[base] = count + 1
            if count:
                operation["operationId"] = f"{base}_{count + 1}"
            secured = secured or "security" in operation
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    document_components: Dict[str, Any] = {"schemas": components}
    if secured:
        document_components["securitySchemes"] = {BEARER: {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A JWT the gateway verifies; an operation's security requirement "
                           "lists the claims it needs (`type=value`, `|` for any of).",
        }}
    listed = ", ".join(f"{s['description']}" for s in tags) or "no service connected"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version or "default",
            "description": (f"Services behind this gateway ({listed}), "
                            + (f"as reached with `X-Stella-Version: {version}`." if version
                               else "at the versions reached without `X-Stella-Version`.")),
        },
        "tags": tags,
        "paths": paths,
        "components": document_components,
    }


def _component_name(service: str, name: str) -> str:
    return f"{service}.{_NOT_IN_NAME.sub('_', name)}"


def _operation(service: _ServiceAtVersion, endpoint: EndpointDescriptor,
               description: Mapping[str, Any], rewrite: "_SchemaRewriter",
               version: Optional[str]) -> Dict[str, Any]:
    """
    The OpenAPI operation of one endpoint.
    """
    opid = description.get("operation_id") or (
        endpoint.method.lower() + "_" + ("_".join(_NOT_IN_NAME.sub("_", part) for part in
                                                  endpoint.path.strip("/").split("/")) or "root"))
    operation: Dict[str, Any] = {
        "operationId": f"{service.service}.{opid}",
        "tags": [t for t in description.get("tags") or () if isinstance(t, str) and t]
        or [service.service],
    }
    for key, target in (("summary", "summary"), ("description", "description")):
        if description.get(key):
            operation[target] = description[key]
    if description.get("deprecated"):
        operation["deprecated"] = True
    parameter_docs = description.get("parameters") or {}
    parameters: List[Dict[str, Any]] = []
    for name in _PARAMETER.findall(endpoint.path):
        parameter = {"name": name, "in": "path", "required": True,
                     "schema": {"type": "string"}}
        if isinstance(parameter_docs.get(name), str):
            parameter["description"] = parameter_docs[name]
        parameters.append(parameter)
    if version is not None:
        parameters.append({
            "name": "X-Stella-Version", "in": "header", "required": True,
            "description": "The version this document describes.",
            "schema": {"type": "string", "enum": [version], "default": version},
        })
    if parameters:
        operation["parameters"] = parameters
    request = description.get("request")
    if endpoint.supports_streaming:
        media = (request or {}).get("content_type") or "application/octet-stream"
        operation["requestBody"] = {
            "description": "Streamed to the service as it arrives.",
            "content": {str(media): {"schema": {"type": "string",
                                                "contentMediaType": str(media)}}},
        }
    elif isinstance(request, dict):
        media = str(request.get("content_type") or "application/json")
        operation["requestBody"] = {"required": True, "content": {
            media: {"schema": rewrite.schema(request["schema"])} if "schema" in request
            else {}}}
    operation["responses"] = _responses(description.get("response"), rewrite,
                                        endpoint.supports_streaming)
    if endpoint.requiring_claims:
        operation["security"] = [{BEARER: [_claim_text(c) for c in endpoint.requiring_claims]}]
    operation["x-stella-service"] = service.service
    operation["x-stella-version"] = service.version
    operation["x-stella-timeout"] = endpoint.default_timeout
    if endpoint.supports_streaming:
        operation["x-stella-streaming"] = True
    return operation


def _responses(response: Any, rewrite: "_SchemaRewriter", streaming: bool) -> Dict[str, Any]:
    status = 200
    content: Dict[str, Any] = {}
    if isinstance(response, dict):
        raw_status = response.get("status")
        if isinstance(raw_status, int) and not isinstance(raw_status, bool) and (
                200 <= raw_status <= 599):
            status = raw_status
        media = response.get("content_type")
        if isinstance(media, str) and media:
            content = {media: {"schema": rewrite.schema(response["schema"])}
                       if "schema" in response else {}}
    success: Dict[str, Any] = {"description": RESPONSES.get(status, b"").decode() or "Success"}
    if status not in (204, 304):
        # A body of a type the service did not describe: any (so a client,
        # and "Try it out", accept whatever comes, not only problems).
        success["content"] = content or {"*/*": {}}
    return {
        str(status): success,
        "default": {"description": "An error (problem details)",
                    "content": {PROBLEM_CONTENT_TYPE: {
                        "schema": {"$ref": _COMPONENTS + PROBLEM}}}},
    }


def _claim_text(claim: ClaimRequirement) -> str:
    if claim.value is None:
        return claim.type
    values = claim.value if isinstance(claim.value, tuple) else (claim.value,)
    return f"{claim.type}={'|'.join(values)}"


class _SchemaRewriter:
    """
    Copies a service's JSON Schemas into the document: references to its
    components renamed into its namespace; a reference to anything else
    (another document, an unknown component) and nesting deeper than
    L{MAX_SCHEMA_DEPTH} replaced by C{{}}, logged once per service.
    """

    def __init__(self, service: str, names: Mapping[str, str]) -> None:
        self.service = service
        self.names = names
        self._warned = False

    def schema(self, value: Any) -> Any:
        """
        A copy of C{value} for the document; anything but an object or a
        boolean (the two forms of a JSON Schema) is replaced by C{{}}.
        """
        if not isinstance(value, (dict, bool)):
            self._warn("a schema that is neither an object nor a boolean")
            return {}
        return self._copy(value, 0)

    def _copy(self, value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            if depth > MAX_SCHEMA_DEPTH:
                self._warn("a schema nested deeper than {max} levels")
                return {}
            ref = value.get("$ref")
            if ref is not None:
                if not (isinstance(ref, str) and ref.startswith(_COMPONENTS)
                        and ref[len(_COMPONENTS):] in self.names):
                    self._warn("a reference to something other than its components")
                    return {}
                value = dict(value, **{"$ref": _COMPONENTS + self.names[ref[len(_COMPONENTS):]]})
            return {str(k): (v if k == "$ref" else self._copy(v, depth + 1))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._copy(v, depth + 1) for v in value]
        return value

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            log.warn("service {service}: " + what + " left out of the OpenAPI document",
                     service=self.service, max=MAX_SCHEMA_DEPTH)


# -- the routes -----------------------------------------------------------


def _swagger_file(name: str) -> bytes:
    return (files(__package__) / "swagger_ui" / name).read_bytes()


_SWAGGER_CACHE: Dict[str, bytes] = {}

_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{docs}/swagger-ui.css">
<link rel="icon" type="image/png" href="{docs}/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{docs}/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="{docs}/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script>
window.ui = SwaggerUIBundle({{
  urls: {urls},
  "urls.primaryName": "default",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  plugins: [SwaggerUIBundle.plugins.DownloadUrl],
  layout: "StandaloneLayout"
}});
</script>
</body>
</html>
"""


def _request_of(args: Tuple[Any, ...]) -> IRequest:
    """
    The request among a Klein handler's arguments: the first when the app
    is not bound to an object, the second when it is.
    """
    for arg in args:
        if IRequest.providedBy(arg):
            return arg
    raise TypeError("no request among the handler's arguments")


def _matches(header: Optional[bytes], etag: bytes) -> bool:
    """
    Whether an C{If-None-Match} value matches C{etag} (weak comparison,
    RFC 9110 section 13.1.2).
    """
    if header is None:
        return False
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


def add_openapi_routes(
    app: Klein,
    source: Union[IOpenApiSource, Callable[[Any], IOpenApiSource]],
    openapi_path: str = "/openapi.json",
    docs_path: str = "/docs",
    guard: Optional[Callable[[Any, IRequest], None]] = None,
) -> None:
    """
    Add C{GET openapi_path} (the document, C{?version=V} for one version;
    C{ETag}, C{If-None-Match} answered 304) and C{GET docs_path} (Swagger
    UI, with its files under C{docs_path/}) to a Klein app: the gateway's
    public site or its admin listener.

    @param source: the documents; or, for a class-level C{app = Klein()}
        whose routes are shared by every instance, a function given the
        instance the app is used through and returning its documents
        (C{lambda admin: admin.openapi}), so that the routes are added once,
        at class level.
    @param guard: for such a class-level app, called with the instance and
        the request before anything is answered; what it raises is the
        app's to handle (the admin listener's authorization).
    """
    docs = docs_path.rstrip("/")

    def source_for(args: Tuple[Any, ...]) -> IOpenApiSource:
        if guard is not None:
            guard(args[0], _request_of(args))
        if IOpenApiSource.providedBy(source):
            return source
        return source(args[0])

    def openapi(*args: Any, **kwargs: Any) -> bytes:
        request = _request_of(args)
        source = source_for(args)
        # From the URI: the gateway's own request class does not parse args.
        raw = parse_qs(urlsplit(request.uri).query).get(b"version")
        version = raw[0].decode("utf-8", "replace") if raw else None
        rendered = source.document(version)
        request.setHeader(b"Cache-Control", b"no-cache")
        if rendered is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", PROBLEM_CONTENT_TYPE.encode())
            known = ", ".join(source.versions()) or "none"
            return problem_body(404, "openapi-version-not-found", "No such version",
                                detail=f"no service has version {version!r} "
                                       f"(connected versions: {known})")
        request.setHeader(b"ETag", rendered.etag)
        if _matches(request.getHeader(b"If-None-Match"), rendered.etag):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"Content-Type", b"application/json")
        return rendered.body

    def page(*args: Any, **kwargs: Any) -> bytes:
        request = _request_of(args)
        source = source_for(args)
        urls = [{"name": "default", "url": openapi_path}] + [
            {"name": v, "url": f"{openapi_path}?version={v}"} for v in source.versions()]
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return _DOCS_PAGE.format(title=source.title.replace("<", "&lt;"), docs=docs,
                                 urls=json.dumps(urls).replace("</", "<\\/")).encode()

    def asset(*args: Any, **kwargs: Any) -> bytes:
        request = _request_of(args)
        if guard is not None:
            guard(args[0], request)
        name = kwargs.get("name", "")
        content_type = SWAGGER_FILES.get(name)
        if content_type is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", PROBLEM_CONTENT_TYPE.encode())
            return problem_body(404, "not-found", "Not found", detail=f"no file {name!r}")
        body = _SWAGGER_CACHE.get(name)
        if body is None:
            body = _SWAGGER_CACHE[name] = _swagger_file(name)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        return body

    methods = ["GET", "HEAD"]
    app.route(openapi_path, methods=methods, endpoint=f"openapi:{openapi_path}")(openapi)
    app.route(docs, methods=methods, endpoint=f"openapi-docs:{docs}")(page)
    app.route(docs + "/", methods=methods, endpoint=f"openapi-docs-slash:{docs}")(page)
    app.route(docs + "/<string:name>", methods=methods,
              endpoint=f"openapi-assets:{docs}")(asset)


def owned_paths(openapi_path: str = "/openapi.json",
                docs_path: str = "/docs") -> Callable[[bytes], bool]:
    """
    The test of the paths L{add_openapi_routes} serves, for a site that
    sends only its own paths to its Klein app.
    """
    document = openapi_path.encode()
    docs = docs_path.rstrip("/").encode()
    prefix = docs + b"/"

    def owns(path: bytes) -> bool:
        return path == document or path == docs or path.startswith(prefix)

    return owns


__all__ = ["OpenApiCatalog", "RenderedDocument", "add_openapi_routes", "build_document",
           "expose_publicly",
           "owned_paths"]


def expose_publicly(site: Any, routing_state: RoutingState, catalog: IOpenApiSource,
                    openapi_path: str = "/openapi.json", docs_path: str = "/docs") -> None:
    """
    Serve the routes on the gateway's public site (C{openapi.expose:
    public}): its own Klein app takes the two paths, and no service may
    announce them.

    @param site: a L{stellarouter.gateway.edge.GatewaySite}.
    """
    app = Klein()
    add_openapi_routes(app, catalog, openapi_path, docs_path)
    site.own_paths = owned_paths(openapi_path, docs_path)
    site.own_resource = app.resource()
    routing_state.reserved_prefixes = routing_state.reserved_prefixes + (
        openapi_path, docs_path.rstrip("/"))
