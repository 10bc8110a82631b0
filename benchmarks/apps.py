"""
Microservices for the benchmarks: the same tiny handler at four versions,
so one gateway can route to the instance on a chosen transport with
C{X-Stella-Version}.
"""

from stellarouter.microservice import Microservice, RawRequestContext, RawResponse


def build(version: str) -> Microservice:
    app = Microservice("bench", version)

    @app.endpoint("GET", "/ping", timeout=10.0)
    def ping(ctx: RawRequestContext) -> RawResponse:
        return RawResponse.text("pong")

    return app


tcp = build("1.0.0")
tls = build("1.0.1")
udp = build("1.0.2")
rabbitmq = build("1.0.3")
