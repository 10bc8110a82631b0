"""
Address strings for the transports that Twisted's endpoint parser does not
know, in the same C{name:key=value} grammar.
"""

from __future__ import annotations

import re
from typing import Dict, Tuple

#: The largest UDP payload over IPv4.
MAX_DATAGRAM_BYTES = 65507

_KEY_VALUE = re.compile(r"([a-z_]+)=(.*)")


def parse_udp_address(description: str, server: bool) -> Tuple[str, int]:
    """
    Parse C{udp:PORT:interface=HOST} (server) or C{udp:host=HOST:port=PORT}
    (client), the same grammar as Twisted's endpoint strings.

    @raise ValueError: anything else.
    """
    parts = description.split(":")
    if parts[0] != "udp":
        raise ValueError(f"{description!r} does not start with 'udp:'")
    options: Dict[str, str] = {}
    positional = []
    for part in parts[1:]:
        match = _KEY_VALUE.match(part)
        if match:
            options[match.group(1)] = match.group(2)
        else:
            positional.append(part)
    try:
        if server:
            if len(positional) != 1 or set(options) - {"interface"}:
                raise ValueError
            return options.get("interface", ""), int(positional[0])
        if positional or set(options) != {"host", "port"}:
            raise ValueError
        return options["host"], int(options["port"])
    except ValueError:
        form = "udp:PORT:interface=HOST" if server else "udp:host=HOST:port=PORT"
        raise ValueError(f"{description!r} is not of the form {form}") from None
