"""
A small validating reader for YAML mappings: collects every problem with its
key path instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import yaml

from ..common.errors import InvalidDescriptor
from ..common.models import ClaimRequirement, normalize_method, normalize_path_template
from ..common.redaction import redact, redact_text
from .errors import MAX_PROBLEMS_SHOWN, ConfigError

T = TypeVar("T")
_MISSING = object()
_MISSING_REQUIRED = _MISSING


#: The largest configuration file read (bytes): a configuration is a few
#: kilobytes; a bigger file is a mistake or an attack, refused before parsing.
#: The bound matters for the reactor too: libyaml holds the GIL while it
#: composes a document (about 0.25 s per 256 KiB on a busy machine), so
#: parsing in a thread still delays requests by up to that much.
MAX_CONFIG_BYTES = 256 * 1024
#: The deepest nesting of mappings and lists accepted.
MAX_NESTING = 64
#: The longest C{repr} of a configured value quoted in a message.
MAX_QUOTED_CHARS = 80


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """
    C{repr(value)} cut to C{limit} characters, for messages: a value from a
    file can be as long as the file, and a message must stay one line.
    """
    if isinstance(value, (str, bytes)) and len(value) > limit * 4:
        value = value[:limit * 4]
    elif isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return text


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """
    PyYAML's safe loader (libyaml's parser when available: four to five
    times faster than pure Python), refusing
    duplicate keys, which PyYAML otherwise resolves silently (the last one
    wins).
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Dict[object, object]:
        if isinstance(node, yaml.MappingNode):
            first_line: Dict[object, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {quote(key)} (first at line "
                        f"{first_line[key]}, again at line {line}); a second one would "
                        "silently replace the first", key_node.start_mark)
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def _check_graph(root: yaml.Node) -> None:
    """
    Refuse aliases (a node reached twice: a 400-byte "billion laughs"
    document expands to gigabytes through them, and a configuration needs
    none; merge keys use them too) and nesting deeper than L{MAX_NESTING}.
    Iterative, and it never follows a node twice, so it is linear in the
    file's size.

    @raise yaml.YAMLError: with the position of the offending node.
    """
    seen = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a configuration; "
                "repeat the value instead", node.start_mark)
        seen.add(id(node))
        if depth > MAX_NESTING:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_NESTING} levels deep", node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)


def load_yaml_text(text: str, source: str = "<config>") -> object:
    """
    Parse YAML with L{_StrictLoader}, refusing aliases and deep nesting
    (L{_check_graph}) before any value is built.

    @raise ConfigError: invalid YAML, an alias, a duplicate key or too deep
        a nesting (with the position).
    """
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_graph(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(source, [f"invalid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise ConfigError(source, ["invalid YAML: nested too deeply"]) from None


def read_yaml(path: str) -> object:
    """
    Read a YAML file of at most L{MAX_CONFIG_BYTES}.

    @raise ConfigError: unreadable or too big a file, or invalid YAML (with
        the position).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(path, [f"cannot read the file: {e.strerror or e}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(path, [f"the file is larger than {MAX_CONFIG_BYTES} bytes; "
                                 "a configuration is a few kilobytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"the file is not UTF-8: {e}"]) from None
    return load_yaml_text(text, path)


class Reader:
    """
    Reads typed values out of nested mappings, recording problems.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: List[str] = []

    def problem(self, where: str, message: str) -> None:
        """
        Record one problem at key path C{where}.
        """
        self.problems.append(f"{where}: {message}" if where else message)

    def finish(self) -> None:
        """
        @raise ConfigError: if any problem was recorded.
        """
        if self.problems:
            raise ConfigError(self.source, self.problems)

    def mapping(self, value: object, where: str, allowed: Iterable[str]) -> Dict[str, object]:
        """
        Check that C{value} is a mapping with only C{allowed} keys; unknown
        keys are reported with a did-you-mean.

        @return: the mapping, or C{{}} if it was not one.
        """
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(where, f"must be a mapping, not {_kind(value)}")
            return {}
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                if len(self.problems) > MAX_PROBLEMS_SHOWN:
                    # Past what the message lists: only count it.
                    self.problem(where, "unknown key")
                    continue
                close = difflib.get_close_matches(str(key)[:MAX_QUOTED_CHARS], allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(allowed)
                self.problem(_join(where, quote(key) if not isinstance(key, str) or len(key) > MAX_QUOTED_CHARS else key),
                             f"unknown key{hint}; known keys: {known}")
        return dict(value)

    def get(
        self,
        obj: Mapping[str, object],
        key: str,
        where: str,
        kind: type,
        default: object = _MISSING,
        check: Optional[Callable[[Any], Optional[str]]] = None,
    ) -> Any:
        """
        Read C{obj[key]} as C{kind}; C{check} returns an error message or
        C{None}.  A missing key without a default is a problem.

        @return: the value, or C{default} (C{None} if missing) on a problem.
        """
        path = _join(where, key)
        if key not in obj or obj[key] is None:
            if default is _MISSING:
                self.problem(path, "is required")
                return None
            return default
        value = obj[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.problem(path, f"must be {_name(kind)}, not {_kind(value)} {quote(redact(path, value))}")
            return None if default is _MISSING else default
        if check is not None:
            message = check(value)
            if message is not None:
                self.problem(path, redact_text(message))
                return None if default is _MISSING else default
        return value

    def items(self, obj: Mapping[str, object], key: str, where: str, required: bool = False) -> List[object]:
        """
        Read C{obj[key]} as a list.
        """
        path = _join(where, key)
        value = obj.get(key)
        if value is None:
            if required:
                self.problem(path, "is required (a list)")
            return []
        if not isinstance(value, list):
            self.problem(path, f"must be a list, not {_kind(value)}")
            return []
        if required and not value:
            self.problem(path, "must not be empty")
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a mapping"}.get(kind, kind.__name__)


def _kind(value: object) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def positive(value: float) -> Optional[str]:
    """
    A C{check} for strictly positive numbers.
    """
    return None if value > 0 else f"must be positive, not {quote(value)}"


def non_empty(value: str) -> Optional[str]:
    """
    A C{check} for non-empty strings.
    """
    return None if value.strip() else "must not be empty"


def read_claims(r: Reader, raw: object, where: str) -> Tuple[ClaimRequirement, ...]:
    """
    Read a list of C{{type, value}} claim requirements (C{value}: a string,
    a list of strings meaning any-of, or absent meaning "claim present").
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem(where, f"must be a list of {{type, value}}, not {_kind(raw)}")
        return ()
    claims = []
    for i, item in enumerate(raw):
        path = f"{where}[{i}]"
        obj = r.mapping(item, path, ["type", "value"])
        kind = r.get(obj, "type", path, str, check=non_empty)
        value = obj.get("value")
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                r.problem(f"{path}.value", "a list of values must hold non-empty strings")
                continue
            value = tuple(value)
        elif value is not None and not (isinstance(value, str) and value):
            r.problem(f"{path}.value", f"must be a string or a list of strings, not {quote(value)}")
            continue
        if kind is not None:
            claims.append(ClaimRequirement(kind, value))
    return tuple(claims)


def read_endpoint_key(r: Reader, obj: Mapping[str, object], where: str) -> Optional[Tuple[str, str]]:
    """
    Read C{method} and C{path} of an endpoint override, normalised.
    """
    method = r.get(obj, "method", where, str, check=_method_problem)
    path = r.get(obj, "path", where, str, check=_path_problem)
    if method is None or path is None:
        return None
    return (method.upper(), normalize_path_template(path))


def _method_problem(value: str) -> Optional[str]:
    try:
        normalize_method(value)
    except InvalidDescriptor as e:
        return str(e)
    return None


def _path_problem(value: str) -> Optional[str]:
    try:
        normalize_path_template(value)
    except InvalidDescriptor as e:
        return str(e)
    return None


def read_path(r: Reader, obj: Mapping[str, object], key: str, where: str, source: str,
              required: bool = False) -> Optional[str]:
    """
    Read a file path (relative paths are relative to the configuration
    file) and check that the file can be read.
    """
    value = r.get(obj, key, where, str, None if not required else _MISSING_REQUIRED, non_empty)
    if value is None:
        return None
    if not os.path.isabs(value) and source not in ("<config>", ""):
        value = os.path.join(os.path.dirname(os.path.abspath(source)), value)
    if not os.access(value, os.R_OK):
        r.problem(f"{where}.{key}", f"cannot read {value}")
        return None
    return value
