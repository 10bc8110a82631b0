"""
Syntax checks of endpoint strings, so that a typo is a configuration error
before anything starts rather than a failure at listen time.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.endpoints import clientFromString, serverFromString

from ..common.redaction import redact_text
from .reader import quote


class _NoReactor:
    """
    Stands in for the reactor while only parsing: endpoint constructors
    store it and never call it.
    """


#: Added to the error of an endpoint string whose parse failed and that
#: holds an unescaped C{::}: an IPv6 address written as it is (the colons
#: then separate arguments, and Twisted's error names a parser function).
IPV6_HINT = ("; a colon inside a value is written \\: (an IPv6 address: interface=\\:\\:1, "
             "host=\\:\\:1; in a double-quoted YAML string each backslash is written twice)")


def _hint(description: str) -> str:
    return IPV6_HINT if "::" in description.replace("\\:", "") else ""


def check_server_endpoint(description: str) -> Optional[str]:
    """
    @return: why C{description} is not a server endpoint string, or C{None}.
    """
    try:
        serverFromString(_NoReactor(), description)
    except Exception as e:
        return redact_text(f"{quote(description)} is not a usable server endpoint string "
                           f"({e}){_hint(description)}")
    return None


def check_client_endpoint(description: str) -> Optional[str]:
    """
    @return: why C{description} is not a client endpoint string, or C{None}.
    """
    try:
        clientFromString(_NoReactor(), description)
    except Exception as e:
        return redact_text(f"{quote(description)} is not a usable client endpoint string "
                           f"({e}){_hint(description)}")
    return None
