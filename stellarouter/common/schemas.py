"""
Endpoint descriptions in HELLO: the HELLO feature C{endpoint-schemas}
(docs/router/protocol.md, "Endpoint schemas").

A microservice that lists L{ENDPOINT_SCHEMAS} in its HELLO C{features}
adds a top-level C{schemas} object to the HELLO::

    "schemas": {
      "endpoints": [
        {"method": "POST", "path": "/invoices",
         "summary": "Create an invoice", "description": "...",
         "tags": ["invoices"], "deprecated": false, "operation_id": "create_invoice",
         "parameters": {"id": "the invoice id"},
         "request": {"content_type": "application/json",
                     "schema": {"$ref": "#/components/schemas/NewInvoice"}},
         "response": {"status": 201, "content_type": "application/json",
                      "schema": {"$ref": "#/components/schemas/Invoice"}}}
      ],
      "components": {"NewInvoice": {...}, "Invoice": {...}}
    }

Every key but C{method} and C{path} is optional.  Streaming and required
claims are not repeated: the endpoint itself says them.  A gateway that
keeps the descriptions lists the feature in its HELLO answer; an older one
ignores the key (unknown keys are ignored), so older peers are unaffected.

This module is the wire format and its cheap shape check only (no JSON
Schema is walked here: that happens when the gateway builds its OpenAPI
document, off the path of HELLO handling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Required, Tuple, TypedDict, cast

from .jsonvalue import JSONObject, JSONValue

#: The HELLO feature of a microservice that describes its endpoints in a
#: C{schemas} key; a gateway that lists it in its answer kept them.
ENDPOINT_SCHEMAS = "endpoint-schemas"

#: Keys an endpoint description may have, and the type of each.
_ENDPOINT_KEYS: Mapping[str, type] = {
    "method": str, "path": str, "summary": str, "description": str, "tags": list,
    "deprecated": bool, "operation_id": str, "parameters": dict, "request": dict,
    "response": dict,
}


class EndpointDescription(TypedDict, total=False):
    """
    One endpoint's description in a HELLO's C{schemas}, as L{read_schemas}
    checked it: the keys have these types or are null (a tag, a parameter
    description, and the keys of C{request} and C{response} are not checked
    here: their reader narrows them).
    """

    method: Required[str]
    path: Required[str]
    summary: Optional[str]
    description: Optional[str]
    tags: Optional[List[JSONValue]]
    deprecated: Optional[bool]
    operation_id: Optional[str]
    parameters: Optional[JSONObject]
    request: Optional[JSONObject]
    response: Optional[JSONObject]


class HelloSchemas(TypedDict):
    """
    The C{schemas} object of a HELLO, as the SDK writes it.
    """

    endpoints: List[EndpointDescription]
    components: Dict[str, JSONValue]


class SchemasProblem(ValueError):
    """
    The C{schemas} of a HELLO do not have the documented shape (the HELLO
    itself is still accepted: the gateway routes the endpoints, without
    their descriptions).
    """


@dataclass(frozen=True)
class ServiceSchemas:
    """
    The descriptions a HELLO carried, checked for shape.

    @ivar endpoints: C{(method, path)} to that endpoint's description (a
        JSON object as received).
    @ivar components: schema name to JSON Schema, as received; the
        descriptions refer to them as C{#/components/schemas/NAME}.
    """

    endpoints: Mapping[Tuple[str, str], EndpointDescription]
    components: Mapping[str, JSONValue]


def read_schemas(raw: object) -> ServiceSchemas:
    """
    Check the shape of a HELLO's C{schemas} object: cheap (a look at each
    endpoint's keys), no JSON Schema is walked.

    @raise SchemasProblem: naming the first key at fault.
    """
    if not isinstance(raw, dict):
        raise SchemasProblem("schemas must be an object")
    endpoints = raw.get("endpoints")
    components = raw.get("components")
    endpoints = [] if endpoints is None else endpoints
    components = {} if components is None else components
    if not isinstance(endpoints, list):
        raise SchemasProblem("schemas.endpoints must be a list")
    if not isinstance(components, dict):
        raise SchemasProblem("schemas.components must be an object")
    by_key: Dict[Tuple[str, str], EndpointDescription] = {}
    for index, item in enumerate(endpoints):
        where = f"schemas.endpoints[{index}]"
        if not isinstance(item, dict):
            raise SchemasProblem(f"{where} must be an object")
        for key, kind in _ENDPOINT_KEYS.items():
            value = item.get(key)
            if value is not None and (not isinstance(value, kind) or (
                    kind is not bool and isinstance(value, bool))):
                raise SchemasProblem(f"{where}.{key} must be {kind.__name__}")
        method, path = item.get("method"), item.get("path")
        if method is None or path is None:
            raise SchemasProblem(f"{where} needs a method and a path")
        # Checked above: the keys have the types the TypedDict names.
        by_key[(method.upper(), path)] = cast(EndpointDescription, item)
    return ServiceSchemas(by_key, components)


def schemas_to_json(endpoints: Iterable[EndpointDescription],
                    components: Mapping[str, JSONValue]) -> HelloSchemas:
    """
    The C{schemas} object of a HELLO.

    @param endpoints: the endpoint descriptions (JSON objects with at least
        C{method} and C{path}).
    """
    return {"endpoints": list(endpoints), "components": dict(components)}


def without_json_schemas(schemas: HelloSchemas) -> HelloSchemas:
    """
    C{schemas} with every JSON Schema left out (the components, and the
    C{schema} of each request and response), keeping summaries,
    descriptions, tags, parameters, statuses and content types: what the
    SDK sends when the whole would not fit in a frame.
    """
    endpoints = []
    for item in schemas.get("endpoints") or ():
        item = item.copy()
        request, response = item.get("request"), item.get("response")
        if isinstance(request, dict):
            item["request"] = _without_schema(request)
        if isinstance(response, dict):
            item["response"] = _without_schema(response)
        endpoints.append(item)
    return {"endpoints": endpoints, "components": {}}


def _without_schema(media: JSONObject) -> JSONObject:
    return {k: v for k, v in media.items() if k != "schema"}


def optional_schemas(obj: Mapping[str, JSONValue], features: Tuple[str, ...]) -> JSONValue:
    """
    The raw C{schemas} of a HELLO object when it lists L{ENDPOINT_SCHEMAS},
    else C{None}.
    """
    return obj.get("schemas") if ENDPOINT_SCHEMAS in features else None


__all__ = ["ENDPOINT_SCHEMAS", "EndpointDescription", "HelloSchemas", "SchemasProblem",
           "ServiceSchemas", "optional_schemas",
           "read_schemas", "schemas_to_json", "without_json_schemas"]
