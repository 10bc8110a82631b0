"""
Environment variable overrides: C{STELLAROUTER_NODE__REGION=eu2} sets
C{node.region} in the gateway's configuration before it is validated;
C{STELLAROUTER_MICRO__REGION=eu2} sets C{region} in a microservice's.
Segments are separated by C{__}, lower-cased; a numeric segment indexes a
list (C{STELLAROUTER_TRANSPORTS__0__LISTEN}).  Values are read as YAML
scalars (C{true}, C{5}, C{1.5}, C{"text"}).
"""

from __future__ import annotations

import copy
from typing import List, Mapping, Tuple

from .errors import ConfigError
from .reader import load_yaml_text

#: The gateway's prefix.
GATEWAY_PREFIX = "STELLAROUTER_"
#: The microservice's prefix (the gateway ignores variables with it).
MICRO_PREFIX = "STELLAROUTER_MICRO__"


def _value(text: str) -> object:
    try:
        value = load_yaml_text(text)
    except ConfigError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def apply_env_overrides(
    document: object, environ: Mapping[str, str], prefix: str, exclude: str = ""
) -> Tuple[object, List[str], List[str]]:
    """
    Apply the overrides found in C{environ} to a copy of C{document}.

    @return: the new document, the names of the variables applied, and
        problems (a variable that does not fit the document's shape).
    """
    applied: List[str] = []
    problems: List[str] = []
    names = sorted(n for n in environ if n.startswith(prefix) and not (
        exclude and n.startswith(exclude)))
    if not names:
        return document, applied, problems
    result = copy.deepcopy(document) if document is not None else {}
    if not isinstance(result, dict):
        return document, applied, [f"{names[0]}: the configuration is not a mapping"]
    for name in names:
        if not environ[name].strip():
            problems.append(f"{name}: empty value (unset the variable to keep the file's value)")
            continue
        segments = [s.lower() for s in name[len(prefix):].split("__")]
        if not all(segments):
            problems.append(f"{name}: empty segment in the variable name")
            continue
        target: object = result
        ok = True
        for position, segment in enumerate(segments[:-1]):
            following = segments[position + 1]
            if isinstance(target, list):
                if not segment.isdigit() or int(segment) >= len(target):
                    problems.append(f"{name}: no list entry {segment!r}")
                    ok = False
                    break
                target = target[int(segment)]
            elif isinstance(target, dict):
                if target.get(segment) is None:
                    target[segment] = [] if following.isdigit() else {}
                target = target[segment]
            else:
                problems.append(f"{name}: {segment!r} is not a mapping or a list")
                ok = False
                break
        if not ok:
            continue
        last = segments[-1]
        if isinstance(target, dict):
            target[last] = _value(environ[name])
        elif isinstance(target, list) and last.isdigit() and int(last) < len(target):
            target[int(last)] = _value(environ[name])
        else:
            problems.append(f"{name}: cannot set {last!r} here")
            continue
        applied.append(name)
    return result, applied, problems
