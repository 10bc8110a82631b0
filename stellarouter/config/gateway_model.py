"""
The gateway's configuration as the rest of the gateway reads it: typed,
frozen sections (node, HTTP listener, transport listeners, health, buffers,
services, auth, static instances, and the sections of their own modules:
admin, access log, metrics, retries, outlier detection), each default the
documented one.  C{stellarouter.config.gateway} reads and checks a YAML
document into them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.models import ClaimRequirement, PayloadLimits, RegistrationLimits
from .admin import AdminConfig
from .observability import AccessLogConfig, MetricsConfig
from .openapi import OpenApiConfig
from .resilience import OutlierDetectionConfig, RetryConfig

#: Transports the gateway can listen on today.
SUPPORTED_LISTENERS = (TransportType.TCP, TransportType.TLS, TransportType.UDP,
                       TransportType.RABBITMQ, TransportType.INMEMORY)


@dataclass(frozen=True)
class NodeConfig:
    """
    The gateway node.  C{region} is the only source of the gateway's region.
    """

    region: str
    node_id: str = field(default_factory=socket.gethostname)
    neighbor_regions: Tuple[str, ...] = ()
    environment: str = "production"


@dataclass(frozen=True)
class HttpConfig:
    """
    The HTTP edge.

    @ivar listen: a server endpoint string.
    @ivar access_log: the former switch of the access log, if the file
        still sets it (L{None}: not set); the access log is configured by
        the top-level C{access_log} section (L{GatewayConfig.access_log}),
        which this value, when set, turns on or off.
    @ivar request_head_timeout: seconds from the first byte of a request's
        head to its last (408 and close after).
    @ivar max_header_bytes: the request line (414 beyond), each header
        line and all of them together (431 beyond).
    @ivar max_connections: client connections held at most (503 and close
        beyond); L{None}: the open-files limit less C{reserved_descriptors}
        (at least half of that limit is left to everything else).
    @ivar reserved_descriptors: file descriptors kept for microservice
        connections, listeners and files when C{max_connections} is
        automatic.
    @ivar backlog: the listen backlog (connections the kernel queues
        before they are accepted); ignored if C{listen} sets its own.
    @ivar trusted_proxies: addresses or networks (C{10.0.0.0/8}, C{::1})
        whose C{X-Forwarded-For} / C{Forwarded} values are kept; from any
        other peer they are replaced.  The peer's address is always
        appended.
    @ivar forget_routes_after: seconds a route stays known (503, not 404)
        after its last instance left; 0 forgets at once.
    @ivar max_remembered_routes: at most this many such routes are
        remembered (the oldest departure is forgotten first).
    @ivar health_detail: what the public C{GET /health} shows: C{status}
        (only the status) or C{full} (services, versions, expected
        instances); the admin listener always shows everything.
    """

    listen: str = "tcp:8080:interface=127.0.0.1"
    access_log: Optional[bool] = None
    request_head_timeout: float = 30.0
    max_header_bytes: int = 16384
    max_connections: Optional[int] = None
    reserved_descriptors: int = 256
    backlog: int = 1024
    trusted_proxies: Tuple[str, ...] = ()
    forget_routes_after: float = 600.0
    max_remembered_routes: int = 1024
    health_detail: str = "status"

    @property
    def listen_endpoint(self) -> str:
        """
        C{listen} with C{backlog} added (for C{tcp}, C{ssl} and C{unix}
        endpoints that do not set one themselves).
        """
        kind = self.listen.split(":", 1)[0].strip().lower()
        if kind not in ("tcp", "tcp6", "ssl", "unix") or "backlog=" in self.listen:
            return self.listen
        return f"{self.listen}:backlog={self.backlog}"


@dataclass(frozen=True)
class TransportListenerConfig:
    """
    One transport listener.

    @ivar listen: a server endpoint string (TCP) or a name (in-memory).
    """

    type: TransportType
    listen: str
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    tls: Optional["TLSListenerConfig"] = None
    idle_timeout: float = 90.0

    @property
    def frame_limit(self) -> int:
        """
        The largest frame on this listener (a datagram for UDP).
        """
        return self.max_frame_bytes


@dataclass(frozen=True)
class TLSListenerConfig:
    """
    TLS settings of a C{tls} listener (PEM files).

    @ivar client_ca: the CA of acceptable client certificates; without it
        clients are not asked for one.
    @ivar allowed_client_names: service → certificate names allowed to
        register it; empty means any verified certificate may register any
        service.
    """

    certificate: str
    private_key: str
    client_ca: Optional[str] = None
    require_client_certificate: bool = True
    allowed_client_names: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()

    def allowed_names(self) -> Dict[str, Tuple[str, ...]]:
        return dict(self.allowed_client_names)


@dataclass(frozen=True)
class HealthConfig:
    """
    Liveness of microservice connections (spec section 5.3), in seconds.

    @ivar degraded_after: silence after which a connection is DEGRADED.
    @ivar unhealthy_after: silence after which it is UNHEALTHY.
    @ivar sweep_interval: how often silences are checked.
    @ivar ping_interval: how often the gateway pings each connection.
    @ivar close_unhealthy_after: how long a connection may stay UNHEALTHY
        before the gateway closes it (its instance may connect again).
    """

    degraded_after: float = 15.0
    unhealthy_after: float = 30.0
    sweep_interval: float = 5.0
    ping_interval: float = 5.0
    #: A connection UNHEALTHY this long is closed (issue 18, item 4).
    close_unhealthy_after: float = 60.0


@dataclass(frozen=True)
class BuffersConfig:
    """
    Bounds on the bytes the gateway holds for others (issue 17 item 6,
    issue 18 item 3).

    @ivar max_response_bytes: the budget for streamed response bodies, across
        all streams: credit granted to microservices plus bytes written to
        clients that have not gone out.  Beyond it streams wait for room.
    @ivar max_unsent_bytes_per_connection: bytes written to one microservice
        connection that have not left the process; past it the connection is
        stalled: no new requests go to it, and it is closed unless it drains
        within C{stalled_close_after} seconds.
    @ivar stalled_close_after: see C{max_unsent_bytes_per_connection}.
    """

    max_response_bytes: int = 32 * 1024 * 1024
    max_unsent_bytes_per_connection: int = 32 * 1024 * 1024
    stalled_close_after: float = 5.0


@dataclass(frozen=True)
class EndpointOverride:
    """
    The gateway's override of one endpoint of a service.

    @ivar timeout: replaces the endpoint's C{default_timeout} (seconds).
    @ivar requiring_claims: added to the endpoint's own requirements (the
        gateway can only tighten).
    @ivar forward_authorization: pass the client's C{Authorization} header
        on to the microservice (the verified claims always go).
    @ivar idempotent: whether a request to it may be retried after it may
        have started (C{None}: as the endpoint announces, else GET, HEAD
        and OPTIONS only; issue 24).
    """

    method: str
    path: str
    timeout: Optional[float] = None
    requiring_claims: Tuple[ClaimRequirement, ...] = ()
    buffered: bool = False
    forward_authorization: bool = True
    idempotent: Optional[bool] = None


@dataclass(frozen=True)
class ServiceConfig:
    """
    Gateway-side settings of one service.

    @ivar default_version: the version used when a request names none.
    @ivar endpoints: per-endpoint overrides.
    @ivar allowed_versions: if not empty, the only versions of this service
        whose instances may register (a HELLO announcing another is
        refused).
    """

    name: str
    default_version: Optional[str] = None
    endpoints: Tuple[EndpointOverride, ...] = ()
    allowed_versions: Tuple[str, ...] = ()

    def registration_refusal(self, version: str) -> Optional[str]:
        """
        Why an instance of this service at C{version} may not register, or
        C{None} if it may.
        """
        if self.allowed_versions and version not in self.allowed_versions:
            return (f"version {version} of service {self.name} is not in its "
                    f"allowed_versions ({', '.join(self.allowed_versions)})")
        return None


@dataclass(frozen=True)
class AuthConfig:
    """
    Bearer-token validation (spec section 6.2).

    @ivar require_authentication: every endpoint needs a valid token, not
        only those with claim requirements.
    @ivar issuer: the required C{iss}, if set.
    @ivar audience: the required C{aud}, if set.
    @ivar jwks_file: a JWKS file of public keys (RSA, EC, OKP).
    @ivar jwks: that file's content, read when the configuration is loaded
        (so a reload picks up rotated keys).
    @ivar hs256_secret: a shared secret for HMAC tokens.
    @ivar leeway: clock skew tolerated on C{exp} / C{nbf}, seconds.
    """

    require_authentication: bool = False
    issuer: Optional[str] = None
    audience: Optional[str] = None
    jwks_file: Optional[str] = None
    jwks: Optional[str] = None
    hs256_secret: Optional[str] = field(default=None, repr=False)
    leeway: float = 30.0

    @property
    def enabled(self) -> bool:
        """
        Whether any key is configured (otherwise no token can be valid).
        """
        return bool(self.jwks or self.hs256_secret)


@dataclass(frozen=True)
class StaticInstance:
    """
    One instance the operator expects to be connected (C{static_instances}).

    The gateway never routes by this list (invariant 5: the routing state is
    the union of the live connections); it reports each expected instance in
    C{/health} as connected, missing or mismatched, and logs the changes.

    @ivar service: the service name (lower-cased).
    @ivar instance_id: the C{instance_id} the instance announces in HELLO.
    @ivar version: if set, the version it must announce.
    @ivar region: if set, the region it must announce.
    """

    service: str
    instance_id: str
    version: Optional[str] = None
    region: Optional[str] = None

    @property
    def name(self) -> str:
        """
        C{service/instance_id}, as shown in C{/health} and the logs.
        """
        return f"{self.service}/{self.instance_id}"


@dataclass(frozen=True)
class GatewayConfig:
    """
    Everything C{twistd stella-gateway} needs, validated.
    """

    node: NodeConfig
    http: HttpConfig = HttpConfig()
    transports: Tuple[TransportListenerConfig, ...] = ()
    payload_limits: PayloadLimits = PayloadLimits()
    health: HealthConfig = HealthConfig()
    services: Tuple[ServiceConfig, ...] = ()
    auth: AuthConfig = AuthConfig()
    static_instances: Tuple[StaticInstance, ...] = ()
    buffers: BuffersConfig = BuffersConfig()
    registration: RegistrationLimits = RegistrationLimits()
    admin: AdminConfig = AdminConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    metrics: MetricsConfig = MetricsConfig()
    retries: RetryConfig = RetryConfig()
    outlier_detection: OutlierDetectionConfig = OutlierDetectionConfig()
    openapi: OpenApiConfig = OpenApiConfig()

    def registration_refusal(self, service: str, version: str) -> Optional[str]:
        """
        Why an instance of C{service} at C{version} may not register (its
        C{allowed_versions}), or C{None} if it may.
        """
        for settings in self.services:
            if settings.name == service:
                return settings.registration_refusal(version)
        return None

    def default_versions(self) -> Dict[str, str]:
        """
        The configured default version of each service that has one.
        """
        return {s.name: s.default_version for s in self.services if s.default_version}
