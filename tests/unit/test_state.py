"""
Tests for the routing state: the union of live connections.
"""

from typing import Iterable, Tuple

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import TransportType
from stellarouter.common.errors import InvalidDescriptor
from stellarouter.common.interfaces import IGlobalRoutingState
from stellarouter.common.models import (
    ConnectionState,
    EndpointDescriptor,
    InstanceDescriptor,
)
from stellarouter.gateway.errors import NotFound
from stellarouter.gateway.state import RoutingState

_count = iter(range(1, 10**6))


class FakeConnection:
    """
    Anything with a ConnectionState.
    """

    def __init__(self, service: str, version: str, endpoints: Iterable[Tuple[str, str]]) -> None:
        n = next(_count)
        self.state = ConnectionState(
            connection_id=f"c{n}",
            instance=InstanceDescriptor(f"{service}-{n}", service, version, "eu1"),
            transport_type=TransportType.INMEMORY,
            endpoints={(m, p): EndpointDescriptor(service, version, m, p) for m, p in endpoints},
            connected_at=0.0,
        )


class RoutingStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = RoutingState()

    def test_interface(self) -> None:
        """
        RoutingState provides IGlobalRoutingState.
        """
        verifyObject(IGlobalRoutingState, self.state)

    def test_union_of_connections(self) -> None:
        """
        Endpoints resolve while at least one connection serves them.
        """
        a = FakeConnection("billing", "1.0.0", [("GET", "/ping")])
        b = FakeConnection("billing", "1.1.0", [("GET", "/ping"), ("GET", "/v2")])
        self.state.register(a)
        self.state.register(b)
        self.assertEqual(self.state.connectionsFor("billing", "GET", "/ping"), [a, b])
        self.state.unregister(b)
        self.assertRaises(NotFound, self.state.resolve, "GET", "/v2")
        self.assertEqual(self.state.resolve("GET", "/ping").service_name, "billing")
        self.state.unregister(a)
        self.assertRaises(NotFound, self.state.resolve, "GET", "/ping")
        self.assertEqual(self.state.connections(), [])
        self.assertEqual(sorted(self.state.versions_seen("billing")), ["1.0.0", "1.1.0"])

    def test_owned_by_other_service(self) -> None:
        """
        An endpoint owned by another service is refused, and nothing of the
        refused connection is registered.
        """
        self.state.register(FakeConnection("billing", "1.0.0", [("GET", "/ping")]))
        intruder = FakeConnection("audit", "1.0.0", [("GET", "/audit"), ("GET", "/ping")])
        error = self.assertRaises(InvalidDescriptor, self.state.register, intruder)
        self.assertIn("owned by service 'billing'", str(error))
        self.assertRaises(NotFound, self.state.resolve, "GET", "/audit")
        self.assertEqual(len(self.state.connections()), 1)

    def test_shape_clash(self) -> None:
        """
        The same shape with other parameter names is refused.
        """
        self.state.register(FakeConnection("billing", "1.0.0", [("GET", "/i/{id}")]))
        error = self.assertRaises(InvalidDescriptor, self.state.register,
                                  FakeConnection("billing", "1.1.0", [("GET", "/i/{key}")]))
        self.assertIn("clashes", str(error))

    def test_reserved(self) -> None:
        """
        Paths under /health belong to the gateway.
        """
        for path in ["/health", "/health/x"]:
            self.assertRaises(InvalidDescriptor, self.state.register,
                              FakeConnection("billing", "1.0.0", [("GET", path)]))
        self.state.register(FakeConnection("billing", "1.0.0", [("GET", "/healthy")]))

    def test_unregister_unknown(self) -> None:
        """
        Unregistering a connection never registered is a no-op.
        """
        self.state.unregister(FakeConnection("billing", "1.0.0", [("GET", "/ping")]))

    def test_shape_clash_within_one_hello(self) -> None:
        """
        Two same-shape templates in one HELLO are refused and leave nothing
        behind: the path stays unknown and free for a later service.
        """
        error = self.assertRaises(InvalidDescriptor, self.state.register,
                                  FakeConnection("evil", "1.0.0", [("GET", "/a/{x}"),
                                                                   ("GET", "/a/{y}")]))
        self.assertIn("same shape", str(error))
        self.assertRaises(NotFound, self.state.resolve, "GET", "/a/1")
        self.state.register(FakeConnection("good", "1.0.0", [("GET", "/a/{x}")]))
        self.assertEqual(self.state.resolve("GET", "/a/1").service_name, "good")
