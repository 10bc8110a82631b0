"""
Registration, seen from the gateway: which microservice connections enter
the routing state, with which endpoints, and what the HELLO answer tells
them (L{Registrar}).  One registrar per transport listener holds what every
connection of that listener shares (the node id and region told in each
HELLO answer, the registration limits, the certificate names allowed per
service, the version policy, whether endpoint descriptions are kept), so a
reload changes it in one place.  The checks that need no routing state are
in L{stellarouter.gateway.hello}; L{stellarouter.gateway.connection} keeps
the phase and the sender, asks the registrar, and sends or closes as told.
Nothing here runs per request.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Tuple

from twisted.logger import Logger

from ..common.enums import FrameType
from ..common.errors import InvalidDescriptor, MalformedPayload
from ..common.ids import CorrelationId, new_correlation_id
from ..common.interfaces import IFrameSender
from ..common.models import ConnectionState, Frame, RegistrationLimits, RoutableConnection
from ..common.payloads import HelloAck, decode_endpoints_update, encode_hello_ack
from ..common.schemas import ENDPOINT_SCHEMAS, SchemasProblem, ServiceSchemas, read_schemas
from .hello import HelloRefused, accept_hello, agreed_features, new_connection_state
from .state import RoutingState

#: Who may register a service at a version: C{policy(service, version)}
#: says why not (C{services[].allowed_versions}), or returns L{None}.
RegistrationPolicy = Callable[[str, str], Optional[str]]


class EndpointsRefused(Exception):
    """
    An ENDPOINTS_UPDATE that may not replace the endpoints; the argument is
    the reason told to the microservice.
    """


class Admission(NamedTuple):
    """
    An accepted HELLO: what the connection starts with.

    @ivar state: the connection's state (not in the routing state yet).
    @ivar compact_headers: REQUEST headers go in the compact form.
    @ivar response_credit: response streams start with no credit.
    @ivar features: the features the HELLO answer lists back.
    """

    state: ConnectionState
    compact_headers: bool
    response_credit: bool
    features: Tuple[str, ...]


class Registrar:
    """
    Registers the microservice connections of one listener in the routing
    state.

    @ivar node_id: this gateway, told in every HELLO answer.
    @ivar region: this gateway's region, told in every HELLO answer.
    @ivar limits: caps on what a HELLO or ENDPOINTS_UPDATE may announce.
    """

    log = Logger()

    def __init__(
        self,
        routing_state: RoutingState,
        node_id: str,
        region: str,
        limits: RegistrationLimits = RegistrationLimits(),
        allowed_client_names: Optional[Mapping[str, Sequence[str]]] = None,
        policy: Optional[RegistrationPolicy] = None,
        keep_schemas: bool = True,
    ) -> None:
        """
        @param allowed_client_names: service → certificate names allowed to
            register it (TLS listeners); empty: no restriction.
        @param policy: the version policy (L{RegistrationPolicy}), if any.
        @param keep_schemas: keep the endpoint descriptions of a HELLO
            (feature C{endpoint-schemas}) for the OpenAPI document (off:
            C{openapi.expose: none}).
        """
        self.routing_state = routing_state
        self.node_id = node_id
        self.region = region
        self.limits = limits
        self.allowed_client_names = dict(allowed_client_names or {})
        self.policy = policy
        self.keep_schemas = keep_schemas

    def admit(self, payload: bytes, sender: IFrameSender, now: float,
              max_frame_bytes: int) -> Admission:
        """
        Check a HELLO that arrived over C{sender} and build the state of
        its connection.

        @raise HelloRefused: it may not register, with the reason.
        """
        identity = tuple(getattr(sender, "peer_identity", ()) or ())
        hello = accept_hello(payload, self.limits, identity, self.allowed_client_names,
                             self.policy)
        state = new_connection_state(hello, sender.transport_type, sender.peer, identity, now,
                                     max_frame_bytes)
        state.schemas = self._schemas(hello.schemas, sender.peer)
        compact, credit, features = agreed_features(hello.features)
        if state.schemas is not None:
            features += (ENDPOINT_SCHEMAS,)
        return Admission(state, compact, credit, features)

    def _schemas(self, raw: object, peer: str) -> Optional[ServiceSchemas]:
        """
        The endpoint descriptions of a HELLO, if it has some, they are
        kept, and their shape is right (else they are left out, logged:
        the endpoints are routed all the same).
        """
        if raw is None or not self.keep_schemas:
            return None
        try:
            return read_schemas(raw)
        except SchemasProblem as e:
            self.log.warn("endpoint descriptions in the HELLO from {peer} left out: {error}",
                          peer=peer, error=e)
            return None

    def register(self, connection: RoutableConnection) -> None:
        """
        Put an admitted connection (its C{state} set) in the routing state.

        @raise HelloRefused: its endpoints clash with those registered.
        """
        try:
            self.routing_state.register(connection)
        except InvalidDescriptor as e:
            raise HelloRefused(f"HELLO refused: {e}") from e

    def accepted(self, cid: CorrelationId, admission: Admission) -> Frame:
        """
        The HELLO answer for a connection now registered; logs the
        registration.
        """
        state = admission.state
        i = state.instance
        identity = state.peer_identity
        self.log.info(
            "registered instance {instance_id} of {service} {version} (region {region}) "
            "over {transport} from {peer}{identity} with {count} endpoint(s)",
            instance_id=i.instance_id, service=i.service_name, version=i.version,
            region=i.region, transport=state.transport_type.value, peer=state.peer,
            identity=f" (certificate {', '.join(identity)})" if identity else "",
            count=len(state.endpoints),
        )
        return Frame(FrameType.HELLO, cid, encode_hello_ack(
            HelloAck(True, None, self.node_id, self.region, admission.features)))

    def refusal(self, reason: str, cid: Optional[CorrelationId] = None) -> Frame:
        """
        A HELLO answer that says why the connection is closed (so the
        microservice can log it); a fresh correlation id if none is given.
        """
        return Frame(FrameType.HELLO, cid if cid is not None else new_correlation_id(),
                     encode_hello_ack(HelloAck(False, reason, self.node_id, self.region)))

    def unregister(self, connection: RoutableConnection, reason: str) -> None:
        """
        Take a registered connection out of the routing state (it closed).
        """
        self.routing_state.unregister(connection)
        i = connection.state.instance
        self.log.info(
            "instance {instance_id} ({service} {version}) disconnected: {reason}",
            instance_id=i.instance_id, service=i.service_name, version=i.version,
            reason=reason,
        )

    def update_endpoints(self, connection: RoutableConnection, payload: bytes) -> None:
        """
        Replace a registered connection's endpoints with those of an
        ENDPOINTS_UPDATE; if they may not be routed, it keeps the old ones.

        @raise EndpointsRefused: the update is invalid or refused, with the
            reason.
        """
        state = connection.state
        try:
            endpoints = decode_endpoints_update(payload, state.instance, self.limits)
        except (MalformedPayload, InvalidDescriptor) as e:
            raise EndpointsRefused(f"invalid ENDPOINTS_UPDATE: {e}") from e
        old = state.endpoints
        self.routing_state.unregister(connection)
        state.endpoints = {e.key: e for e in endpoints}
        try:
            self.routing_state.register(connection)
        except InvalidDescriptor as e:
            state.endpoints = old
            self.routing_state.register(connection)
            raise EndpointsRefused(f"ENDPOINTS_UPDATE refused: {e}") from e
        self.log.info("instance {instance_id} now serves {count} endpoint(s)",
                      instance_id=state.instance.instance_id, count=len(endpoints))
