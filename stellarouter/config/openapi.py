"""
The gateway's C{openapi} settings: where its OpenAPI document and Swagger
UI page are served (docs/router/openapi.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .reader import Reader

#: Where the document and the page may be served.
EXPOSURES = ("admin", "public", "none")
#: A path of the gateway's own: C{/} and RFC 3986 path characters, no
#: empty segment, no dot segment.
_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+\Z")
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?\Z")


@dataclass(frozen=True)
class OpenApiConfig:
    """
    @ivar expose: C{admin} (the admin listener: the default), C{public}
        (the HTTP port, next to the proxied routes) or C{none} (the gateway
        keeps no endpoint descriptions).
    @ivar path: the document's path.
    @ivar docs_path: the Swagger UI page's path (its files below it).
    @ivar title: the document's C{info.title}.
    @ivar server_url: the base URL clients reach the services at (the
        document's C{servers}); C{None}: the page's own origin when
        public, the HTTP listener's address (C{http://host:port}) when on
        the admin listener.
    """

    expose: str = "admin"
    path: str = "/openapi.json"
    docs_path: str = "/docs"
    title: str = "stellarouter gateway"
    server_url: Optional[str] = None


def _path_problem(value: str) -> Optional[str]:
    if not _PATH.match(value) or "/./" in value + "/" or "/../" in value + "/":
        return "must be an absolute path of non-empty segments, e.g. /openapi.json"
    if value == "/health" or value.startswith("/health/"):
        return "/health and below are the gateway's health endpoints"
    return None


def read_openapi(r: Reader, raw: object) -> OpenApiConfig:
    """
    Read the C{openapi} mapping (every key optional).
    """
    obj = r.mapping(raw, "openapi", ["expose", "path", "docs_path", "title", "server_url"])
    defaults = OpenApiConfig()
    config = OpenApiConfig(
        expose=r.get(obj, "expose", "openapi", str, defaults.expose,
                     lambda v: None if v in EXPOSURES
                     else f"must be one of {', '.join(EXPOSURES)}"),
        path=r.get(obj, "path", "openapi", str, defaults.path, _path_problem),
        docs_path=r.get(obj, "docs_path", "openapi", str, defaults.docs_path, _path_problem),
        title=r.get(obj, "title", "openapi", str, defaults.title,
                    lambda v: None if v.strip() else "must not be empty"),
        server_url=r.get(obj, "server_url", "openapi", str, None,
                         lambda v: None if _URL.match(v)
                         else "must be an http:// or https:// URL, e.g. https://api.example.com"),
    )
    if config.path == config.docs_path or config.path.startswith(config.docs_path + "/"):
        r.problem("openapi.path", f"{config.path} is inside docs_path {config.docs_path}")
    return config


__all__ = ["EXPOSURES", "OpenApiConfig", "read_openapi"]
