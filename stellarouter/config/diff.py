"""
What changed between two configurations, key path by key path, and which
changes need a restart.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import TYPE_CHECKING, Dict, List, Tuple

from ..common.redaction import is_secret_key, redact
from .reader import quote

if TYPE_CHECKING:
    from .gateway import GatewayConfig

#: Key path prefixes that cannot change while the gateway runs.
RESTART_ONLY = ("http.listen", "http.backlog", "transports", "admin.listen", "admin.enabled",
                "openapi")


def flatten(value: object, prefix: str = "") -> Dict[str, object]:
    """
    A configuration object as C{{key path: leaf value}}.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: Dict[str, object] = {}
        for f in dataclasses.fields(value):
            out.update(flatten(getattr(value, f.name), f"{prefix}.{f.name}" if prefix else f.name))
        return out
    if isinstance(value, tuple) and value and all(
            dataclasses.is_dataclass(v) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    if isinstance(value, Enum):
        return {prefix: value.value}
    return {prefix: value}


def diff(old: object, new: object) -> Tuple[List[str], List[str]]:
    """
    Compare two configurations.

    @return: C{(live, restart)}: human-readable changes that apply live,
        and those that need a restart (listen addresses).
    """
    before, after = flatten(old), flatten(new)
    live: List[str] = []
    restart: List[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if a == b or (a is _ABSENT and b == ()) or (a == () and b is _ABSENT):
            # An empty list of sections and no sections are the same thing.
            continue
        line = describe_change(key, a, b)
        (restart if key.startswith(RESTART_ONLY) else live).append(line)
    return live, restart


#: Shown for a key one side does not have.
_ABSENT = "<absent>"


def describe_change(key: str, old: object, new: object) -> str:
    """
    One changed key as a log line: secrets redacted (L{redact}), every value
    quoted within a bounded length.
    """
    before, after = _show(key, old), _show(key, new)
    if is_secret_key(key) or (before == after and _redacted(key, old)):
        # (A secret, or an address whose password alone changed.)
        return f"{key}: {before} -> {after} (secret changed)"
    return f"{key}: {before} -> {after}"


def _redacted(key: str, value: object) -> bool:
    """
    Whether C{value} is shown with something redacted.
    """
    return value is not _ABSENT and redact(key, value) != value


def _show(key: str, value: object) -> str:
    if value is _ABSENT:
        return _ABSENT
    return quote(redact(key, value))


def security_warnings(old: GatewayConfig, new: GatewayConfig) -> List[str]:
    """
    What a new gateway configuration weakens compared with the one in force:
    authentication turned off, or a source of token keys removed.  A
    half-written or mistaken file can do that silently; it deserves a
    warning even when it is what the operator meant.

    @param old: the L{GatewayConfig} in force.
    @param new: the one about to be applied.
    @return: one message per weakening (empty: nothing weakened).
    """
    before, after = old.auth, new.auth
    warnings: List[str] = []
    if before.require_authentication and not after.require_authentication:
        warnings.append("auth.require_authentication turned off: endpoints without claim "
                        "requirements now accept requests without a token")
    if before.jwks_file and not after.jwks_file:
        warnings.append(f"auth.jwks_file removed ({quote(before.jwks_file)}): tokens signed "
                        "with its keys are refused from now on")
    if before.hs256_secret and not after.hs256_secret:
        warnings.append("auth.hs256_secret removed: HMAC tokens are refused from now on")
    if before.enabled and not after.enabled:
        warnings.append("no token key is configured any more: every endpoint with claim "
                        "requirements answers 401")
    warnings.extend(_admin_weakenings(old, new))
    return warnings


def _admin_weakenings(old: "GatewayConfig", new: "GatewayConfig") -> List[str]:
    """
    What a reload weakens on the admin listener: claims no longer required,
    remote requests now allowed.
    """
    before, after = old.admin, new.admin
    warnings: List[str] = []
    dropped = [c for c in before.require_claims if c not in after.require_claims]
    if dropped:
        names = ", ".join(c.type for c in dropped)
        warnings.append(f"admin.require_claims no longer requires {names}"
                        + ("" if after.require_claims else
                           ": the admin API answers requests without a token"))
    if after.allow_remote and not before.allow_remote:
        warnings.append("admin.allow_remote turned on: the admin API answers requests from "
                        "other hosts")
    return warnings
