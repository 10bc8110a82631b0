"""
The gateway's C{admin} section (issue 21): the admin listener, separate
from the public HTTP port, and who may use it.

    admin:
      enabled: true                              # default
      listen: "tcp:9901:interface=127.0.0.1"     # default: loopback only
      require_claims: {scope: stellarouter:admin}  # optional bearer protection
      allow_remote: false                        # default
      idle_timeout: 10                           # default (seconds)
      max_connections: 64                        # default
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..common.addresses import endpoint_options
from ..common.models import ClaimRequirement
from .endpoints import check_server_endpoint
from .reader import Reader, quote

#: Where the admin listener listens unless configured.
DEFAULT_ADMIN_LISTEN = "tcp:9901:interface=127.0.0.1"
#: C{admin.idle_timeout} unless configured (seconds), and its bounds.
DEFAULT_ADMIN_IDLE_TIMEOUT = 10.0
ADMIN_IDLE_TIMEOUT_RANGE = (0.1, 3600.0)
#: C{admin.max_connections} unless configured, and its bounds.
DEFAULT_ADMIN_MAX_CONNECTIONS = 64
ADMIN_MAX_CONNECTIONS_RANGE = (1, 10_000)


@dataclass(frozen=True)
class AdminConfig:
    """
    The admin listener.

    @ivar enabled: start it (C{false}: no admin listener at all).
    @ivar listen: a server endpoint string.
    @ivar require_claims: when not empty, every admin request needs a bearer
        token that the gateway's C{auth} settings validate and whose claims
        meet all of these (401 without a valid token, 403 with one that
        lacks a claim).
    @ivar allow_remote: accept a C{listen} that is not loopback-only and
        requests from peers that are not on the loopback interface.
    @ivar idle_timeout: seconds an admin connection may send nothing before
        it is closed, and seconds a request has to arrive in full (head and
        body) from its first byte (408 and closed otherwise).
    @ivar max_connections: admin connections held at once; one more is
        answered 503 and closed at once.
    """

    enabled: bool = True
    listen: str = DEFAULT_ADMIN_LISTEN
    require_claims: Tuple[ClaimRequirement, ...] = ()
    allow_remote: bool = False
    idle_timeout: float = DEFAULT_ADMIN_IDLE_TIMEOUT
    max_connections: int = DEFAULT_ADMIN_MAX_CONNECTIONS


def is_loopback(host: str) -> bool:
    """
    Whether C{host} (an address, or C{localhost}) is on the loopback
    interface.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def listens_on_loopback_only(description: str) -> bool:
    """
    Whether the server endpoint string C{description} only accepts local
    connections: a C{unix} socket, or a C{tcp}/C{tcp6}/C{ssl} endpoint with
    a loopback C{interface} (without one it listens on every interface).
    """
    kind, options = endpoint_options(description)
    if kind == "unix":
        return True
    interface = options.get("interface")
    return kind in ("tcp", "tcp6", "ssl") and interface is not None and is_loopback(interface)


def _read_claims(r: Reader, raw: object) -> Tuple[ClaimRequirement, ...]:
    """
    C{admin.require_claims}: a mapping of claim name to a value, a list of
    values (any of them) or C{null} (the claim must be present).
    """
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        r.problem("admin.require_claims", "must map a claim name to a value, a list of values "
                  f"or null, e.g. {{scope: stellarouter:admin}}; not {quote(raw)}")
        return ()
    claims: List[ClaimRequirement] = []
    for name, value in raw.items():
        where = f"admin.require_claims.{name}"
        if not isinstance(name, str) or not name:
            r.problem("admin.require_claims", f"claim name {quote(name)} must be a string")
            continue
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                r.problem(where, "a list of values must hold non-empty strings")
                continue
            claims.append(ClaimRequirement(name, tuple(value)))
        elif value is None or (isinstance(value, str) and value):
            claims.append(ClaimRequirement(name, value))
        else:
            r.problem(where, f"must be a string, a list of strings or null, not {quote(value)}")
    return tuple(claims)


def read_admin(r: Reader, raw: object, auth_enabled: bool) -> AdminConfig:
    """
    Read and check the C{admin} mapping.

    @param auth_enabled: whether C{auth} configures a key (C{require_claims}
        needs one to validate tokens).
    """
    obj = r.mapping(raw, "admin", ["enabled", "listen", "require_claims", "allow_remote",
                                   "idle_timeout", "max_connections"])
    enabled = r.get(obj, "enabled", "admin", bool, True)
    listen = r.get(obj, "listen", "admin", str, DEFAULT_ADMIN_LISTEN, check_server_endpoint)
    allow_remote = r.get(obj, "allow_remote", "admin", bool, False)
    idle_timeout = r.get(obj, "idle_timeout", "admin", float, DEFAULT_ADMIN_IDLE_TIMEOUT,
                         _within(ADMIN_IDLE_TIMEOUT_RANGE, " seconds"))
    max_connections = r.get(obj, "max_connections", "admin", int,
                            DEFAULT_ADMIN_MAX_CONNECTIONS, _within(ADMIN_MAX_CONNECTIONS_RANGE))
    claims = _read_claims(r, obj.get("require_claims"))
    if enabled and listen is not None and not allow_remote and not listens_on_loopback_only(
            listen):
        r.problem("admin.listen", f"{quote(listen)} is reachable from other hosts; the admin "
                  "listener is loopback-only unless admin.allow_remote is true (add "
                  "':interface=127.0.0.1', or set allow_remote with require_claims)")
    if enabled and allow_remote and not claims:
        r.problem("admin.allow_remote", "true needs admin.require_claims: without a token "
                  "check, anyone who reaches the admin port can drain instances and read the "
                  "configuration (e.g. require_claims: {scope: stellarouter:admin})")
    if claims and not auth_enabled:
        r.problem("admin.require_claims", "needs auth.hs256_secret or auth.jwks_file to "
                  "validate the bearer tokens")
    return AdminConfig(bool(enabled), listen or DEFAULT_ADMIN_LISTEN, claims,
                       bool(allow_remote), idle_timeout, max_connections)


def _within(bounds: Tuple[float, float], unit: str = "") -> Callable[[float], Optional[str]]:
    """
    A check that a number is within C{bounds} (inclusive).
    """
    low, high = bounds

    def check(value: float) -> Optional[str]:
        if low <= value <= high:
            return None
        return f"must be in [{low:g}, {high:g}]{unit}, not {value:g}"

    return check


def health_detail_problem(value: str) -> Optional[str]:
    """
    Why C{http.health_detail} is not C{status} or C{full}, or C{None}.
    """
    return None if value in HEALTH_DETAILS else f"must be one of {', '.join(HEALTH_DETAILS)}"


#: C{http.health_detail}: what the public C{GET /health} shows.
HEALTH_DETAILS = ("status", "full")


__all__ = ["ADMIN_IDLE_TIMEOUT_RANGE", "ADMIN_MAX_CONNECTIONS_RANGE", "AdminConfig",
           "DEFAULT_ADMIN_IDLE_TIMEOUT", "DEFAULT_ADMIN_LISTEN", "DEFAULT_ADMIN_MAX_CONNECTIONS",
           "HEALTH_DETAILS", "health_detail_problem", "is_loopback", "listens_on_loopback_only",
           "read_admin"]
