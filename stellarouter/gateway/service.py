"""
The running gateway: the HTTP edge plus one transport server per configured
listener, sharing one routing state.
"""

from __future__ import annotations

import json
import dataclasses
import resource
from typing import Callable, Dict, List, Optional, Tuple, TypedDict, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..common.addresses import describe_address, endpoint_options
from ..common.interfaces import IRoutingPlugin, ITransportServer
from ..config.diff import diff, security_warnings
from ..config.errors import ConfigError
from ..config.gateway import GatewayConfig, TransportListenerConfig, load_gateway_config
from ..config.watcher import ConfigWatcher, Result, run_here
from ..common.redaction import redact_text
from ..lifecycle import StartAbandoned, StartupError, one_line
from ..transports.inmemory import InMemoryNetwork
from ..transports.registry import make_server
from ..transports.stream import ReceiverFactory
from .admin import AdminApp, AdminSite, IMetricsExposition
from .connection import GatewayConnection
from ._web import client_connection_cap
from .edge import GatewaySite, HealthApp, ProxyResource
from .auth import TokenVerifier
from .buffers import ResponseBudget
from .dispatch import ByteCount
from .expected import ExpectedInstances
from .forwarding import ClientAddressPolicy
from .memory import configured_routes
from .health import HealthMonitor
from .openapi import OpenApiCatalog, expose_publicly
from .outliers import OutlierPolicy
from .overrides import EndpointOverrides
from .registration import Registrar
from .resolver import Route
from .retry import RetryBudget
from .routing import RegionAwareRouting
from .state import RoutingState
from .metrics import GatewayMetrics
from .tracked import RefusalLog, TrackedConnection
from .telemetry import RequestTelemetry, ServiceFigures, build_telemetry


class ListenAddresses(TypedDict, total=False):
    """
    Where a started gateway listens (empty until it has started).

    @ivar http: C{host:port} of the HTTP listener.
    @ivar transports: one description per transport listener, e.g.
        C{"tcp:127.0.0.1:5100"}.
    @ivar admin: C{host:port} of the admin listener (absent when
        C{admin.enabled} is false).
    """

    http: str
    transports: List[str]
    admin: str


def owner_only(description: str) -> str:
    """
    A C{unix:} endpoint string without a C{mode=} made to create its socket
    mode 0600 (Twisted's default, 0666, lets every local user connect): the
    admin listener's, whose requests drain instances.
    """
    kind, options = endpoint_options(description)
    if kind != "unix" or "mode" in options:
        return description
    return description + ":mode=600"


@dataclasses.dataclass(frozen=True)
class _Built:
    """
    The objects a configuration puts in force, built (L{GatewayService._build})
    before any of them is.
    """

    routing: IRoutingPlugin
    overrides: EndpointOverrides
    verifier: Optional[TokenVerifier]
    forwarding: ClientAddressPolicy
    retry_budget: RetryBudget
    outlier_policy: OutlierPolicy
    routes: Tuple[Route, ...]
    #: The client connection cap (C{http.max_connections} or automatic).
    max_connections: int
    expected: ExpectedInstances


class GatewayService(Service):
    """
    Starts the transport listeners and the HTTP edge; on stop, cancels the
    requests in flight (CANCEL Shutdown, clients get 503) and closes
    everything.

    @ivar addresses: once started, C{{"http": "127.0.0.1:8080",
        "transports": ["tcp:127.0.0.1:5100", ...]}}.
    @ivar ready: fires with C{addresses} once every listener is bound.
    """

    log = Logger()

    def __init__(
        self,
        config: GatewayConfig,
        reactor: IReactorTime,
        network: Optional[InMemoryNetwork] = None,
        routing: Optional[IRoutingPlugin] = None,
        config_path: Optional[str] = None,
        metrics: Optional[IMetricsExposition] = None,
    ) -> None:
        """
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        @param network: for in-memory listeners.
        @param routing: the routing plugin (default: L{RegionAwareRouting}
            with the configured region, neighbours and default versions,
            rebuilt on every reload).
        @param config_path: the file C{config} came from; when given it is
            watched and reloaded (L{reload}).
        @param metrics: served by the admin listener's C{GET /metrics}.
        """
        self.config = config
        self.reactor = reactor
        self.routing_state = RoutingState(reactor)
        self.aggregate = ByteCount()
        self.response_budget = ResponseBudget(config.buffers.max_response_bytes)
        self.connections: List[TrackedConnection] = []
        #: One per transport listener: what its connections register with.
        self.registrars: List[Registrar] = []
        #: Open connections by peer host (for C{max_connections_per_peer_address}).
        self.per_peer_address: Dict[str, int] = {}
        self.refusals = RefusalLog(reactor)
        self._custom_routing = routing
        node = config.node
        self.health = HealthApp(self.routing_state, node.node_id, node.region)
        self.proxy = ProxyResource(self.routing_state, self._routing_for(config), reactor,
                                   node.region, config.payload_limits, self.aggregate)
        self.site = GatewaySite(self.proxy, self.health, reactor)
        #: The OpenAPI documents (docs/router/openapi.md); on the public site
        #: with C{openapi.expose: public}; for the admin listener (the
        #: default) add_openapi_routes mounts them there.
        self.openapi = OpenApiCatalog(self.routing_state, config.openapi.title,
                                      lambda: self.config.default_versions())
        self.openapi.server_url = config.openapi.server_url
        if config.openapi.expose == "public":
            expose_publicly(self.site, self.routing_state, self.openapi,
                            config.openapi.path, config.openapi.docs_path)
        # Telemetry (issue 21): metrics kept across reloads, the access log
        # rebuilt when its settings change (see _apply_telemetry).
        self.reloads_applied = 0
        self.figures = ServiceFigures(self)
        self.metrics = GatewayMetrics(config.metrics.max_series, self.figures,
                                      config.metrics.enabled)
        self.site.refusal_log.on_refused = self._refused_at_edge
        self.telemetry: Optional[RequestTelemetry] = None
        # The admin listener (issue 21): its own port, its own site; it
        # serves these metrics unless the caller gives others.
        self.admin = AdminApp(self._registered, self.health, reactor, config,
                              self.metrics if metrics is None else metrics)
        self.admin.ejection_state = self.routing_state.ejection_state
        if config.openapi.expose == "admin":  # (the default; issue 23)
            self.admin.openapi = self.openapi
        self.admin_site = AdminSite(self.admin.app.resource(), reactor=reactor,
                                    settings=lambda: self.admin.config.admin)
        self._admin_port: Optional[IListeningPort] = None
        self.servers: List[ITransportServer] = []
        for i, t in enumerate(config.transports):
            try:
                self.servers.append(make_server(
                    t.type, t.listen, reactor, self._receiver_factory(t), t.max_frame_bytes,
                    network, t.tls, t.idle_timeout, node.node_id, f"transports[{i}]"))
            except Exception as e:
                raise StartupError(f"transports[{i}] ({t.type.value} {redact_text(t.listen)}): "
                                   f"{one_line(e)}") from e
        self.monitor = HealthMonitor(reactor, config.health, self._registered,
                                     self._check_expected)
        self.watcher: Optional[ConfigWatcher[GatewayConfig]] = None
        if config_path is not None:
            self.watcher = ConfigWatcher(
                config_path, load_gateway_config, self.apply_config, reactor, config,
                also_watch=lambda c: [c.auth.jwks_file] if c.auth.jwks_file else [],
                run_blocking=self._run_blocking)
        try:
            telemetry = self._open_telemetry(config)
        except OSError as e:
            raise StartupError(f"access_log.path ({config.access_log.path}): "
                               f"{one_line(e)}") from e
        self._apply(config, self._build(config), telemetry)
        self._http_port: Optional[IListeningPort] = None
        self.addresses: ListenAddresses = {}
        self.ready: Deferred[ListenAddresses] = Deferred()

    def _run_blocking(self, function: Callable[..., Result], *args: object) -> Deferred[Result]:
        """
        Run blocking work (reading and parsing the configuration) in the
        reactor's thread pool, so it never stalls requests; at once when
        the reactor has no threads (in-memory deployments, tests).
        """
        if IReactorThreads.providedBy(self.reactor):
            threads = cast(IReactorThreads, self.reactor)
            return deferToThreadPool(self.reactor, threads.getThreadPool(), function, *args)
        return run_here(function, *args)

    def _receiver_factory(self, listener: TransportListenerConfig) -> ReceiverFactory:
        config = self.config
        registrar = Registrar(
            self.routing_state, config.node.node_id, config.node.region, config.registration,
            listener.tls.allowed_names() if listener.tls else {}, self.registration_refusal,
            keep_schemas=config.openapi.expose != "none")
        self.registrars.append(registrar)

        def build() -> GatewayConnection:
            return TrackedConnection(self, registrar, listener.max_frame_bytes)
        return build

    def _routing_for(self, config: GatewayConfig) -> IRoutingPlugin:
        if self._custom_routing is not None:
            return self._custom_routing
        node = config.node
        return RegionAwareRouting(node.region, node.neighbor_regions, config.default_versions())

    def _build(self, config: GatewayConfig) -> _Built:
        """
        Build what C{config} puts in force, changing nothing yet: whatever
        fails here (a bug: C{config} is validated) leaves the configuration
        in force whole.
        """
        retries, outliers = config.retries, config.outlier_detection
        http = config.http
        open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = self.health.expected
        if config.static_instances != expected.expected:
            expected = ExpectedInstances(config.static_instances, expected)
        return _Built(
            routing=self._routing_for(config),
            overrides=EndpointOverrides(config.services),
            verifier=TokenVerifier(config.auth) if config.auth.enabled else None,
            forwarding=ClientAddressPolicy(http.trusted_proxies),
            retry_budget=RetryBudget(retries.budget_ratio, retries.budget_window,
                                     retries.min_retries),
            outlier_policy=OutlierPolicy(outliers.consecutive_failures,
                                         outliers.base_ejection_time, outliers.max_ejection_time,
                                         outliers.max_ejected_share, outliers.eject_on_timeout),
            routes=tuple(configured_routes(config.services)),
            max_connections=client_connection_cap(http.max_connections, open_files,
                                                  http.reserved_descriptors),
            expected=expected,
        )

    def _apply(self, config: GatewayConfig, built: _Built,
               telemetry: Optional[RequestTelemetry]) -> None:
        """
        Put the live-changeable parts of C{config} in force: C{built}
        (L{_build}'s) and plain settings, only assigned here.  Each piece is
        swapped by replacing one reference, so a request sees either the old
        or the new setting, never a mix within one object.

        @param telemetry: L{_open_telemetry}'s for C{config} (what could
            fail is done before anything changes).
        """
        node = config.node
        proxy = self.proxy
        proxy.routing = built.routing
        proxy.region = node.region
        proxy.limits = config.payload_limits
        self.response_budget.limit = config.buffers.max_response_bytes
        proxy.overrides = built.overrides
        proxy.overrides.report(self.routing_state)
        proxy.verifier = built.verifier
        proxy.auth_required = config.auth.require_authentication
        proxy.forwarding = built.forwarding
        proxy.retries.configure(config.retries.enabled, built.retry_budget, built.outlier_policy)
        self.routing_state.memory.limit(config.http.forget_routes_after,
                                        config.http.max_remembered_routes)
        self.routing_state.memory.configure(built.routes)
        self.site.max_request_bytes = config.payload_limits.max_request_bytes_per_call
        self._apply_telemetry(config, telemetry)
        self._apply_http(config, built.max_connections)
        self.health.node_id, self.health.region = node.node_id, node.region
        self.health.detail = config.http.health_detail
        self.health.expected = built.expected
        self.admin.put_in_force(config, built.overrides, built.verifier)
        for registrar in self.registrars:
            registrar.node_id, registrar.region = node.node_id, node.region
            registrar.limits = config.registration
        for connection in self.connections:
            connection.health = config.health
        if self.monitor.thresholds != config.health:
            running = self.monitor.running
            self.monitor.stop()
            self.monitor.thresholds = config.health
            if running:
                self.monitor.start()

    def _open_telemetry(self, config: GatewayConfig) -> Optional[RequestTelemetry]:
        """
        The telemetry C{config} asks for, built (its access log file
        opened) if its access log or metrics settings differ from those in
        force; L{None} if they do not.  Nothing is put in force yet.

        @raise OSError: the access log file cannot be opened.
        """
        if self.telemetry is not None and (self.config.access_log, self.config.metrics) == (
                config.access_log, config.metrics):
            return None
        return build_telemetry(self.reactor, config.access_log, config.metrics, self.metrics)

    def _apply_telemetry(self, config: GatewayConfig,
                         telemetry: Optional[RequestTelemetry]) -> None:
        """
        Put the access log and metrics settings in force: C{telemetry},
        built for C{config} by L{_open_telemetry} (L{None}: unchanged),
        replaces the current one, whose buffer is written out first.
        """
        if telemetry is None:
            return
        current = self.telemetry
        if current is not None:
            current.close()
            self.figures.retire_telemetry(current)
        enabled = config.metrics.enabled
        self.metrics.max_series = config.metrics.max_series
        if enabled != self.metrics.enabled:
            self.metrics.enabled = enabled
            for connection in self.connections:
                connection.count_traffic(self.metrics if enabled else None)
        self.telemetry = telemetry
        # With neither metrics nor an access log, the site calls nothing
        # when a request ends.
        self.site.telemetry = (telemetry if telemetry.metrics is not None
                               or telemetry.access_log is not None else None)

    def _refused_at_edge(self, status: int) -> None:
        telemetry = self.telemetry
        if telemetry is not None and telemetry.metrics is not None:
            telemetry.metrics.rejected(status)

    def registration_refusal(self, service: str, version: str) -> Optional[str]:
        """
        Why an instance of C{service} at C{version} may not register under
        the configuration in force, or C{None}.
        """
        return self.config.registration_refusal(service, version)

    def _disconnect_refused(self, config: GatewayConfig) -> None:
        """
        Close the registered connections that C{config} no longer allows
        (a reload that pins C{allowed_versions}).
        """
        for connection in list(self.connections):
            state = connection.state
            if state is None or connection.sender is None:
                continue
            refusal = config.registration_refusal(state.instance.service_name,
                                                  state.instance.version)
            if refusal is not None:
                self.log.warn("closing instance {instance_id}: {refusal}",
                              instance_id=state.instance.instance_id, refusal=refusal)
                connection.sender.close(refusal)

    def _apply_http(self, config: GatewayConfig, max_connections: int) -> None:
        """
        The HTTP edge's connection-level limits (for connections accepted
        from now on).
        """
        http = config.http
        self.site.head_timeout = http.request_head_timeout
        self.site.max_header_bytes = http.max_header_bytes
        self.site.max_connections = max_connections

    def apply_config(self, new: GatewayConfig) -> Tuple[List[str], List[str]]:
        """
        Swap in a new validated configuration: what can change live does at
        once; listen addresses keep their old value and are reported as
        needing a restart.  Connections and requests in flight are untouched.
        A configuration that cannot be put in force (its access log file
        cannot be opened) is refused whole: nothing of it applies.  So is
        one whose building fails otherwise (a bug), raising that error.

        @return: the changes applied and those needing a restart.
        @raise ConfigError: C{new} was refused.
        """
        try:
            telemetry = self._open_telemetry(new)
        except OSError as e:
            source = self.watcher.path if self.watcher is not None else "the new configuration"
            raise ConfigError(source, [
                f"access_log.path: {new.access_log.path} cannot be opened: {one_line(e)}"]) from e
        try:
            live, restart = diff(self.config, new)
            weakenings = security_warnings(self.config, new)
            effective = dataclasses.replace(
                new, http=dataclasses.replace(new.http, listen=self.config.http.listen,
                                              backlog=self.config.http.backlog),
                transports=self.config.transports, openapi=self.config.openapi,
                admin=dataclasses.replace(new.admin, listen=self.config.admin.listen,
                                          enabled=self.config.admin.enabled))
            built = self._build(effective)
        except BaseException:
            if telemetry is not None:
                telemetry.close()  # (its new access log file: never used)
            raise
        for weakening in weakenings:
            self.log.warn("configuration reload weakens authentication: {weakening}",
                          weakening=weakening)
        self._apply(effective, built, telemetry)
        self.config = effective
        self.reloads_applied += 1
        self._disconnect_refused(effective)
        if self.watcher is not None:
            self.watcher.current = new
        if live:
            self.log.info("configuration reloaded; changed: {changes}", changes="; ".join(live))
        elif not restart:
            # (A file that differs from the last one read, not from what is
            # in force: a change only a restart would apply, reverted.)
            self.log.info("configuration reloaded; nothing in force changes, and no change "
                          "waits for a restart")
        if restart:
            self.log.warn("configuration changes that need a restart were NOT applied: "
                          "{changes}", changes="; ".join(restart))
        return live, restart

    def reload(self) -> Deferred[bool]:
        """
        Re-read the configuration file now (SIGHUP).

        @return: a Deferred firing with C{True} if a new configuration was
            applied.
        """
        if self.watcher is None:
            return Deferred.fromCoroutine(_false())
        return self.watcher.check(force=True)

    def _check_expected(self, connections: List[GatewayConnection]) -> None:
        self.health.expected.check(connections)
        self.proxy.overrides.report(self.routing_state)

    def _registered(self) -> List[GatewayConnection]:
        return [c for c in self.connections if c.state is not None]

    def startService(self) -> None:
        super().startService()
        self.monitor.start()
        if self.watcher is not None:
            self.watcher.start()
        d = Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)

    async def start_transports(self) -> List[str]:
        """
        Start every transport listener.

        @return: the bound addresses.
        @raise StartupError: naming the listener that could not start.
        """
        addresses = []
        for i, (server, listener) in enumerate(zip(self.servers, self.config.transports)):
            try:
                addresses.append(await server.start())
            except Exception as e:
                raise StartupError(
                    f"transports[{i}] ({listener.type.value} "
                    f"{redact_text(listener.listen)}): {one_line(e)}") from e
        return addresses

    async def _abandon_if_stopped(self) -> None:
        """
        If the service was stopped while its start-up waited (for a broker's
        first answer, a port being bound ...), close the ports bound since
        (L{stopService} closed those before): nothing more is started.

        @raise StartAbandoned: it was.
        """
        if self.running:
            return
        ports = [port for port in (self._http_port, self._admin_port) if port is not None]
        self._http_port = self._admin_port = None
        for port in ports:
            stopping = port.stopListening()
            if isinstance(stopping, Deferred):
                await stopping
        raise StartAbandoned()

    async def _start(self) -> None:
        transports = await self.start_transports()
        await self._abandon_if_stopped()
        http = self.config.http
        try:
            port = await serverFromString(self.reactor, http.listen_endpoint).listen(self.site)
        except Exception as e:
            raise StartupError(f"http.listen ({http.listen}): {one_line(e)}") from e
        self._http_port = port
        await self._abandon_if_stopped()
        host = port.getHost()
        self.addresses = {"http": describe_address(host), "transports": transports}
        if (self.config.openapi.expose == "admin" and self.openapi.server_url is None
                and isinstance(host, (IPv4Address, IPv6Address))):
            # Read off the admin listener, the document points at the HTTP port.
            scheme = "https" if http.listen.startswith("ssl:") else "http"
            name = f"[{host.host}]" if ":" in host.host else host.host
            self.openapi.server_url = f"{scheme}://{name}:{host.port}"
        admin_address = await self._start_admin()
        await self._abandon_if_stopped()
        if admin_address is not None:
            self.addresses["admin"] = admin_address
        self.admin.addresses = dict(self.addresses)
        self.health.started = True
        node = self.config.node
        self.log.info(
            "gateway {node_id} (region {region}) ready: {addresses}",
            node_id=node.node_id, region=node.region, addresses=json.dumps(self.addresses),
        )
        self.ready.callback(self.addresses)

    async def _start_admin(self) -> Optional[str]:
        """
        Start the admin listener, if enabled.

        @return: its C{host:port}, or C{None} when disabled.
        @raise StartupError: it cannot listen (like the public port).
        """
        admin = self.config.admin
        if not admin.enabled:
            return None
        try:
            port = await serverFromString(self.reactor, owner_only(admin.listen)).listen(
                self.admin_site)
        except Exception as e:
            raise StartupError(f"admin.listen ({admin.listen}): {one_line(e)}") from e
        self._admin_port = port
        return describe_address(port.getHost())

    def _start_failed(self, failure: Failure) -> None:
        if failure.check(StartAbandoned):
            self.log.info("gateway stopped before it was ready; start-up abandoned")
        elif not failure.check(StartupError):
            self.log.failure("gateway failed to start", failure)
        self.ready.errback(failure)

    def stopService(self) -> Deferred[List[Tuple[bool, None]]]:
        super().stopService()
        self.health.stopping = True
        self.monitor.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.proxy.retries.stop()
        cancelled = sum(c.shutdown() for c in list(self.connections))
        if cancelled:
            self.log.info("shutting down: cancelled {count} request(s) in flight", count=cancelled)
        if self.telemetry is not None:
            self.telemetry.close()
        waits = [server.stop() for server in self.servers]
        if self._http_port is not None:
            stopping = self._http_port.stopListening()
            if isinstance(stopping, Deferred):
                waits.append(stopping)
            self._http_port = None
        if self._admin_port is not None:
            stopping = self._admin_port.stopListening()
            if isinstance(stopping, Deferred):
                waits.append(stopping)
            self._admin_port = None
        return DeferredList(waits)


async def _false() -> bool:
    return False
