"""
Syntax checks of endpoint strings, so that a typo is a configuration error
before anything starts rather than a failure at listen time.
"""

from __future__ import annotations

import re
from typing import Optional

from twisted.internet.endpoints import clientFromString, serverFromString

from ..common.addresses import endpoint_options, split_options
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
    return _check_options_once(description) or _check_socket_mode(description)


def _check_options_once(description: str) -> Optional[str]:
    """
    @return: why an option given twice makes C{description} ambiguous
        (Twisted takes the last, a check may read the first: the admin
        listener's loopback rule read C{interface=127.0.0.1} of
        C{...:interface=127.0.0.1:interface=0.0.0.0}), or C{None}.
    """
    seen = set()
    for part in split_options(description)[1:]:
        name, equals, _ = part.partition("=")
        if not equals:
            continue
        if name in seen:
            return f"{quote(description)} gives {name}= twice"
        seen.add(name)
    return None


def _check_socket_mode(description: str) -> Optional[str]:
    """
    @return: why the C{mode=} of a C{unix:} endpoint string is not a file
        mode (Twisted takes any octal number: C{mode=-1} made a socket
        07777, setuid and world-writable), or C{None}.
    """
    kind, options = endpoint_options(description)
    mode = options.get("mode")
    if kind != "unix" or mode is None or (
            re.fullmatch(r"[0-7]{1,4}", mode) and int(mode, 8) <= 0o777):
        return None
    return (f"{quote(description)} has mode={mode}: a socket's mode is 0 to 777 in octal "
            "(e.g. mode=660)")


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
