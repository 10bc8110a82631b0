"""
Whether a microservice may register, and as what: the HELLO checks that do
not need the connection (L{accept_hello}: the payload, the TLS certificate
names allowed for the service, the configured version policy), the
features both sides agree on (L{agreed_features}), and the
L{ConnectionState} a registered connection starts with
(L{new_connection_state}).  L{stellarouter.gateway.registration} answers,
registers and logs.
"""

from __future__ import annotations

import itertools
from typing import Callable, Collection, Mapping, Optional, Sequence, Tuple

from ..common.enums import TransportType
from ..common.errors import InvalidDescriptor, MalformedPayload
from ..common.models import ConnectionState, RegistrationLimits
from ..common.payloads import COMPACT_HEADERS, RESPONSE_CREDIT, Hello, decode_hello

_ids = itertools.count(1)


class HelloRefused(Exception):
    """
    A HELLO that may not register; the argument is the reason told to the
    microservice.
    """


def accept_hello(
    payload: bytes,
    limits: RegistrationLimits,
    identity: Tuple[str, ...],
    allowed_client_names: Mapping[str, Sequence[str]],
    registration_policy: Optional[Callable[[str, str], Optional[str]]],
) -> Hello:
    """
    Decode a HELLO and check that its instance may register.

    @param identity: the names of the peer's TLS certificate (empty: none).
    @param allowed_client_names: service → certificate names allowed to
        register it; empty: no restriction.
    @param registration_policy: C{policy(service, version)} says why an
        instance may not register, or returns L{None}.
    @raise HelloRefused: it may not, with the reason.
    """
    try:
        hello = decode_hello(payload, limits)
    except (MalformedPayload, InvalidDescriptor) as e:
        raise HelloRefused(f"invalid HELLO: {e}") from e
    service = hello.instance.service_name
    if allowed_client_names:
        allowed = allowed_client_names.get(service, ())
        if not any(name in allowed for name in identity):
            raise HelloRefused(
                f"HELLO refused: certificate {', '.join(identity) or '(none)'} may not "
                f"register service {service!r}")
    if registration_policy is not None:
        refusal = registration_policy(service, hello.instance.version)
        if refusal is not None:
            raise HelloRefused(f"HELLO refused: {refusal}")
    return hello


def agreed_features(announced: Collection[str]) -> Tuple[bool, bool, Tuple[str, ...]]:
    """
    The optional features both sides use, from those a HELLO announced.

    @return: compact headers, response credit, and the features the HELLO
        answer lists back.
    """
    compact = COMPACT_HEADERS in announced
    credit = RESPONSE_CREDIT in announced
    return compact, credit, ((COMPACT_HEADERS,) if compact else ()) + (
        (RESPONSE_CREDIT,) if credit else ())


def new_connection_state(hello: Hello, transport_type: TransportType, peer: str,
                         identity: Tuple[str, ...], now: float,
                         max_frame_bytes: int) -> ConnectionState:
    """
    The state of a connection whose HELLO was accepted, with a fresh
    connection id.
    """
    return ConnectionState(
        connection_id=f"{transport_type.value}-{next(_ids)}",
        instance=hello.instance,
        transport_type=transport_type,
        endpoints={e.key: e for e in hello.endpoints},
        connected_at=now,
        last_heartbeat=now,
        peer=peer,
        peer_identity=identity,
        max_frame_bytes=max_frame_bytes,
    )
