"""
A microservice for tests/integration/test_retries.py: C{GET /hold} and
C{POST /charge} log when they start (with the instance and correlation id),
append that line to the file named by C{RETRY_LEDGER}, and answer after
C{?seconds=N} (default 1).
"""

from __future__ import annotations

import os

from twisted.internet.task import deferLater
from twisted.logger import Logger

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse

service = Microservice("retrier", "1.0.0")
log = Logger(namespace="retry_app")


async def _hold(ctx: RawRequestContext) -> RawResponse:
    from twisted.internet import reactor

    instance = ctx.instance.instance_id if ctx.instance else "?"
    line = f"started {ctx.method} {ctx.correlation_id} on {instance}"
    ledger = os.environ.get("RETRY_LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    log.info(line.replace("{", "{{").replace("}", "}}"))
    seconds = float(ctx.query_params.get("seconds", ["1"])[0])
    await deferLater(reactor, seconds, lambda: None)
    return RawResponse.text(instance)


service.endpoint("GET", "/hold", timeout=10.0)(_hold)
service.endpoint("POST", "/charge", timeout=10.0)(_hold)
