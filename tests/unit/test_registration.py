"""
Tests for L{stellarouter.gateway.registration}: the L{Registrar} a
transport listener's connections share (issue 20): what it admits, what the
HELLO answer says, an ENDPOINTS_UPDATE it refuses, and the settings a
reload changes for the connections of every listener at once.
"""

import dataclasses
from typing import Sequence, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.jsonvalue import JSONValue
from stellarouter.common.models import (
    EndpointDescriptor,
    Frame,
    InstanceDescriptor,
    RegistrationLimits,
)
from stellarouter.common.payloads import (
    Hello,
    decode_hello_ack,
    encode_endpoints_update,
    encode_hello,
)
from stellarouter.common.schemas import ENDPOINT_SCHEMAS
from stellarouter.config.gateway import ServiceConfig
from stellarouter.gateway.connection import GatewayConnection
from stellarouter.gateway.errors import NotFound
from stellarouter.gateway.hello import HelloRefused
from stellarouter.gateway.registration import Registrar
from stellarouter.gateway.state import RoutingState
from stellarouter.testing.fakes import FakeFrameSender
from stellarouter.testing.harness import InMemoryDeployment


def hello_payload(service: str, paths: Sequence[Tuple[str, str]], instance_id: str = "i-1",
                  version: str = "1.0.0", features: Tuple[str, ...] = (),
                  schemas: JSONValue = None) -> bytes:
    instance = InstanceDescriptor(instance_id, service, version, "eu1")
    endpoints = tuple(EndpointDescriptor(service, version, m, p) for m, p in paths)
    return encode_hello(Hello(instance, endpoints, features=features, schemas=schemas))


def hello(service: str, paths: Sequence[Tuple[str, str]], instance_id: str = "i-1",
          version: str = "1.0.0") -> Frame:
    return Frame(FrameType.HELLO, new_correlation_id(),
                 hello_payload(service, paths, instance_id, version))


class RegistrarTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = RoutingState()
        self.registrar = Registrar(self.state, "gw-7", "eu9")

    def test_refusal_names_the_gateway(self) -> None:
        """
        A refusal is a HELLO answer, not accepted, with the reason and the
        registrar's node id and region, under the given correlation id or
        a fresh one.
        """
        cid = new_correlation_id()
        frame = self.registrar.refusal("no", cid)
        self.assertEqual((frame.type, frame.correlation_id), (FrameType.HELLO, cid))
        ack = decode_hello_ack(frame.payload)
        self.assertEqual((ack.accepted, ack.reason, ack.node_id, ack.region),
                         (False, "no", "gw-7", "eu9"))
        self.assertNotEqual(self.registrar.refusal("no").correlation_id, cid)

    def test_admit_routes_nothing(self) -> None:
        """
        Admitting a HELLO builds the connection's state but leaves the
        routing state alone; a refused one raises L{HelloRefused} with the
        reason.
        """
        admission = self.registrar.admit(hello_payload("billing", [("GET", "/ping")]),
                                         FakeFrameSender(), 3.0, 4096)
        self.assertEqual((admission.state.instance.instance_id, admission.state.connected_at,
                          admission.state.max_frame_bytes), ("i-1", 3.0, 4096))
        self.assertEqual(self.state.connections(), [])
        self.registrar.limits = RegistrationLimits(max_endpoints=1)
        error = self.assertRaises(
            HelloRefused, self.registrar.admit,
            hello_payload("billing", [("GET", "/a"), ("GET", "/b")]), FakeFrameSender(), 0.0,
            4096)
        self.assertIn("at most 1", str(error))

    def test_schemas_kept_or_not(self) -> None:
        """
        Endpoint descriptions are kept and the feature answered only while
        C{keep_schemas} is set.
        """
        schemas: JSONValue = {"endpoints": []}
        payload = hello_payload("billing", [("GET", "/ping")], features=(ENDPOINT_SCHEMAS,),
                                schemas=schemas)
        kept = self.registrar.admit(payload, FakeFrameSender(), 0.0, 4096)
        self.assertIsNotNone(kept.state.schemas)
        self.assertIn(ENDPOINT_SCHEMAS, kept.features)
        self.registrar.keep_schemas = False
        dropped = self.registrar.admit(payload, FakeFrameSender(), 0.0, 4096)
        self.assertIsNone(dropped.state.schemas)
        self.assertNotIn(ENDPOINT_SCHEMAS, dropped.features)

    def test_refused_update_keeps_the_old_endpoints(self) -> None:
        """
        An ENDPOINTS_UPDATE claiming another service's endpoint is answered
        with the refusal and the connection closed; until the close its old
        endpoints stay routed and the other service keeps its own.
        """
        clock = Clock()
        billing = GatewayConnection(self.registrar, clock)
        billing.connectionOpened(FakeFrameSender())
        billing.frameReceived(hello("billing", [("GET", "/ping")], "b-1"))
        shipping = GatewayConnection(self.registrar, clock)
        sender = FakeFrameSender()
        shipping.connectionOpened(sender)
        shipping.frameReceived(hello("shipping", [("GET", "/ship")], "s-1"))
        sender.take()
        shipping.frameReceived(Frame(
            FrameType.ENDPOINTS_UPDATE, new_correlation_id(),
            encode_endpoints_update((EndpointDescriptor("shipping", "1.0.0", "GET", "/ping"),))))
        [answer] = sender.take()
        ack = decode_hello_ack(answer.payload)
        self.assertFalse(ack.accepted)
        self.assertIn("ENDPOINTS_UPDATE refused", ack.reason)
        self.assertIn("ENDPOINTS_UPDATE refused", sender.closed or "")
        self.assertEqual(self.state.resolve("GET", "/ship").template, "/ship")
        self.assertEqual(self.state.connectionsFor("billing", "GET", "/ping"), [billing])
        shipping.connectionClosed(sender.closed or "")
        self.assertRaises(NotFound, self.state.resolve, "GET", "/ship")


class ServiceRegistrarTests(SynchronousTestCase):
    def test_one_registrar_per_listener_changed_by_a_reload(self) -> None:
        """
        The gateway builds one registrar per transport listener; a reload
        changes the node id, region and registration limits they tell and
        apply, for new connections and open ones alike, and the version
        policy in force is the reloaded one.
        """
        deployment = InMemoryDeployment()
        self.addCleanup(deployment.stop)
        gateway = deployment.gateway
        [registrar] = gateway.registrars
        open_connection = GatewayConnection(registrar, deployment.clock)
        open_sender = FakeFrameSender()
        open_connection.connectionOpened(open_sender)
        open_connection.frameReceived(hello("billing", [("GET", "/ping")], "b-1"))
        old = gateway.config
        gateway.apply_config(dataclasses.replace(
            old, node=dataclasses.replace(old.node, node_id="gw-new", region="eu2"),
            registration=RegistrationLimits(max_endpoints=1),
            services=(ServiceConfig("billing", allowed_versions=("2.0.0",)),)))
        self.assertEqual(gateway.registrars, [registrar])
        open_connection.frameReceived(Frame(
            FrameType.ENDPOINTS_UPDATE, new_correlation_id(), encode_endpoints_update(
                tuple(EndpointDescriptor("billing", "1.0.0", "GET", p) for p in ("/a", "/b")))))
        self.assertIn("at most 1", open_sender.closed or "")
        sender = FakeFrameSender()
        connection = GatewayConnection(registrar, deployment.clock)
        connection.connectionOpened(sender)
        connection.frameReceived(hello("billing", [("GET", "/a")], "b-2"))
        ack = decode_hello_ack(sender.frames[0].payload)
        self.assertEqual((ack.accepted, ack.node_id, ack.region), (False, "gw-new", "eu2"))
        self.assertIn("allowed_versions", ack.reason or "")
        sender = FakeFrameSender()
        connection = GatewayConnection(registrar, deployment.clock)
        connection.connectionOpened(sender)
        connection.frameReceived(hello("billing", [("GET", "/a"), ("GET", "/b")], "b-3",
                                       version="2.0.0"))
        self.assertIn("at most 1", decode_hello_ack(sender.frames[0].payload).reason or "")
