"""
Whoami: answers which instance served the request, to see routing at work
(regions, versions, failover, drain).

    twistd -n stella-micro --config my.yaml --app examples.whoami:service

C{GET /whoami} returns C{{"instance_id", "region", "version"}}; the query
parameter C{delay} (seconds) makes it wait first.  C{service} is version
1.0.0 and C{service_v1_1} the same endpoints as 1.1.0.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse


def build(version: str) -> Microservice:
    """
    The whoami service at C{version}.
    """
    app = Microservice("whoami", version)

    @app.endpoint("GET", "/whoami", timeout=10.0)
    async def whoami(ctx: RawRequestContext) -> RawResponse:
        delay = float(ctx.query_params.get("delay", ["0"])[0])
        if delay > 0:
            from twisted.internet import reactor

            await deferLater(reactor, delay, lambda: None)
        instance: Any = ctx.instance
        return RawResponse.json({
            "instance_id": instance.instance_id if instance else None,
            "region": instance.region if instance else None,
            "version": app.version,
        })

    return app


service = build("1.0.0")
service_v1_1 = build("1.1.0")
