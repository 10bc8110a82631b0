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


def check_server_endpoint(description: str) -> Optional[str]:
    """
    @return: why C{description} is not a server endpoint string, or C{None}.
    """
    try:
        serverFromString(_NoReactor(), description)
    except Exception as e:
        return redact_text(f"{quote(description)} is not a usable server endpoint string ({e})")
    return None


def check_client_endpoint(description: str) -> Optional[str]:
    """
    @return: why C{description} is not a client endpoint string, or C{None}.
    """
    try:
        clientFromString(_NoReactor(), description)
    except Exception as e:
        return redact_text(f"{quote(description)} is not a usable client endpoint string ({e})")
    return None
