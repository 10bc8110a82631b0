"""
Tests for the request planner (L{stellarouter.gateway.planner}): a request
planned from plain values, without a twisted.web request.
"""

from typing import Any, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import TransportType
from stellarouter.common.models import (
    ConnectionState,
    EndpointDescriptor,
    InstanceDescriptor,
    PayloadLimits,
)
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.dispatch import ByteCount
from stellarouter.gateway.errors import (
    BadRequest,
    BadVersion,
    BudgetExhausted,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    VersionNotFound,
)
from stellarouter.gateway.forwarding import ClientAddressPolicy
from stellarouter.gateway.interfaces import IEdgeConnection
from stellarouter.gateway.planner import (
    UDP_RETRIES,
    UNLIMITED,
    Planner,
    origin_form,
    read_headers,
    split_target,
)
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.routing import RegionAwareRouting
from stellarouter.gateway.state import RoutingState

_CLIENT = IPv4Address("TCP", "10.0.0.7", 5555)


class _Connection:
    """
    A routable connection: only its state (the planner sends nothing).
    """

    def __init__(self, n: int, endpoints: List[EndpointDescriptor], version: str = "1.0.0",
                 transport: TransportType = TransportType.INMEMORY,
                 max_frame_bytes: int = 1 << 20) -> None:
        self.state = ConnectionState(
            connection_id=f"c{n}",
            instance=InstanceDescriptor(f"billing-{n}", "billing", version, "eu1"),
            transport_type=transport,
            endpoints={(e.method, e.path): e for e in endpoints},
            connected_at=0.0,
            max_frame_bytes=max_frame_bytes,
        )


def _endpoint(method: str = "GET", path: str = "/invoices/{id}", version: str = "1.0.0",
              **kwargs: Any) -> EndpointDescriptor:
    return EndpointDescriptor("billing", version, method, path, **kwargs)


class PlannerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = RoutingState()
        self.aggregate = ByteCount()
        self.limits = PayloadLimits(1000, 1500, 10_000)
        self.planner = Planner(self.state, RegionAwareRouting("eu1"), "eu1", self.limits,
                               self.aggregate)

    def serve(self, *endpoints: EndpointDescriptor, **kwargs: Any) -> _Connection:
        connection = _Connection(len(self.state.connections()) + 1,
                                 list(endpoints) or [_endpoint()], **kwargs)
        self.state.register(connection)
        return connection

    def plan(self, method: str = "GET", path: str = "/invoices/7", version: Any = None,
             authorization: Any = None, size: int = 0, now: float = 100.0) -> Any:
        headers: List[Tuple[str, str]] = [("Host", "gw"), ("Accept", "*/*")]
        return self.planner.plan(method, path, headers, version, authorization, size, now,
                                 "cid-1")

    def test_plan(self) -> None:
        """
        A request is resolved, routed and given its deadline and body limit.
        """
        connection = self.serve()
        plan = self.plan(now=100.0)
        self.assertIs(plan.connection, connection)
        self.assertEqual((plan.method, plan.path, plan.template, dict(plan.path_params)),
                         ("GET", "/invoices/7", "/invoices/{id}", {"id": "7"}))
        self.assertEqual(plan.deadline, 100.0 + plan.timeout)
        self.assertEqual(plan.limit, 1000)
        self.assertEqual(plan.retries, 0)
        self.assertEqual(plan.headers, [("Host", "gw"), ("Accept", "*/*")])
        message = plan.message("a=1", b"")
        self.assertEqual((message.query, message.template), ("a=1", "/invoices/{id}"))

    def test_not_found(self) -> None:
        """
        A path nothing serves is a problem, not a plan.
        """
        self.serve()
        self.assertRaises(NotFound, self.plan, path="/nothing")

    def test_versions(self) -> None:
        """
        C{X-Stella-Version} must be MAJOR.MINOR.PATCH and a version seen.
        """
        self.serve()
        self.assertRaises(BadVersion, self.plan, version=b"one")
        self.assertRaises(VersionNotFound, self.plan, version=b"2.0.0")
        self.assertEqual(self.plan(version=b" 1.0.0 ").endpoint.version, "1.0.0")

    def test_authentication(self) -> None:
        """
        With tokens required, a request without one, or with one and no
        verifier configured, is 401 (fail closed).
        """
        self.serve()
        self.planner.auth_required = True
        error = self.assertRaises(Unauthorized, self.plan)
        self.assertIn("requires a bearer token", error.detail)
        error = self.assertRaises(Unauthorized, self.plan, authorization=b"Bearer abc")
        self.assertIn("no token validation configured", error.detail)

    def test_body_limits(self) -> None:
        """
        A buffered body is limited by the per-call limit or the endpoint's,
        whichever is less; a streamed one only by the endpoint's.
        """
        self.serve(_endpoint(path="/small", max_request_bytes=10),
                   _endpoint(method="POST", path="/up", supports_streaming=True),
                   _endpoint(method="PUT", path="/up", supports_streaming=True,
                             max_request_bytes=5000))
        self.assertEqual(self.plan(path="/small").limit, 10)
        self.assertEqual(self.plan("POST", "/up").limit, UNLIMITED)
        self.assertEqual(self.plan("PUT", "/up").limit, 5000)

    def test_budgets(self) -> None:
        """
        Request bytes in flight are bounded per connection and per gateway.
        """
        connection = self.serve()
        self.planner.check_budgets(connection, 1500)  # type: ignore[arg-type]
        connection.state.in_flight_bytes = 1000
        self.assertRaises(BudgetExhausted, self.planner.check_budgets, connection, 501)
        connection.state.in_flight_bytes = 0
        self.aggregate.value = 9000
        self.assertRaises(BudgetExhausted, self.planner.check_budgets, connection, 1001)
        self.planner.check_budgets(connection, 1000)  # type: ignore[arg-type]

    def test_udp(self) -> None:
        """
        An idempotent request over UDP is sent again while unanswered; a
        body too large for the only (UDP) instance's datagrams is 413.
        """
        self.serve(transport=TransportType.UDP, max_frame_bytes=8000)
        self.assertEqual(self.plan().retries, UDP_RETRIES)
        error = self.assertRaises(PayloadTooLarge, self.plan, size=5000)
        self.assertIn("does not fit in one UDP datagram", error.detail)

    def test_buffered_limit_and_streaming(self) -> None:
        """
        Once the headers resolve a request, the planner says whether it may
        stream and the largest body any instance takes.
        """
        self.serve(_endpoint(method="POST", path="/a", max_request_bytes=10),
                   _endpoint(method="POST", path="/s", supports_streaming=True))
        buffered = self.state.resolve("POST", "/a")
        self.assertFalse(self.planner.may_stream(buffered))
        self.assertEqual(self.planner.buffered_limit(buffered), 10)
        self.assertTrue(self.planner.may_stream(self.state.resolve("POST", "/s")))


class ReadHeadersTests(SynchronousTestCase):
    def read(self, headers: List[Tuple[bytes, List[bytes]]],
             version: bytes = b"HTTP/1.1") -> Any:
        return read_headers(headers, _CLIENT, ClientAddressPolicy(), version)

    def test_forwarded(self) -> None:
        """
        Hop-by-hop headers and those named in C{Connection} are dropped;
        the version and the token are picked out; the client's address is
        forwarded.
        """
        pairs, version, authorization = self.read([
            (b"Host", [b"gw"]), (b"Connection", [b"x-drop, keep-alive"]),
            (b"X-Drop", [b"1"]), (b"TE", [b"trailers"]), (b"X-Stella-Version", [b"1.0.0"]),
            (b"Authorization", [b"Bearer t"]), (b"X-Correlation-Id", [b"theirs"]),
            (b"Accept", [b"a", b"b"])])
        self.assertEqual((version, authorization), (b"1.0.0", b"Bearer t"))
        names = [n.lower() for n, _ in pairs]
        self.assertEqual(names[:5], ["host", "x-stella-version", "authorization",
                                     "accept", "accept"])
        self.assertNotIn("x-drop", names)
        self.assertNotIn("x-correlation-id", names)
        self.assertIn(("X-Forwarded-For", "10.0.0.7"), pairs)

    def test_bad(self) -> None:
        """
        Two C{Host} headers, or none in HTTP/1.1, is a bad request.
        """
        self.assertRaises(BadRequest, self.read, [(b"Host", [b"a", b"b"])])
        self.assertRaises(BadRequest, self.read, [])
        self.assertEqual(self.read([], b"HTTP/1.0")[1:], (None, None))

    def test_targets(self) -> None:
        """
        An absolute-form target is reduced to its path; the query is split
        off as text.
        """
        self.assertEqual(origin_form(b"http://h:1/a/b?c"), b"/a/b?c")
        self.assertEqual(origin_form(b"https://h"), b"/")
        self.assertEqual(origin_form(b"/x"), b"/x")
        self.assertEqual(split_target(b"/x?a=1&b"), "a=1&b")
        self.assertEqual(split_target(b"/x"), "")


class EdgeConnectionTests(SynchronousTestCase):
    def test_gateway_connection(self) -> None:
        """
        L{GatewayConnection} is what the edge sees: an L{IEdgeConnection}.
        """
        verifyObject(IEdgeConnection,
                     GatewayConnection(Registrar(RoutingState(), "gw-1", "eu1"), Clock()))
