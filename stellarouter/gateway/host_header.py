"""
The C{Host} header read strictly (RFC 9110 7.2), for the requests the
gateway hands to Klein (the admin API, the public health endpoints): Klein
binds its URL map to the C{Host} before any route runs, and werkzeug fails
on a name it cannot encode (an empty label, one over 63 characters), so a
malformed C{Host} must be refused before.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional, Tuple

from twisted.web.iweb import IRequest

#: One label of a host name.
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")

#: What a C{Host} header L{parse_host} refuses is answered (400).
MALFORMED_HOST = ("the Host header is not a host name, IPv4 address or bracketed IPv6 address "
                  "with an optional port")


def parse_host(header: bytes) -> Tuple[str, Optional[int]]:
    """
    The host and port of a C{Host} header's value (RFC 9110 7.2), read
    strictly: a host name of labels of 1 to 63 letters, digits, C{-} or
    C{_} and at most 253 characters (a final dot is dropped; an IPv4
    address is such a name), or an IPv6 address in brackets (returned
    without them), then an optional C{:port} (0 to 65535; C{:} alone is
    no port).

    @raise ValueError: C{header} is none of these.
    """
    text = header.decode("ascii")  # (UnicodeDecodeError is a ValueError)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("unclosed bracket")
        ipaddress.IPv6Address(host)
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        name = host[:-1] if host.endswith(".") else host
        if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
            raise ValueError("not a host name")
        host = name
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise ValueError("text after the host")
    digits = rest[1:]
    if not digits:
        return host, None
    if not (digits.isdigit() and len(digits) <= 5 and int(digits) <= 65535):
        raise ValueError("not a port")
    return host, int(digits)


def well_formed_hosts(request: IRequest) -> bool:
    """
    Whether every C{Host} header of C{request} is one L{parse_host} reads.
    """
    try:
        for value in request.requestHeaders.getRawHeaders(b"host") or ():
            parse_host(value)
    except ValueError:
        return False
    return True


__all__ = ["MALFORMED_HOST", "parse_host", "well_formed_hosts"]
