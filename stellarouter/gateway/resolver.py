"""
Endpoint resolution: C{(method, path)} → endpoint + path parameters, with a
segment trie.  Lookup cost grows with the path's depth, not with the number
of endpoints.  Literal segments win over parameters (with backtracking, so
C{/a/{x}/d} still matches C{/a/b/d} when C{/a/b/c} exists); a trailing
slash is ignored.  A catch-all C{{*name}} (the last segment of a template)
takes one or more segments, and is tried after literals and parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import unquote_to_bytes

from ..common.models import CATCH_ALL, is_catch_all, parse_path_template
from ..common.payloads import EMPTY
from .errors import BadRequest, MethodNotAllowed, NotFound


@dataclass(frozen=True)
class Route:
    """
    One registered endpoint identity and the service that owns it.
    """

    service_name: str
    method: str
    template: str
    param_names: Tuple[str, ...]


class Resolution(NamedTuple):
    """
    The outcome of a successful lookup (a named tuple: one per request).
    """

    route: Route
    path_params: Mapping[str, str]

    @property
    def service_name(self) -> str:
        return self.route.service_name

    @property
    def template(self) -> str:
        return self.route.template


#: The parameters of a template that has none (shared: read-only).
# The payloads' own empty mapping, not another MappingProxyType({}): the
# REQUEST encoder knows it by identity, where another non-dict mapping costs
# an isinstance(Mapping) through typing's and abc's Python-level checks (five
# calls on every proxied request to a template without parameters, issue 20).
_NO_PARAMS: Mapping[str, str] = EMPTY


def _literal_key(template: str) -> Optional[str]:
    """
    The path a template without parameters matches (no trailing slash; the
    root is C{""}), or L{None} for a template with parameters.
    """
    segments = parse_path_template(template)
    if any(name is not None for _, name in segments):
        return None
    return "".join("/" + literal for literal, _ in segments)


class _PathTrieNode:
    """
    One path segment position in the resolver's trie of templates.

    @ivar literals: the next node for each literal segment.
    @ivar param: the next node for a parameter segment (any value), if a
        template has one here.
    @ivar rest: the node of the templates whose catch-all C{{*name}}
        starts here (it takes the rest of the path), if any.
    @ivar routes: the routes of the templates that end here, by method.
    """

    __slots__ = ("literals", "param", "rest", "routes")

    def __init__(self) -> None:
        self.literals: Dict[str, _PathTrieNode] = {}
        self.param: Optional[_PathTrieNode] = None
        #: The routes of the templates whose catch-all starts here.
        self.rest: Optional[_PathTrieNode] = None
        self.routes: Dict[str, Route] = {}

    def empty(self) -> bool:
        return not (self.literals or self.param or self.rest or self.routes)


#: Decoded parameter values a handler never gets (RFC 3986 dot segments:
#: a handler joining one into a file or URL path would climb out of it).
_DOT_SEGMENTS = frozenset({".", ".."})


def decode_segment(segment: str) -> str:
    """
    Percent-decode one raw path segment (Latin-1 text of the raw bytes) as
    UTF-8, for a parameter value.

    @raise BadRequest: the bytes are not UTF-8, or the value is C{.} or
        C{..} (raw or encoded), or contains NUL or C{/} (C{%00}, C{%2F}:
        L{check_raw_path} refuses those first).
    """
    if "%" not in segment and segment.isascii():
        value = segment
    else:
        try:
            value = unquote_to_bytes(segment.encode("latin-1")).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                f"path segment {segment[:64]!r} is not UTF-8 once percent-decoded") from None
        if "/" in value or "\x00" in value:
            raise BadRequest(f"path segment {segment[:64]!r} encodes '/' or NUL")
    if value in _DOT_SEGMENTS:
        raise BadRequest(f"path segment {segment!r} is a dot segment ('.' or '..'), which is "
                         "never a parameter value")
    return value


#: Percent-encodings refused anywhere in a path (lower case): NUL, and a
#: "/" inside a segment (it would change how the path splits once decoded).
_REFUSED_ENCODINGS = ("%00", "%2f")


def check_raw_path(path: str) -> None:
    """
    Refuse a raw path with NUL (raw or C{%00}) or an encoded C{/}
    (C{%2F}) in any segment.

    @raise BadRequest: saying which.
    """
    if "\x00" in path:
        raise BadRequest("the path contains NUL")
    if "%" in path:
        lower = path.lower()
        for encoded in _REFUSED_ENCODINGS:
            if encoded in lower:
                raise BadRequest(f"the path contains {encoded.upper()} (an encoded "
                                 f"{'NUL' if encoded == '%00' else '/'}) in a segment")


def split_path(path: str) -> List[str]:
    """
    Split a request path into raw segments, ignoring one trailing slash.
    """
    if path.endswith("/"):
        path = path[:-1]
    return path.split("/")[1:] if path else []


class EndpointResolver:
    """
    A trie of path templates.
    """

    def __init__(self) -> None:
        self._root = _PathTrieNode()
        self._count = 0
        # Templates without parameters, by method and path (without a
        # trailing slash): the answer the trie gives for such a path and
        # method (its literal branch is tried first and wins), in two dict
        # lookups.
        self._literal: Dict[str, Dict[str, Resolution]] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, route: Route) -> None:
        """
        Add a route.

        @raise ValueError: C{(method, template shape)} is already taken by a
            different route.
        """
        node = self._root
        for literal, name in parse_path_template(route.template):
            if name is None:
                node = node.literals.setdefault(literal, _PathTrieNode())
            elif literal == CATCH_ALL:
                if node.rest is None:
                    node.rest = _PathTrieNode()
                node = node.rest
            else:
                if node.param is None:
                    node.param = _PathTrieNode()
                node = node.param
        existing = node.routes.get(route.method)
        if existing is not None and existing != route:
            raise ValueError(
                f"{route.method} {route.template} clashes with {existing.method} "
                f"{existing.template} of service {existing.service_name}"
            )
        if existing is None:
            self._count += 1
        node.routes[route.method] = route
        key = _literal_key(route.template)
        if key is not None:
            self._literal.setdefault(route.method, {})[key] = Resolution(route, _NO_PARAMS)

    def remove(self, method: str, template: str) -> None:
        """
        Remove a route; removing an unknown one is a no-op.
        """
        path: List[Tuple[_PathTrieNode, Optional[str]]] = []
        node = self._root
        for literal, name in parse_path_template(template):
            nxt = _child(node, literal, name)
            if nxt is None:
                return
            path.append((node, literal if name is None or literal == CATCH_ALL else None))
            node = nxt
        route = node.routes.get(method)
        if route is None or route.template != template:
            return
        del node.routes[method]
        self._count -= 1
        key = _literal_key(template)
        paths = self._literal.get(method)
        if key is not None and paths is not None:
            paths.pop(key, None)
            if not paths:
                del self._literal[method]
        # Prune the branch of nodes left empty.
        while path and node.empty():
            parent, step = path.pop()
            if step is None:
                parent.param = None
            elif step == CATCH_ALL:
                parent.rest = None
            else:
                del parent.literals[step]
            node = parent

    def lookup(self, method: str, template: str) -> Optional[Route]:
        """
        The route registered under exactly C{(method, template)}'s shape.
        """
        node: Optional[_PathTrieNode] = self._root
        for literal, name in parse_path_template(template):
            assert node is not None
            node = _child(node, literal, name)
            if node is None:
                return None
        return node.routes.get(method) if node is not None else None

    def resolve(self, method: str, path: str) -> Resolution:
        """
        Find the endpoint of a request.

        @param method: upper-case HTTP method; C{HEAD} falls back to C{GET}.
        @param path: the raw (percent-encoded) request path, without query.
        @raise NotFound: no template matches the path.
        @raise MethodNotAllowed: templates match the path, none for C{method}.
        """
        paths = self._literal.get(method)
        if paths is not None:
            found = paths.get(path[:-1] if path.endswith("/") else path)
            if found is not None:
                return found
        if method == "HEAD":
            paths = self._literal.get("GET")
            if paths is not None:
                found = paths.get(path[:-1] if path.endswith("/") else path)
                if found is not None:
                    return found
        return self.resolve_in_trie(method, path)

    def resolve_in_trie(self, method: str, path: str) -> Resolution:
        """
        L{resolve} without the shortcut for templates without parameters
        (the general walk, which the shortcut must agree with).
        """
        if "%" in path or "\x00" in path:
            check_raw_path(path)
        segments = split_path(path)
        values: List[str] = []
        allowed: List[str] = []
        route = self._find(self._root, segments, 0, method, values, allowed)
        if route is None:
            if allowed:
                raise MethodNotAllowed(f"{method} is not allowed on {path}", allowed)
            raise NotFound(f"no endpoint matches {path}")
        if route.param_names:
            if is_catch_all(route.template):
                params = {name: decode_segment(v)
                          for name, v in zip(route.param_names[:-1], values)}
                params[route.param_names[-1]] = decode_rest(values[-1])
            else:
                params = {name: decode_segment(v)
                          for name, v in zip(route.param_names, values)}
        else:
            params = {}
        return Resolution(route, params)

    def _find(
        self,
        node: _PathTrieNode,
        segments: List[str],
        index: int,
        method: str,
        values: List[str],
        allowed: List[str],
    ) -> Optional[Route]:
        if index == len(segments):
            return _route_for(node.routes, method, allowed)
        segment = segments[index]
        child = node.literals.get(segment)
        if child is not None:
            found = self._find(child, segments, index + 1, method, values, allowed)
            if found is not None:
                return found
        if node.param is not None and segment:
            values.append(segment)
            found = self._find(node.param, segments, index + 1, method, values, allowed)
            if found is not None:
                return found
            values.pop()
        rest = node.rest
        if rest is not None and all(segments[index:]):
            # A catch-all takes the rest (no empty segment): tried last.
            route = _route_for(rest.routes, method, allowed)
            if route is not None:
                values.append("/".join(segments[index:]))
            return route
        return None


def _child(node: _PathTrieNode, literal: str, name: Optional[str]) -> Optional[_PathTrieNode]:
    """
    The child of C{node} for one segment of L{parse_path_template}.
    """
    if name is None:
        return node.literals.get(literal)
    return node.rest if literal == CATCH_ALL else node.param


def _route_for(routes: Dict[str, Route], method: str, allowed: List[str]) -> Optional[Route]:
    """
    The route of C{method} among the routes of one node (HEAD falls back to
    GET); if there is none, add the node's methods to C{allowed}.
    """
    if not routes:
        return None
    route = routes.get(method)
    if route is None and method == "HEAD":
        route = routes.get("GET")
    if route is None:
        # Every template matching the path contributes to Allow.
        allowed.extend(routes)
        if "GET" in routes:
            allowed.append("HEAD")
    return route


def decode_rest(rest: str) -> str:
    """
    Percent-decode the segments a catch-all took, joined by C{/}.

    @raise BadRequest: as L{decode_segment}, for any of them.
    """
    return "/".join(decode_segment(segment) for segment in rest.split("/"))
