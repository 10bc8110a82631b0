"""
What changed between two configurations, key path by key path, and which
changes need a restart.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Dict, List, Tuple

#: Key path prefixes that cannot change while the gateway runs.
RESTART_ONLY = ("http.listen", "http.backlog", "transports")


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
        a, b = before.get(key, "<absent>"), after.get(key, "<absent>")
        if a == b:
            continue
        line = f"{key}: {a!r} -> {b!r}"
        (restart if key.startswith(RESTART_ONLY) else live).append(line)
    return live, restart
