"""
Address strings for the transports that Twisted's endpoint parser does not
know, in the same C{name:key=value} grammar.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from twisted.internet.address import UNIXAddress

#: The largest UDP payload over IPv4.
MAX_DATAGRAM_BYTES = 65507

_KEY_VALUE = re.compile(r"([a-z_]+)=(.*)", re.S)


def describe_address(address: object) -> str:
    """
    How logs, the ready line and the admin API show a socket address:
    C{host:port}, C{[host]:port} for IPv6, C{unix:PATH} for a unix socket
    (C{unix:} for an unnamed one, a client's), anything else as C{str()}.
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return "unix:" + (name.decode("utf-8", "replace") if isinstance(name, bytes)
                          else name or "")
    return str(address)


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


def split_options(description: str) -> List[str]:
    """
    C{description} cut at each C{:} that is not escaped, as Twisted's
    endpoint strings are: a backslash takes the next character as it is
    (C{\\:} is a colon, C{\\\\} a backslash).
    """
    parts: List[str] = []
    current: List[str] = []
    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return parts


def endpoint_options(description: str) -> Tuple[str, Dict[str, str]]:
    """
    The kind (C{tcp}, C{unix} ..., lower case) and the C{key=value} options
    of an endpoint string, unescaped (L{split_options}); of a key given
    twice, the last value, as Twisted takes it.
    """
    parts = split_options(description)
    options: Dict[str, str] = {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            options[name.strip()] = value.strip()
    return parts[0].strip().lower(), options


def parse_amqp_address(description: str, gateway_required: bool = False) -> Dict[str, str]:
    """
    Parse C{amqp:host=HOST:port=PORT[:user=U][:password=P][:vhost=V][:gateway=NODE]}
    (a C{:} in a value is written C{\\:}, a backslash C{\\\\}).

    @param gateway_required: a microservice's router address must name the
        gateway node it dials (C{gateway=NODE}).
    @return: the options, with defaults (port 5672, guest/guest, vhost /).
    @raise ValueError: anything else; its message never quotes a part
        that follows the password (a piece of it, unescaped).
    """
    if description.startswith("amqp://"):
        raise ValueError(f"{description!r} is a URL; write it as "
                         "amqp:host=HOST:port=PORT:user=USER:password=PASSWORD:vhost=VHOST")
    parts = split_options(description)
    if parts[0] != "amqp":
        raise ValueError(f"{description!r} does not start with 'amqp:'")
    options = {"port": "5672", "user": "guest", "password": "guest", "vhost": "/"}
    allowed = {"host", "port", "user", "password", "vhost", "gateway"}
    previous = ""
    given = set()
    for part in parts[1:]:
        match = _KEY_VALUE.match(part)
        if match is None or match.group(1) not in allowed:
            if previous == "password":
                raise ValueError(f"{description!r}: the part after password= is not key=value "
                                 "(a ':' in a password is written '\\:')")
            raise ValueError(f"{description!r}: {part!r} is not one of "
                             f"{', '.join(sorted(allowed))} as key=value")
        previous = match.group(1)
        if previous in given:
            raise ValueError(f"{description!r}: the key {previous} is given twice")
        given.add(previous)
        options[previous] = match.group(2)
    if "host" not in options:
        raise ValueError(f"{description!r} needs host=...")
    if not options["port"].isdigit():
        raise ValueError(f"{description!r}: port must be a number")
    if gateway_required and not options.get("gateway"):
        raise ValueError(f"{description!r} needs gateway=NODE_ID (the gateway to dial)")
    return options
