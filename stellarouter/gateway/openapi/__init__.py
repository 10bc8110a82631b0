"""
The gateway's OpenAPI 3.1 documents, built from the endpoint descriptions
the connected microservices sent in HELLO (feature C{endpoint-schemas},
L{stellarouter.common.schemas}), and the routes that serve them and a
Swagger UI page (docs/router/openapi.md).  One module per job:
L{catalog<stellarouter.gateway.openapi.catalog>} keeps a document per
version of what is connected and rebuilds it when the HELLOs change;
L{document<stellarouter.gateway.openapi.document>} builds one document
(its shape as C{TypedDict}s); L{schema_copy<stellarouter.gateway.openapi.schema_copy>}
copies a service's JSON Schemas into it; L{routes<stellarouter.gateway.openapi.routes>}
serves C{/openapi.json} and C{/docs} from a Klein app.  This package
re-exports their public names.
"""

from ...common.models import RenderedDocument
from .catalog import OpenApiCatalog
from .document import build_document
from .routes import add_openapi_routes, expose_publicly, owned_paths

__all__ = ["OpenApiCatalog", "RenderedDocument", "add_openapi_routes", "build_document",
           "expose_publicly", "owned_paths"]
