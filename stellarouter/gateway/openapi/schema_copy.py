"""
How a service's JSON Schemas go into the gateway's OpenAPI document
(L{SchemaCopier}): copied, never trusted as they came.  Components are
namespaced by service (C{billing.Invoice}) so that two services'
C{Invoice} do not clash, and the references to them renamed to match; a
reference to anything else and nesting deeper than L{MAX_SCHEMA_DEPTH} are
left out (C{{}}: any value), logged once per service.
"""

from __future__ import annotations

import re
from typing import Mapping

from twisted.logger import Logger

from ...common.jsonvalue import JSONValue

log = Logger()

#: The prefix of the component references in the descriptions.
COMPONENTS = "#/components/schemas/"
#: Characters OpenAPI allows in a component name.
NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: The deepest JSON Schema nesting copied into the document (deeper parts
#: are replaced by C{{}}: any value).
MAX_SCHEMA_DEPTH = 64


def component_name(service: str, name: str) -> str:
    """
    The document's name for the component C{name} of C{service}.
    """
    return f"{service}.{NOT_IN_NAME.sub('_', name)}"


class SchemaCopier:
    """
    Copies a service's JSON Schemas into the document: references to its
    components renamed into its namespace; a reference to anything else
    (another document, an unknown component) and nesting deeper than
    L{MAX_SCHEMA_DEPTH} replaced by C{{}}, logged once per service.
    """

    def __init__(self, service: str, names: Mapping[str, str]) -> None:
        """
        @param names: the service's component names to their names in the
            document (L{component_name}).
        """
        self.service = service
        self.names = names
        self._warned = False

    def schema(self, value: JSONValue) -> JSONValue:
        """
        A copy of C{value} for the document; anything but an object or a
        boolean (the two forms of a JSON Schema) is replaced by C{{}}.
        """
        if not isinstance(value, (dict, bool)):
            self._warn("a schema that is neither an object nor a boolean")
            return {}
        return self._copy(value, 0)

    def _copy(self, value: JSONValue, depth: int) -> JSONValue:
        if isinstance(value, dict):
            if depth > MAX_SCHEMA_DEPTH:
                self._warn("a schema nested deeper than {max} levels")
                return {}
            ref = value.get("$ref")
            if ref is not None:
                if not (isinstance(ref, str) and ref.startswith(COMPONENTS)
                        and ref[len(COMPONENTS):] in self.names):
                    self._warn("a reference to something other than its components")
                    return {}
                value = {**value, "$ref": COMPONENTS + self.names[ref[len(COMPONENTS):]]}
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


__all__ = ["COMPONENTS", "MAX_SCHEMA_DEPTH", "SchemaCopier", "component_name"]
