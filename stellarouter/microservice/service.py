"""
The running microservice: one reconnecting transport client per configured
router, each connection served by a L{RouterSession}.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.defer import race
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..common.addresses import MAX_DATAGRAM_BYTES
from ..common.enums import InstanceHealthStatus, TransportType
from ..common.interfaces import IFrameSender, ITransportClient
from ..common.models import InstanceDescriptor, identity_problem
from ..common.redaction import redact_text
from ..lifecycle import StartupError, one_line
from ..config.microservice import MicroserviceConfig
from ..transports.inmemory import InMemoryNetwork
from ..transports.hello import Backoff
from ..transports.registry import make_client
from .endpoints import Microservice, merge_overrides
from .budget import ResponseStreamBudget
from .requestlog import RequestLog
from .session import RouterSession

if TYPE_CHECKING:
    from typing_extensions import Unpack


def default_instance_id(service_name: str) -> str:
    """
    A unique, readable instance id: C{service-host-pid-random}.
    """
    return f"{service_name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class MicroserviceService(Service):
    """
    Connects a L{Microservice} to every configured router.

    @ivar sessions: the live L{RouterSession}s (one per open connection).
    """

    log = Logger()

    def __init__(
        self,
        app: Microservice,
        config: MicroserviceConfig,
        reactor: IReactorTime,
        network: Optional[InMemoryNetwork] = None,
        give_up: Optional[Callable[[int], None]] = None,
        rejection_jitter: Optional[Callable[[], float]] = None,
        **backoff: Unpack[Backoff],
    ) -> None:
        """
        @param reactor: the reactor: its clock, and its C{IReactorTCP} (or
            C{IReactorSSL}, C{IReactorUDP}) for the transport clients.
        @param network: the in-memory network, for in-memory routers.
        @param give_up: called with an exit status when a router rejected
            HELLO C{config.max_hello_rejections} times in a row (C{twistd}
            stops the process); C{None}: only stop this service.
        @param rejection_jitter: extra random delay after a rejection
            (default up to 10 % of the delay; C{lambda: 0} in tests).
        @param backoff: reconnect tuning passed to the transport clients.
        @raise ValueError: no router configured, or an instance id or region
            a gateway would refuse (L{identity_problem}).
        @raise StartupError: a router cannot be set up (a certificate that
            does not load...), naming it.
        @raise stellarouter.config.ConfigError: an endpoint override names an
            endpoint the app does not have.
        """
        if not config.routers:
            raise ValueError(
                "a microservice needs at least one router to connect to; "
                "add one under 'routers' in its configuration"
            )
        self.app = app
        self.config = config
        self.reactor = reactor
        self.instance = InstanceDescriptor(
            instance_id=config.instance_id or default_instance_id(app.name),
            service_name=app.name,
            version=app.version,
            region=config.region,
        )
        for name, value in (("instance_id", self.instance.instance_id),
                            ("region", self.instance.region)):
            problem = identity_problem(value)
            if problem is not None:
                raise ValueError(f"{name} {problem}")
        self.descriptors = merge_overrides(app.descriptors(), config.endpoints)
        self.sessions: List[RouterSession] = []
        #: Streamed response bytes not yet credited back, for every router.
        self.response_budget = ResponseStreamBudget(config.max_response_buffer_bytes)
        self.draining = False
        #: The SDK's access log (issue 21), or None when off.
        self.request_log: Optional[RequestLog] = None
        if config.access_log.enabled:
            try:
                self.request_log = RequestLog(config.access_log, reactor)
            except OSError as e:
                raise StartupError(f"access_log.path ({config.access_log.path}): "
                                   f"{one_line(e)}") from e
        self.clients: List[ITransportClient] = []
        #: HELLO rejections in a row, per router (index in C{clients}).
        self.rejections: Dict[int, int] = {}
        self._retries: Dict[int, IDelayedCall] = {}
        self._give_up = give_up
        self._rejection_jitter = rejection_jitter
        for index, router in enumerate(config.routers):
            datagrams = router.transport is TransportType.UDP
            limit = min(router.max_frame_bytes, MAX_DATAGRAM_BYTES) if datagrams else (
                router.max_frame_bytes)
            description = _describe_router(router.transport.value, router.address)
            try:
                self.clients.append(make_client(
                    router.transport, router.address, reactor,
                    self._receiver_factory(description, limit, not datagrams,
                                           router.compact_headers, index),
                    limit, network, router.tls, f"routers[{index}]", **backoff,
                ))
            except Exception as e:
                raise StartupError(f"routers[{index}] ({description}): {one_line(e)}") from e

    def _receiver_factory(self, description: str, max_frame_bytes: int, can_stream: bool,
                          compact_headers: bool, index: int = 0) -> Callable[[], RouterSession]:
        def build() -> RouterSession:
            session = _TrackedSession(
                self, self.app, self.instance, description, self.reactor,
                self.config.heartbeat_interval, max_frame_bytes,
                lambda session: self.rejections.pop(index, None), self.descriptors,
                can_stream, compact_headers, response_budget=self.response_budget,
                on_rejected=lambda session, reason: self._hello_rejected(index, session, reason),
            )
            return session
        return build

    def _hello_rejected(self, index: int, session: RouterSession, reason: str) -> None:
        """
        A router rejected HELLO: log its reason once, stop dialling it, and
        dial again after a backoff that grows to a minute; after
        C{max_hello_rejections} in a row, give up.
        """
        if "{*" in reason and "malformed segment" in reason:
            # issue 25: a gateway from before catch-all templates.
            reason += (" (this gateway does not know catch-all templates {*name}, which "
                       "mount_klein announces for <path:...> and branch=True routes: "
                       "upgrade the gateway)")
        count = self.rejections[index] = self.rejections.get(index, 0) + 1
        limit = self.config.max_hello_rejections
        if limit is not None and count >= limit:
            self.log.critical(
                "router {router} rejected HELLO of {service} {version} {count} time(s) in a "
                "row (max_hello_rejections: {limit}); stopping. Last reason: {reason}",
                router=session.router, service=self.app.name, version=self.app.version,
                count=count, limit=limit, reason=reason)
            self.clients[index].stop()
            if self._give_up is not None:
                self._give_up(1)
            return
        delay = _REJECTION_BACKOFF(count - 1) + (
            self._rejection_jitter() if self._rejection_jitter is not None
            else random.uniform(0, 0.1) * _REJECTION_BACKOFF(count - 1))
        self.log.error(
            "router {router} rejected HELLO of {service} {version} (rejection {count}): "
            "{reason}; trying again in {delay:.1f}s",
            router=session.router, service=self.app.name, version=self.app.version,
            count=count, reason=reason, delay=delay)
        client = self.clients[index]

        def later(_: object) -> None:
            if self.running and not self.draining:
                self._retries[index] = self.reactor.callLater(delay, self._retry, index)

        client.stop().addCallback(later)

    def _retry(self, index: int) -> None:
        self._retries.pop(index, None)
        if self.running and not self.draining:
            self.clients[index].start()

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "starting {service} {version} as {instance_id} in region {region}; "
            "routers: {routers}", service=self.app.name, version=self.app.version,
            instance_id=self.instance.instance_id, region=self.instance.region,
            routers=", ".join(_describe_router(r.transport.value, r.address)
                             for r in self.config.routers),
        )
        for index, client in enumerate(self.clients):
            if hasattr(client, "on_refused_at_start"):
                # The RabbitMQ client: a broker refusing the login or the
                # virtual host at start-up is a router that cannot be set up.
                client.on_refused_at_start = (
                    lambda reason, index=index: self._refused_at_start(index, reason))
            client.start()

    def _refused_at_start(self, index: int, reason: str) -> None:
        """
        The broker of router C{index} refused its login or virtual host at
        the first attempt: one critical line, and the process stops with
        exit status 1 (C{give_up}); without C{give_up} this service stops.
        """
        router = self.config.routers[index]
        self.log.critical(
            "stella-micro cannot start: routers[{index}] ({router}): {reason}; exiting with "
            "status 1", index=index,
            router=_describe_router(router.transport.value, router.address), reason=reason)
        if self._give_up is not None:
            self._give_up(1)
        elif self.running:
            self.stopService()

    def stopService(self) -> Deferred[None]:
        """
        Drain, then disconnect: report DRAINING on every connection, wait
        (at most C{drain_grace_period}) until each gateway acknowledged it and
        the requests in flight are done, cancel what is left (answering it
        503), and close.
        """
        super().stopService()
        return Deferred.fromCoroutine(self._drain_and_stop())

    async def _drain_and_stop(self) -> None:
        self.draining = True
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        sessions = list(self.sessions)
        in_flight = sum(s.dispatcher.in_flight for s in sessions if s.dispatcher is not None)
        grace = self.config.drain_grace_period
        self.log.info(
            "draining {instance_id}: {count} request(s) in flight, grace period {grace:g}s",
            instance_id=self.instance.instance_id, count=in_flight, grace=grace)
        drained = DeferredList([s.drain() for s in sessions], consumeErrors=True)
        waits: List[Deferred[Any]] = [drained, deferLater(self.reactor, grace, lambda: None)]
        winner, _ = await race(waits)
        if winner == 1:
            left = sum(s.dispatcher.shutdown() for s in list(self.sessions)
                       if s.dispatcher is not None)
            self.log.warn("grace period of {grace:g}s over: cancelled {count} request(s)",
                          grace=grace, count=left)
        else:
            self.log.info("drained {instance_id}; disconnecting",
                          instance_id=self.instance.instance_id)
        await DeferredList([client.stop() for client in self.clients])
        if self.request_log is not None:
            self.request_log.close()


#: The delay before dialling a router again after its N-th HELLO rejection
#: in a row (N from 0): 1 s, 2 s, 4 s ... then a minute.
_REJECTION_BACKOFF = backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0,
                                   jitter=lambda: 0.0)


def _describe_router(transport: str, address: str) -> str:
    described = address if address.startswith(transport + ":") else f"{transport}:{address}"
    return redact_text(described)


class _TrackedSession(RouterSession):
    """
    A session that keeps L{MicroserviceService.sessions} current.
    """

    def __init__(self, owner: MicroserviceService, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connectionOpened(self, sender: IFrameSender) -> None:
        self.max_concurrent_requests = self._owner.config.max_concurrent_requests
        self._owner.sessions.append(self)
        if self._owner.draining:
            self.status = InstanceHealthStatus.DRAINING
        super().connectionOpened(sender)
        if self.dispatcher is not None:
            self.dispatcher.request_log = self._owner.request_log  # (access log)

    def connectionClosed(self, reason: str) -> None:
        if self in self._owner.sessions:
            self._owner.sessions.remove(self)
        super().connectionClosed(reason)
