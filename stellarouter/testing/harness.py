"""
A whole deployment in one process on a Clock: a gateway and microservices
on an in-memory network, with an in-memory HTTP client for the gateway's
site.  For tests of the layers above the transports.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from ..common.enums import TransportType
from ..config.gateway import (
    AuthConfig,
    GatewayConfig,
    HealthConfig,
    NodeConfig,
    ServiceConfig,
    TransportListenerConfig,
)
from ..config.microservice import (
    EndpointOverrideConfig, MicroserviceConfig, RouterEndpointConfig)
from ..config.openapi import OpenApiConfig
from ..config.observability import AccessLogConfig, MetricsConfig
from ..gateway.service import GatewayService
from ..microservice.endpoints import Microservice
from ..microservice.service import MicroserviceService
from ..transports.inmemory import InMemoryNetwork
from .http import HttpResponse, InMemoryHttpClient

GATEWAY_ADDRESS = "gateway"


class InMemoryDeployment:
    """
    A gateway listening on the in-memory address C{"gateway"}, and any
    number of microservices dialling it, all driven by one L{Clock}.
    """

    def __init__(self, clock: Optional[Clock] = None, region: str = "eu1",
                 max_frame_bytes: int = 1024 * 1024, neighbor_regions: Iterable[str] = (),
                 health: HealthConfig = HealthConfig(), services: Iterable[ServiceConfig] = (),
                 auth: AuthConfig = AuthConfig(),
                 extra_transports: Iterable[TransportListenerConfig] = (),
                 access_log: AccessLogConfig = AccessLogConfig(),
                 metrics: MetricsConfig = MetricsConfig(),
                 openapi: OpenApiConfig = OpenApiConfig()) -> None:
        """
        @param access_log: the gateway's and every microservice's access
            log settings.
        @param metrics: the gateway's metrics settings.
        """
        self.access_log = access_log
        self.clock = clock or Clock()
        self.network = InMemoryNetwork(self.clock)
        self.max_frame_bytes = max_frame_bytes
        self.config = GatewayConfig(
            node=NodeConfig(region=region, node_id="gw-test",
                            neighbor_regions=tuple(neighbor_regions)),
            transports=(TransportListenerConfig(TransportType.INMEMORY, GATEWAY_ADDRESS,
                                                max_frame_bytes),) + tuple(extra_transports),
            health=health,
            services=tuple(services),
            auth=auth,
            openapi=openapi,
            access_log=access_log,
            metrics=metrics,
        )
        self.gateway = GatewayService(self.config, self.clock, self.network)
        self.microservices: List[MicroserviceService] = []
        self.clients: List[InMemoryHttpClient] = []
        started = Deferred.fromCoroutine(self.gateway.start_transports())
        self.pump()
        if not started.called:
            raise AssertionError("the in-memory gateway did not start")
        self.gateway.health.started = True
        self.gateway.monitor.start()

    def add(self, app: Microservice, region: str = "eu1", instance_id: Optional[str] = None,
            heartbeat_interval: float = 5.0,
            drain_grace_period: float = 30.0,
            router: Optional[RouterEndpointConfig] = None,
            endpoints: Iterable[EndpointOverrideConfig] = ()) -> MicroserviceService:
        """
        Start a microservice serving C{app}, connected once this returns.

        @param endpoints: YAML-style endpoint overrides
            (L{EndpointOverrideConfig}s).
        """
        config = MicroserviceConfig(
            region=region,
            routers=(router or RouterEndpointConfig(TransportType.INMEMORY, GATEWAY_ADDRESS,
                                                    self.max_frame_bytes),),
            instance_id=instance_id,
            heartbeat_interval=heartbeat_interval,
            drain_grace_period=drain_grace_period,
            endpoints=tuple(endpoints),
            access_log=self.access_log,
        )
        service = MicroserviceService(app, config, self.clock, self.network,
                                      initial_delay=0.1, jitter=lambda: 0)
        service.startService()
        self.microservices.append(service)
        self.pump()
        return service

    def pump(self, turns: int = 20) -> None:
        """
        Deliver everything in flight (each turn runs the calls due now).
        """
        for _ in range(turns):
            self.clock.advance(0)

    def http(self) -> InMemoryHttpClient:
        """
        A new HTTP connection to the gateway's site.
        """
        client = InMemoryHttpClient(self.gateway.site)
        self.clients.append(client)
        return client

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Sequence[Tuple[str, str]] = ()) -> HttpResponse:
        """
        Send one request on a fresh connection, deliver everything, and
        return the response.

        @raise AssertionError: if no complete response came.
        """
        client = self.http()
        client.send(method, path, body, headers)
        self.pump()
        response = client.response()
        if response is None:
            raise AssertionError(f"no response to {method} {path}")
        return response

    def admin_request(self, method: str, path: str,
                      headers: Sequence[Tuple[str, str]] = ()) -> HttpResponse:
        """
        Send one request to the gateway's admin site (as C{127.0.0.1},
        C{Host: 127.0.0.1:9901}) on a connection of its own, deliver
        everything, close the connection (as C{curl} or the C{stellarouter}
        command would: the admin listener caps its connections) and return
        the response.

        @raise AssertionError: if no complete response came.
        """
        client = InMemoryHttpClient(self.gateway.admin_site, host="127.0.0.1:9901")
        self.clients.append(client)
        client.send(method, path, b"", headers)
        self.pump()
        response = client.response()
        client.disconnect()
        if response is None:
            raise AssertionError(f"no admin response to {method} {path}")
        return response

    def stop(self) -> None:
        """
        Close the HTTP connections, stop every microservice and the gateway,
        and deliver the goodbyes.
        """
        for client in self.clients:
            client.disconnect()
        for service in self.microservices:
            service.stopService()
        self.pump()
        self.gateway.stopService()
        self.pump()
