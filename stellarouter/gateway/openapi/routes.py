"""
The routes that serve the gateway's OpenAPI documents and Swagger UI from a
Klein app (L{add_openapi_routes}): C{GET /openapi.json} (C{?version=V} for
one version; C{ETag}, C{If-None-Match} answered 304) and C{GET /docs} (the
Swagger UI page, its vendored files under C{/docs/}), on the gateway's
public site (L{expose_publicly}) or on its admin listener.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, TypeVar, Union, cast
from urllib.parse import parse_qs, urlsplit

from klein import Klein
from twisted.web.iweb import IRequest

from ...common.interfaces import IOpenApiSource
from ...common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..state import RoutingState

if TYPE_CHECKING:
    from .._web.request import GatewaySite

#: The object a class-level Klein app is used through (the admin listener's
#: L{AdminApp<stellarouter.gateway.admin.AdminApp>}).
Owner = TypeVar("Owner")

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


def _swagger_file(name: str) -> bytes:
    return (files("stellarouter.gateway") / "swagger_ui" / name).read_bytes()

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


def _request_of(args: Tuple[object, ...]) -> IRequest:
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
    source: Union[IOpenApiSource, Callable[[Owner], IOpenApiSource]],
    openapi_path: str = "/openapi.json",
    docs_path: str = "/docs",
    guard: Optional[Callable[[Owner, IRequest], None]] = None,
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

    def owner_of(args: Tuple[object, ...]) -> Owner:
        # A class-level app: the first argument is the object it is used through.
        return cast(Owner, args[0])

    def source_for(args: Tuple[object, ...]) -> IOpenApiSource:
        if guard is not None:
            guard(owner_of(args), _request_of(args))
        if IOpenApiSource.providedBy(source):
            return source
        return source(owner_of(args))

    def openapi(*args: object, **kwargs: object) -> bytes:
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

    def page(*args: object, **kwargs: object) -> bytes:
        request = _request_of(args)
        source = source_for(args)
        urls = [{"name": "default", "url": openapi_path}] + [
            {"name": v, "url": f"{openapi_path}?version={v}"} for v in source.versions()]
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return _DOCS_PAGE.format(title=source.title.replace("<", "&lt;"), docs=docs,
                                 urls=json.dumps(urls).replace("</", "<\\/")).encode()

    def asset(*args: object, **kwargs: object) -> bytes:
        request = _request_of(args)
        if guard is not None:
            guard(owner_of(args), request)
        name = str(kwargs.get("name", ""))
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


def expose_publicly(site: GatewaySite, routing_state: RoutingState, catalog: IOpenApiSource,
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


__all__ = ["SWAGGER_FILES", "add_openapi_routes", "expose_publicly", "owned_paths"]
