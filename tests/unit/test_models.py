"""
Tests for identities, versions and path templates.
"""

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.errors import InvalidDescriptor
from stellarouter.common.models import (
    EndpointDescriptor,
    normalize_path_template,
    normalize_service_name,
    parse_path_template,
    parse_version,
)


class ModelTests(SynchronousTestCase):
    def test_versions(self) -> None:
        """
        Versions parse to comparable tuples; only strict semver is accepted.
        """
        self.assertEqual(parse_version("1.10.0"), (1, 10, 0))
        self.assertTrue(parse_version("1.10.0") > parse_version("1.9.9"))
        for bad in ["1", "1.2", "1.2.3.4", "1.02.3", "-1.0.0", "1.0.0-rc1", " 1.0.0", None]:
            self.assertRaises(InvalidDescriptor, parse_version, bad)

    def test_service_names(self) -> None:
        """
        Service names are lower-cased and checked.
        """
        self.assertEqual(normalize_service_name("Billing.V2_x-y"), "billing.v2_x-y")
        for bad in ["", "-billing", "bill ing", "bílling", 3]:
            self.assertRaises(InvalidDescriptor, normalize_service_name, bad)

    def test_templates(self) -> None:
        """
        Templates split into literal and parameter segments; a trailing slash
        is dropped.
        """
        self.assertEqual(parse_path_template("/"), ())
        self.assertEqual(parse_path_template("/invoices/{id}/"),
                         (("invoices", None), ("", "id")))
        self.assertEqual(normalize_path_template("/a/{b}/"), "/a/{b}")
        for bad in ["", "a", "//", "/a//b", "/{}", "/{a}{b}", "/x{a}", "/{a}/{a}", "/a?b", "/é"]:
            self.assertRaises(InvalidDescriptor, parse_path_template, bad)

    def test_idempotent_default(self) -> None:
        """
        Idempotency defaults by method and can be overridden.
        """
        get = EndpointDescriptor("s", "1.0.0", "GET", "/")
        post = EndpointDescriptor("s", "1.0.0", "POST", "/")
        self.assertTrue(get.is_idempotent)
        self.assertFalse(post.is_idempotent)
        self.assertTrue(EndpointDescriptor("s", "1.0.0", "POST", "/", idempotent=True).is_idempotent)
