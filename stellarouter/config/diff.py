"""
What changed between two configurations, key path by key path, and which
changes need a restart.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Dict, List, Tuple

from ..common.redaction import is_secret_key, redact
from .reader import quote

#: Key path prefixes that cannot change while the gateway runs.
RESTART_ONLY = ("http.listen", "transports")


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """
    A configuration object as C{{key path: leaf value}}.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: Dict[str, Any] = {}
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


def diff(old: Any, new: Any) -> Tuple[List[str], List[str]]:
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


def describe_change(key: str, old: Any, new: Any) -> str:
    """
    One changed key as a log line: secrets redacted (L{redact}), every value
    quoted within a bounded length.
    """
    if is_secret_key(key):
        return f"{key}: {_show(key, old)} -> {_show(key, new)} (secret changed)"
    return f"{key}: {_show(key, old)} -> {_show(key, new)}"


def _show(key: str, value: Any) -> str:
    if value is _ABSENT:
        return _ABSENT
    return quote(redact(key, value))
