"""
The attempts of one proxied request (issue 24): the edge hands its REQUEST
to L{RetryDispatcher.start}, which sends it and stands between the
connection and the HTTP response writer as the request's
L{IResponseSink}.  When an attempt ends without an answer the client can be
given, it asks the pure policies (L{stellarouter.gateway.retry}) whether the
request may go to another instance of the same version, and tells outlier
ejection (L{stellarouter.gateway.outliers}) how each instance fared.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import CancelReason, TransportType
from ..common.ids import CorrelationId
from ..common.interfaces import IResponseSink, IRoutingPlugin
from ..common.models import RoutingContext
from ..common.payloads import RequestMessage, ResponseMessage
from .errors import (
    DispatchError,
    GatewayTimeout,
    PipelineError,
    UpstreamLost,
    UpstreamNotStarted,
    UpstreamProtocolError,
)
from .outliers import OutlierPolicy
from .retry import (
    ATTEMPTS_HEADER,
    NOT_STARTED_HEADER,
    AttemptOutcome,
    RetryBudget,
    may_retry,
    retry_idempotent,
)
from .state import RoutingState

_NOT_STARTED = NOT_STARTED_HEADER.lower()
#: Failures that count against an instance (gateway-side: no answer came).
_INSTANCE_FAILURES = (UpstreamLost, UpstreamProtocolError, GatewayTimeout)


def outcome_of(error: DispatchError) -> AttemptOutcome:
    """
    How an attempt that failed with C{error} ended.
    """
    if isinstance(error, UpstreamNotStarted):
        return AttemptOutcome.NOT_STARTED
    if isinstance(error, UpstreamLost):
        return AttemptOutcome.LOST
    if isinstance(error, GatewayTimeout):
        return AttemptOutcome.TIMED_OUT
    return AttemptOutcome.OTHER


def not_started(response: ResponseMessage) -> bool:
    """
    Whether C{response} is a microservice's "I did not start it" (a 503
    with L{NOT_STARTED_HEADER}).
    """
    return response.status == 503 and any(
        name.lower() == _NOT_STARTED for name, _ in response.headers)


class RetryDispatcher:
    """
    One per gateway: sends each proxied request's attempts, holds the retry
    budget, records how instances fare and ejects outliers (ending each
    ejection on the injected clock).

    @ivar enabled: retries are on (C{retries.enabled}); ejection is on
        whatever this says.
    @ivar retried: requests sent to a second instance (metrics).
    @ivar not_retried: requests that could have been retried but found no
        other instance or no budget (metrics).
    """

    log = Logger()

    def __init__(self, routing_state: RoutingState, clock: IReactorTime,
                 budget: Optional[RetryBudget] = None, enabled: bool = True) -> None:
        self.routing_state = routing_state
        self.clock = clock
        self.budget = budget if budget is not None else RetryBudget()
        self.enabled = enabled
        self.retried = 0
        self.not_retried = 0
        self._restores: Dict[str, IDelayedCall] = {}

    def metrics(self) -> Dict[str, int]:
        """
        The counters of retries and ejections since start (for a metrics
        endpoint): requests retried, retries the policy allowed but that
        found no instance or budget, retries the budget granted and refused,
        ejections, and ejections the share cap prevented.
        """
        outliers = self.routing_state.outliers
        return {"retried": self.retried, "not_retried": self.not_retried,
                "budget_granted": self.budget.granted, "budget_refused": self.budget.refused,
                "ejections": outliers.ejections_total,
                "ejections_prevented": outliers.ejections_prevented}

    def configure(self, enabled: bool, budget: RetryBudget, outliers: OutlierPolicy) -> None:
        """
        Put reloaded settings in force (a new budget starts empty; the
        failure counts and ejections in progress are kept).
        """
        self.enabled = enabled
        if (budget.ratio, budget.window, budget.minimum) != (
                self.budget.ratio, self.budget.window, self.budget.minimum):
            self.budget = budget
        self.routing_state.outliers.policy = outliers

    def start(self, request: Any, plan: Any, message: RequestMessage, sink: IResponseSink,
              cid: CorrelationId, routing: IRoutingPlugin, region: str, overrides: Any,
              udp_retries: int = 0) -> "Attempts":
        """
        Send the first attempt of a request to C{plan.connection}.

        @param plan: the edge's plan (method, path, template, endpoint,
            deadline, connection...).
        @param sink: the HTTP response writer.
        @param routing: the routing plugin that chose the first instance (it
            chooses the second).
        @param overrides: the gateway's endpoint overrides (their
            C{idempotent}).
        @param udp_retries: resends of an idempotent REQUEST over UDP.
        @raise PipelineError: the first REQUEST could not be sent (nothing
            was).
        """
        attempts = Attempts(self, request, plan, message, sink, cid, routing, region,
                            overrides, udp_retries)
        self.budget.request(self.clock.seconds())
        attempts.send(plan.connection, plan.timeout)
        return attempts

    # -- outlier ejection ----------------------------------------------------

    def answered(self, connection: Any) -> None:
        """
        C{connection}'s instance answered a request.
        """
        self.routing_state.outliers.success(connection.state.connection_id)

    def instance_failed(self, connection: Any, error: DispatchError) -> None:
        """
        A request got no answer from C{connection}'s instance: count it, and
        eject the instance if that makes too many in a row.
        """
        state = self.routing_state
        if (not isinstance(error, _INSTANCE_FAILURES) or isinstance(error, UpstreamNotStarted)
                or not state.is_registered(connection)):
            # (A closed connection is out of routing already.)
            return
        instance = connection.state.instance
        key = connection.state.connection_id
        now = self.clock.seconds()
        timeout = isinstance(error, GatewayTimeout)
        outliers = state.outliers
        # (The count is reset by the ejection: read it before.)
        in_a_row = outliers.state(key).consecutive_failures + 1
        total, ejected = state.service_instances(instance.service_name)
        until = outliers.failure(key, now, total, ejected, timeout=timeout)
        if until is None:
            return
        state.eject(connection)
        record = state.ejection_state(connection)
        if timeout and in_a_row < outliers.policy.consecutive_failures:
            why = (f"at a gateway timeout (outlier_detection.eject_on_timeout; "
                   f"{in_a_row} failure(s) in a row)")
        else:
            why = f"after {in_a_row} consecutive failure(s)"
        self.log.warn(
            "instance {instance_id} ({service} {version}) ejected for {seconds:g}s {why} "
            "(last: {error}); ejection {ejections}",
            instance_id=instance.instance_id, service=instance.service_name,
            version=instance.version, seconds=until - now, why=why, error=error.detail,
            ejections=record.ejections)
        self._restores[key] = self.clock.callLater(until - now, self._restore, connection)

    def _restore(self, connection: Any) -> None:
        key = connection.state.connection_id
        self._restores.pop(key, None)
        if getattr(connection, "is_closed", False):
            # Gone while ejected: nothing to remember.
            self.routing_state.outliers.forget(key)
            self.routing_state.restore(connection)
            return
        self.routing_state.outliers.restore(key, self.clock.seconds())
        self.routing_state.restore(connection)
        self.log.info("instance {instance_id} back in routing after its ejection",
                      instance_id=connection.state.instance.instance_id)

    def stop(self) -> None:
        """
        Cancel the timers ending ejections (the gateway stops).
        """
        calls, self._restores = self._restores, {}
        for call in calls.values():
            if call.active():
                call.cancel()

    # -- retries ---------------------------------------------------------

    def another_instance(self, attempts: "Attempts") -> Any:
        """
        The connection the routing plugin chooses for C{attempts}' request
        among the instances of the same version not tried yet, or C{None}.
        """
        plan = attempts.plan
        first, last = plan.connection, attempts.connection
        version = first.state.instance.version
        candidates = [c for c in self.routing_state.connectionsFor(
                          plan.endpoint.service_name, plan.method, plan.template)
                      if c is not first and c is not last
                      and c.state.instance.version == version]
        if not candidates:
            return None
        body = attempts.message.body if attempts.message is not None else b""
        context = RoutingContext(plan.method, plan.path, {}, (plan.method, plan.template),
                                 plan.endpoint.service_name, plan.path_params, version,
                                 attempts.region, plan.deadline, len(body))
        decision = attempts.routing.choose(context, candidates, self.clock.seconds())
        return decision.connection if decision is not None else None


@implementer(IResponseSink)
class Attempts:
    """
    One proxied request's attempts: the sink its connection reports to,
    passing the outcome on to the HTTP response writer unless the request
    goes to another instance instead.

    @ivar connection: the connection of the current attempt.
    @ivar count: attempts sent (at most two: the first went to
        C{plan.connection}, a second to C{connection}).
    """

    __slots__ = ("dispatcher", "request", "plan", "message", "sink", "cid", "routing",
                 "region", "overrides", "udp_retries", "connection", "count", "started")

    log = Logger()

    def __init__(self, dispatcher: RetryDispatcher, request: Any, plan: Any,
                 message: RequestMessage, sink: IResponseSink, cid: CorrelationId,
                 routing: IRoutingPlugin, region: str, overrides: Any,
                 udp_retries: int) -> None:
        self.dispatcher = dispatcher
        self.request = request
        self.plan = plan
        #: Kept for a retry until the first answer (then dropped).
        self.message: Optional[RequestMessage] = message
        self.sink = sink
        self.cid = cid
        self.routing = routing
        self.region = region
        self.overrides = overrides
        self.udp_retries = udp_retries
        self.connection: Any = None
        self.count = 0
        #: A RESPONSE was passed on: the request is committed.
        self.started = False

    def send(self, connection: Any, timeout: Optional[float]) -> None:
        """
        Send an attempt to C{connection}.

        @raise PipelineError: it could not be sent (the message does not
            fit the connection).
        """
        assert self.message is not None
        self.connection = connection
        self.count += 1
        if getattr(connection, "is_closed", False):
            # Its REQUEST cannot be written: provably not run.
            self.failed(UpstreamNotStarted("the connection to the instance was closed "
                                           "before the request was sent"))
            return
        retries = 0
        if (self.udp_retries and connection.state.transport_type is TransportType.UDP
                and self.plan.endpoint.is_idempotent):
            retries = self.udp_retries
        connection.send_request(self.message, timeout, self, self.cid, retries=retries)

    def cancel(self, cid: CorrelationId, reason: CancelReason) -> bool:
        """
        The client left: cancel the current attempt (what the edge calls on
        the connection otherwise).
        """
        self.message = None
        if self.connection is None:
            return False
        return bool(self.connection.cancel(cid, reason))

    def _retry(self, outcome: AttemptOutcome) -> bool:
        """
        Send the request to another instance if it may go and one can take
        it.

        @return: whether it was sent.
        """
        dispatcher = self.dispatcher
        if self.message is None or not dispatcher.enabled or getattr(
                self.sink, "client_gone", False):
            return False
        plan = self.plan
        idempotent = False
        if outcome is not AttemptOutcome.NOT_STARTED:
            configured = self.overrides.idempotent(plan.endpoint) if self.overrides else None
            idempotent = retry_idempotent(plan.endpoint, configured)
        if not may_retry(outcome, idempotent, plan.endpoint.supports_streaming, self.count):
            return False
        now = dispatcher.clock.seconds()
        remaining = plan.deadline - now
        target = dispatcher.another_instance(self) if remaining > 0 else None
        if target is None or not dispatcher.budget.spend(now):
            dispatcher.not_retried += 1
            self.log.info("request {cid} ({outcome} on {instance}) not retried: {why}",
                          cid=self.cid, outcome=outcome.value,
                          instance=self.connection.state.instance.instance_id,
                          why="no other instance of the same version" if target is None
                          else "the retry budget is spent")
            return False
        previous = self.connection
        self.log.info("request {cid}: {outcome} on instance {old}; retrying on {new}",
                      cid=self.cid, outcome=outcome.value,
                      old=previous.state.instance.instance_id,
                      new=target.state.instance.instance_id)
        if hasattr(self.sink, "connection"):
            # The response writer grants stream credit on the new connection.
            self.sink.connection = target
        try:
            self.send(target, remaining)
        except PipelineError as e:
            self.log.info("request {cid} could not be sent to {new}: {error}", cid=self.cid,
                          new=target.state.instance.instance_id, error=e.detail)
            self.connection = previous
            if hasattr(self.sink, "connection"):
                self.sink.connection = previous
            return False
        dispatcher.retried += 1
        return True

    def _committed(self) -> None:
        """
        The outcome goes to the client: drop the kept body, and say how many
        attempts it took when more than one.
        """
        self.message = None
        self.started = True
        if self.count > 1:
            value = str(self.count).encode()
            add = getattr(self.request, "add_own_header", None)
            if add is not None:
                add(ATTEMPTS_HEADER, value)
            else:
                self.request.setHeader(ATTEMPTS_HEADER, value)

    # -- IResponseSink -------------------------------------------------------

    def responseStarted(self, response: ResponseMessage) -> None:
        if not self.started and not_started(response):
            if self._retry(AttemptOutcome.NOT_STARTED):
                return
            response = response._replace(headers=[
                (n, v) for n, v in response.headers if n.lower() != _NOT_STARTED])
        else:
            self.dispatcher.answered(self.connection)
        self._committed()
        self.sink.responseStarted(response)

    def bodyChunk(self, data: bytes) -> None:
        self.sink.bodyChunk(data)

    def responseFinished(self) -> None:
        self.sink.responseFinished()

    def failed(self, error: DispatchError) -> None:
        self.dispatcher.instance_failed(self.connection, error)
        if not self.started and self._retry(outcome_of(error)):
            return
        self._committed()
        self.sink.failed(error)
