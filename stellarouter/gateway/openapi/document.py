"""
One OpenAPI 3.1 document (L{build_document}) for a set of services, one
version each (L{ServiceAtVersion}: what their HELLOs announced), and its
shape as C{TypedDict}s (L{OpenApiDocument} and its parts): one operation
per endpoint, with its path parameters, request body and responses as the
service described them, the gateway's problem document for errors, a
bearer security requirement listing the claims an endpoint needs, and the
gateway's own C{x-stella-*} fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Required, Tuple, TypedDict

from twisted.web.http import RESPONSES

from ...common.jsonvalue import JSONObject, JSONValue
from ...common.models import ClaimRequirement, EndpointDescriptor
from ...common.problems import PROBLEM_CONTENT_TYPE
from ...common.schemas import EndpointDescription
from .schema_copy import COMPONENTS, NOT_IN_NAME, SchemaCopier, component_name

_PARAMETER = re.compile(r"\{([^{}]+)\}")
#: The security scheme required claims are expressed with.
BEARER = "bearerAuth"
#: The problem document the gateway (and the SDK) answer errors with.
PROBLEM = "stellarouter.Problem"
_PROBLEM_SCHEMA: JSONObject = {
    "type": "object",
    "description": "RFC 9457 problem details (gateway and SDK errors).",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"},
                   "instance": {"type": "string"}},
}


class Info(TypedDict):
    """
    The document's C{info}.
    """

    title: str
    version: str
    description: str


class Tag(TypedDict):
    """
    One of the document's C{tags}: one per service.
    """

    name: str
    description: str


class Server(TypedDict):
    """
    One of the document's C{servers}.
    """

    url: str
    description: str


#: A media type object: the schema of a body (none: any).
MediaType = TypedDict("MediaType", {"schema": JSONValue}, total=False)


class RequestBody(TypedDict, total=False):
    """
    An operation's C{requestBody}.
    """

    description: str
    required: bool
    content: Required[Dict[str, MediaType]]


class Response(TypedDict, total=False):
    """
    One of an operation's C{responses}.
    """

    description: Required[str]
    content: Dict[str, MediaType]


#: One of an operation's C{parameters} (a path parameter, or the version header).
Parameter = TypedDict("Parameter", {
    "name": Required[str], "in": Required[str], "required": Required[bool],
    "description": str, "schema": Required[JSONObject],
}, total=False)

#: The operation of one endpoint, with the gateway's C{x-stella-*} fields.
Operation = TypedDict("Operation", {
    "operationId": Required[str], "tags": Required[List[str]], "summary": str,
    "description": str, "deprecated": bool, "parameters": List[Parameter],
    "requestBody": RequestBody, "responses": Dict[str, Response],
    "security": List[Dict[str, List[str]]], "x-stella-service": str, "x-stella-version": str,
    "x-stella-timeout": float, "x-stella-streaming": bool,
}, total=False)


class Components(TypedDict, total=False):
    """
    The document's C{components}.
    """

    schemas: Required[Dict[str, JSONValue]]
    securitySchemes: Dict[str, JSONObject]


class OpenApiDocument(TypedDict, total=False):
    """
    An OpenAPI 3.1 document as the gateway builds it.
    """

    openapi: Required[str]
    info: Required[Info]
    tags: Required[List[Tag]]
    paths: Required[Dict[str, Dict[str, Operation]]]
    components: Required[Components]
    servers: List[Server]


@dataclass
class ServiceAtVersion:
    """
    What the live connections of one service at one version announce,
    merged (instances of one version normally announce the same).
    """

    service: str
    version: str
    endpoints: Dict[Tuple[str, str], EndpointDescriptor]
    descriptions: Dict[Tuple[str, str], EndpointDescription]
    components: Dict[str, JSONValue]


def build_document(services: Iterable[ServiceAtVersion], title: str,
                   version: Optional[str]) -> OpenApiDocument:
    """
    One OpenAPI 3.1 document for C{services} (one version each).

    @param version: the C{X-Stella-Version} the document is for, or
        C{None} (the default versions).
    """
    paths: Dict[str, Dict[str, Operation]] = {}
    components: Dict[str, JSONValue] = {PROBLEM: _PROBLEM_SCHEMA}
    tags: List[Tag] = []
    operation_ids: Dict[str, int] = {}
    secured = False
    for service in services:
        names = {name: component_name(service.service, name) for name in service.components}
        copier = SchemaCopier(service.service, names)
        for name, schema in sorted(service.components.items()):
            copied = copier.schema(schema)
            if isinstance(copied, dict) and copied.get("title") == name:
                copied["title"] = names[name]  # what Swagger UI shows
            components[names[name]] = copied
        tags.append({"name": service.service,
                     "description": f"{service.service} {service.version}"})
        for key, endpoint in sorted(service.endpoints.items(),
                                    key=lambda kv: (kv[0][1], kv[0][0])):
            description = service.descriptions.get(key) or EndpointDescription(
                method=endpoint.method, path=endpoint.path)
            operation = _operation(service, endpoint, description, copier, version)
            base = operation["operationId"]
            count = operation_ids.get(base, 0)
            operation_ids[base] = count + 1
            if count:
                operation["operationId"] = f"{base}_{count + 1}"
            secured = secured or "security" in operation
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    document_components: Components = {"schemas": components}
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


def _operation(service: ServiceAtVersion, endpoint: EndpointDescriptor,
               description: EndpointDescription, copier: SchemaCopier,
               version: Optional[str]) -> Operation:
    """
    The OpenAPI operation of one endpoint.
    """
    opid = description.get("operation_id") or (
        endpoint.method.lower() + "_" + ("_".join(NOT_IN_NAME.sub("_", part) for part in
                                                  endpoint.path.strip("/").split("/")) or "root"))
    operation: Operation = {
        "operationId": f"{service.service}.{opid}",
        "tags": [t for t in description.get("tags") or () if isinstance(t, str) and t]
        or [service.service],
    }
    summary, text = description.get("summary"), description.get("description")
    if summary:
        operation["summary"] = summary
    if text:
        operation["description"] = text
    if description.get("deprecated"):
        operation["deprecated"] = True
    parameter_docs = description.get("parameters") or {}
    parameters: List[Parameter] = []
    for name in _PARAMETER.findall(endpoint.path):
        parameter: Parameter = {"name": name, "in": "path", "required": True,
                                "schema": {"type": "string"}}
        parameter_doc = parameter_docs.get(name)
        if isinstance(parameter_doc, str):
            parameter["description"] = parameter_doc
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
        media = str((request or {}).get("content_type") or "application/octet-stream")
        operation["requestBody"] = {
            "description": "Streamed to the service as it arrives.",
            "content": {media: {"schema": {"type": "string", "contentMediaType": media}}},
        }
    elif isinstance(request, dict):
        media = str(request.get("content_type") or "application/json")
        operation["requestBody"] = {"required": True, "content": {
            media: {"schema": copier.schema(request["schema"])} if "schema" in request
            else {}}}
    operation["responses"] = _responses(description.get("response"), copier)
    if endpoint.requiring_claims:
        operation["security"] = [{BEARER: [_claim_text(c) for c in endpoint.requiring_claims]}]
    operation["x-stella-service"] = service.service
    operation["x-stella-version"] = service.version
    operation["x-stella-timeout"] = endpoint.default_timeout
    if endpoint.supports_streaming:
        operation["x-stella-streaming"] = True
    return operation


def _responses(response: Optional[JSONObject], copier: SchemaCopier) -> Dict[str, Response]:
    status = 200
    content: Dict[str, MediaType] = {}
    if isinstance(response, dict):
        raw_status = response.get("status")
        if isinstance(raw_status, int) and not isinstance(raw_status, bool) and (
                200 <= raw_status <= 599):
            status = raw_status
        media = response.get("content_type")
        if isinstance(media, str) and media:
            content = {media: {"schema": copier.schema(response["schema"])}
                       if "schema" in response else {}}
    success: Response = {"description": RESPONSES.get(status, b"").decode() or "Success"}
    if status not in (204, 304):
        # A body of a type the service did not describe: any (so a client,
        # and "Try it out", accept whatever comes, not only problems).
        success["content"] = content or {"*/*": {}}
    return {
        str(status): success,
        "default": {"description": "An error (problem details)",
                    "content": {PROBLEM_CONTENT_TYPE: {
                        "schema": {"$ref": COMPONENTS + PROBLEM}}}},
    }


def _claim_text(claim: ClaimRequirement) -> str:
    if claim.value is None:
        return claim.type
    values = claim.value if isinstance(claim.value, tuple) else (claim.value,)
    return f"{claim.type}={'|'.join(values)}"


__all__ = ["BEARER", "OpenApiDocument", "Operation", "PROBLEM", "ServiceAtVersion",
           "build_document"]
