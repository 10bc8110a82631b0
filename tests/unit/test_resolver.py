"""
Tests for the endpoint resolver trie.
"""

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.errors import InvalidDescriptor
from stellarouter.common.models import (
    normalize_path_template, parse_path_template, template_param_names, template_shape,
)
from stellarouter.common.payloads import EMPTY
from stellarouter.gateway.errors import BadRequest, MethodNotAllowed, NotFound
from stellarouter.gateway.resolver import EndpointResolver, Route


def route(method: str, template: str, service: str = "billing") -> Route:
    names = tuple(s[1:-1] for s in template.split("/") if s.startswith("{"))
    return Route(service, method, template, names)


class ResolverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.resolver = EndpointResolver()
        for method, template in [
            ("GET", "/"),
            ("GET", "/ping"),
            ("POST", "/invoices"),
            ("GET", "/invoices/{id}"),
            ("DELETE", "/invoices/{id}"),
            ("GET", "/invoices/summary"),
            ("GET", "/a/b/c"),
            ("GET", "/a/{x}/d"),
            ("GET", "/users/{user}/orders/{order}"),
        ]:
            self.resolver.add(route(method, template))

    def test_literal(self) -> None:
        """
        A literal path resolves to its route, with no parameters.
        """
        resolution = self.resolver.resolve("GET", "/ping")
        self.assertEqual(resolution.template, "/ping")
        self.assertEqual(resolution.path_params, {})

    def test_literal_parameters_are_the_payloads_empty_mapping(self) -> None:
        """
        A route without parameters carries the payloads' own C{EMPTY}
        mapping, which the REQUEST encoder accepts by identity (any other
        non-dict mapping costs it an C{isinstance(Mapping)} per request).
        """
        self.assertIs(self.resolver.resolve("GET", "/ping").path_params, EMPTY)
        self.assertIs(self.resolver.resolve("GET", "/a/b/c").path_params, EMPTY)

    def test_root(self) -> None:
        """
        The root template matches the root path.
        """
        self.assertEqual(self.resolver.resolve("GET", "/").template, "/")

    def test_parameters_decoded(self) -> None:
        """
        Parameter segments bind their percent-decoded value.
        """
        resolution = self.resolver.resolve("GET", "/users/ann%20b/orders/7")
        self.assertEqual(resolution.path_params, {"user": "ann b", "order": "7"})

    def test_literal_beats_parameter(self) -> None:
        """
        A literal segment wins over a parameter at the same position.
        """
        self.assertEqual(self.resolver.resolve("GET", "/invoices/summary").template,
                         "/invoices/summary")
        self.assertEqual(self.resolver.resolve("GET", "/invoices/42").path_params, {"id": "42"})

    def test_backtracking(self) -> None:
        """
        When the literal branch dead-ends, the parameter branch is tried.
        """
        resolution = self.resolver.resolve("GET", "/a/b/d")
        self.assertEqual((resolution.template, resolution.path_params), ("/a/{x}/d", {"x": "b"}))

    def test_trailing_slash(self) -> None:
        """
        A trailing slash on the request path is ignored.
        """
        self.assertEqual(self.resolver.resolve("GET", "/ping/").template, "/ping")

    def test_not_found(self) -> None:
        """
        Paths no template matches are NotFound, including empty segments.
        """
        for path in ["/nope", "/ping/x", "/invoices//", "/users//orders/1", "//ping"]:
            self.assertRaises(NotFound, self.resolver.resolve, "GET", path)

    def test_method_not_allowed(self) -> None:
        """
        A known path with another method is 405 with the allowed methods
        (HEAD implied by GET).
        """
        error = self.assertRaises(MethodNotAllowed, self.resolver.resolve, "PUT", "/invoices/9")
        self.assertEqual(error.allow, ("DELETE", "GET", "HEAD"))
        error = self.assertRaises(MethodNotAllowed, self.resolver.resolve, "GET", "/invoices")
        self.assertEqual(error.allow, ("POST",))

    def test_head_falls_back_to_get(self) -> None:
        """
        HEAD resolves to the GET endpoint when there is no HEAD endpoint.
        """
        self.assertEqual(self.resolver.resolve("HEAD", "/ping").route.method, "GET")

    def test_clash(self) -> None:
        """
        The same method on the same shape with other parameter names clashes.
        """
        self.assertRaises(ValueError, self.resolver.add, route("GET", "/invoices/{other}"))

    def test_remove_prunes(self) -> None:
        """
        Removing routes makes them unresolvable and leaves the others.
        """
        self.resolver.remove("GET", "/users/{user}/orders/{order}")
        self.assertRaises(NotFound, self.resolver.resolve, "GET", "/users/a/orders/b")
        self.resolver.remove("GET", "/invoices/{id}")
        self.assertEqual(self.resolver.resolve("DELETE", "/invoices/1").template, "/invoices/{id}")
        self.resolver.remove("GET", "/nope")
        self.assertEqual(len(self.resolver), 7)

    def test_remove_all_leaves_empty_trie(self) -> None:
        """
        After every route is removed, the trie holds no nodes.
        """
        resolver = EndpointResolver()
        resolver.add(route("GET", "/a/{b}/c"))
        resolver.remove("GET", "/a/{b}/c")
        self.assertTrue(resolver._root.empty())
        self.assertEqual(len(resolver), 0)

    def test_many_endpoints(self) -> None:
        """
        Ten thousand endpoints resolve correctly.
        """
        resolver = EndpointResolver()
        for i in range(10000):
            resolver.add(route("GET", f"/svc{i % 100}/items{i}/{{id}}"))
        resolution = resolver.resolve("GET", "/svc42/items9942/x")
        self.assertEqual(resolution.template, "/svc42/items9942/{id}")

    def test_allow_is_the_union(self) -> None:
        """
        When several templates match the path, Allow lists every method any
        of them serves.
        """
        resolver = EndpointResolver()
        resolver.add(route("GET", "/a/{x}"))
        resolver.add(route("POST", "/a/b"))
        error = self.assertRaises(MethodNotAllowed, resolver.resolve, "DELETE", "/a/b")
        self.assertEqual(error.allow, ("GET", "HEAD", "POST"))

    def test_parameters_are_utf8(self) -> None:
        """
        Parameters decode percent-escapes and raw bytes as UTF-8; anything
        else is a 400.
        """
        from stellarouter.gateway.errors import BadRequest

        self.assertEqual(self.resolver.resolve("GET", "/invoices/caf%C3%A9").path_params,
                         {"id": "café"})
        raw = "/invoices/" + "café".encode("utf-8").decode("latin-1")
        self.assertEqual(self.resolver.resolve("GET", raw).path_params, {"id": "café"})
        self.assertRaises(BadRequest, self.resolver.resolve, "GET", "/invoices/%E9")


class LiteralShortcutTests(SynchronousTestCase):
    """
    Templates without parameters are answered from a dict; the answer is
    the trie walk's for every method and path, while routes come and go.
    """

    TEMPLATES = [
        ("GET", "/"), ("GET", "/a"), ("POST", "/a"), ("HEAD", "/a/b"), ("GET", "/a/{x}"),
        ("POST", "/a/{x}"), ("GET", "/a/b/c"), ("DELETE", "/a/{x}/c"), ("GET", "/%7Eu"),
        ("PUT", "/a/b"), ("HEAD", "/{p}"), ("GET", "/x/y"), ("GET", "/{p}/y"),
    ]
    PATHS = ["/", "//", "/a", "/a/", "/a//", "/a/b", "/a/b/", "/a/z", "/a/b/c", "/a/b/c/",
             "/a/z/c", "/%7Eu", "/~u", "/x/y", "/q/y", "/x", "/nowhere", "/a/b/c/d"]
    METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]

    def outcome(self, resolve: object, method: str, path: str) -> object:
        try:
            found = resolve(method, path)  # type: ignore[operator]
        except MethodNotAllowed as e:
            return ("405", sorted(e.allow))
        except NotFound:
            return "404"
        return (found.route, dict(found.path_params))

    def check_all(self, resolver: EndpointResolver) -> None:
        for method in self.METHODS:
            for path in self.PATHS:
                self.assertEqual(self.outcome(resolver.resolve, method, path),
                                 self.outcome(resolver.resolve_in_trie, method, path),
                                 (method, path))

    def test_agrees_with_the_trie(self) -> None:
        resolver = EndpointResolver()
        for index, (method, template) in enumerate(self.TEMPLATES):
            resolver.add(route(method, template))
            self.check_all(resolver)
        for method, template in self.TEMPLATES[::2]:
            resolver.remove(method, template)
            self.check_all(resolver)
        self.assertEqual(resolver.resolve("GET", "/a").route, route("GET", "/a"))
        self.assertEqual(resolver.resolve("HEAD", "/a/b").route.method, "HEAD")
        self.assertEqual(resolver.resolve("HEAD", "/x/y/").route, route("GET", "/x/y"))


class CatchAllTests(SynchronousTestCase):
    """
    The catch-all parameter C{{*name}} (issue 25): the last segment of a
    template, taking one or more segments, tried after literals and
    parameters.
    """

    def setUp(self) -> None:
        self.resolver = EndpointResolver()
        for method, template in [
            ("GET", "/files/{*rest}"),
            ("GET", "/files/{name}"),
            ("GET", "/files/readme/raw"),
            ("POST", "/upload/{bucket}/{*key}"),
        ]:
            self.resolver.add(Route("s", method, template, template_param_names(template)))

    def test_takes_the_rest_of_the_path(self) -> None:
        """
        A catch-all takes every remaining segment, percent-decoded each,
        joined by C{/}.
        """
        found = self.resolver.resolve("GET", "/files/a/b%20c/d.txt")
        self.assertEqual((found.template, dict(found.path_params)),
                         ("/files/{*rest}", {"rest": "a/b c/d.txt"}))
        found = self.resolver.resolve("POST", "/upload/photos/2024/x.jpg")
        self.assertEqual(dict(found.path_params), {"bucket": "photos", "key": "2024/x.jpg"})

    def test_literals_and_parameters_win(self) -> None:
        """
        A literal or a one-segment parameter that matches wins over the
        catch-all, which gets what they leave.
        """
        self.assertEqual(self.resolver.resolve("GET", "/files/readme/raw").template,
                         "/files/readme/raw")
        self.assertEqual(self.resolver.resolve("GET", "/files/readme").template,
                         "/files/{name}")
        self.assertEqual(self.resolver.resolve("GET", "/files/readme/other").template,
                         "/files/{*rest}")

    def test_needs_one_segment(self) -> None:
        """
        A catch-all takes at least one segment and no empty one.
        """
        self.assertRaises(NotFound, self.resolver.resolve, "GET", "/files")
        self.assertRaises(NotFound, self.resolver.resolve, "GET", "/files/a//b")

    def test_refused_segments(self) -> None:
        """
        The segments a catch-all takes are checked like parameters: no dot
        segment, no encoded slash.
        """
        self.assertRaises(BadRequest, self.resolver.resolve, "GET", "/files/a/../b")
        self.assertRaises(BadRequest, self.resolver.resolve, "GET", "/files/a/%2e%2e/b")
        self.assertRaises(BadRequest, self.resolver.resolve, "GET", "/files/a%2Fb/c")

    def test_method_not_allowed(self) -> None:
        """
        A path only a catch-all matches lists the catch-all's methods in
        Allow.
        """
        with self.assertRaises(MethodNotAllowed) as caught:
            self.resolver.resolve("DELETE", "/files/a/b")
        self.assertEqual(sorted(caught.exception.allow), ["GET", "HEAD"])
        self.assertEqual(self.resolver.resolve("HEAD", "/files/a/b").template,
                         "/files/{*rest}")

    def test_remove(self) -> None:
        """
        Removing a catch-all route leaves the others, and the trie empty
        once all are gone.
        """
        self.resolver.remove("GET", "/files/{*rest}")
        self.assertRaises(NotFound, self.resolver.resolve, "GET", "/files/a/b")
        self.assertEqual(self.resolver.resolve("GET", "/files/a").template, "/files/{name}")
        for method, template in [("GET", "/files/{name}"), ("GET", "/files/readme/raw"),
                                 ("POST", "/upload/{bucket}/{*key}")]:
            self.resolver.remove(method, template)
        self.assertEqual(len(self.resolver), 0)
        self.assertTrue(self.resolver._root.empty())

    def test_clash(self) -> None:
        """
        Two catch-alls of one shape for one method clash; a catch-all and a
        parameter at the same place do not.
        """
        self.assertRaises(ValueError, self.resolver.add,
                          Route("t", "GET", "/files/{*other}", ("other",)))

    def test_template_syntax(self) -> None:
        """
        C{{*name}} is valid only as the last segment; its shape differs from
        a parameter's.
        """
        self.assertEqual(normalize_path_template("/files/{*rest}/"), "/files/{*rest}")
        for bad in ["/files/{*rest}/x", "/{*}", "/{**a}", "/{a*}", "/{*a}/{b}"]:
            self.assertRaises(InvalidDescriptor, parse_path_template, bad)
        self.assertNotEqual(template_shape("/a/{*x}"), template_shape("/a/{x}"))
        self.assertEqual(template_param_names("/a/{x}/{*y}"), ("x", "y"))
