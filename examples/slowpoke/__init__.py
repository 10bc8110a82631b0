"""
Slowpoke: a microservice whose handlers take their time, to show (and test)
cancellation and deadlines.

    twistd -n stella-micro --config examples/billing/billing.yaml --app examples.slowpoke:service

C{GET /slow?seconds=N} sleeps N seconds (default 10) unless cancelled;
C{GET /slow/timeout} has a 1 s endpoint timeout and sleeps 5 s; both log
when they start and when they are cancelled, with the correlation id and
the reason.
"""

from __future__ import annotations

import time

from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater
from twisted.logger import Logger

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse

service = Microservice("slowpoke", "1.0.0")
log = Logger(namespace="examples.slowpoke")


async def _sleep(ctx: RawRequestContext, seconds: float) -> RawResponse:
    from twisted.internet import reactor

    log.info("slow request {cid} started; sleeping {seconds}s (deadline {deadline})",
             cid=ctx.correlation_id, seconds=seconds, deadline=ctx.deadline)
    try:
        await deferLater(reactor, seconds, lambda: None)
    except CancelledError:
        reason = ctx.cancel_reason.value if ctx.cancel_reason else "connection lost"
        log.info("slow request {cid} cancelled at {at:.6f}: {reason}",
                 cid=ctx.correlation_id, at=time.time(), reason=reason)
        raise
    return RawResponse.text(f"slept {seconds:g}s")


@service.endpoint("GET", "/slow", timeout=30.0)
async def slow(ctx: RawRequestContext) -> RawResponse:
    """
    Sleep C{seconds} (query parameter, default 10) unless cancelled.
    """
    try:
        seconds = float(ctx.query_params.get("seconds", ["10"])[0])
    except ValueError:
        return RawResponse.text("seconds must be a number", status=400)
    return await _sleep(ctx, seconds)


@service.endpoint("GET", "/slow/timeout", timeout=1.0)
async def slow_timeout(ctx: RawRequestContext) -> RawResponse:
    """
    Outlive its own 1 s timeout: the gateway answers 504 and cancels it.
    """
    return await _sleep(ctx, 5.0)
