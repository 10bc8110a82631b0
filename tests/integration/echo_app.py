"""
A microservice that answers what it was given (headers, claims, correlation
id), for integration tests of what the gateway forwards.

    twistd -n stella-micro --config echo.yaml --app tests.integration.echo_app:service
"""

from __future__ import annotations

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse

service = Microservice("echo", "1.0.0")


def _echo(ctx: RawRequestContext) -> RawResponse:
    return RawResponse.json({"headers": [list(pair) for pair in ctx.headers],
                             "claims": dict(ctx.claims),
                             "correlation_id": ctx.correlation_id})


service.endpoint("GET", "/echo")(_echo)
service.endpoint("GET", "/echo/private")(_echo)
