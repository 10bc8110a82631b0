"""
Microservices for the benchmarks:

 - C{tcp}, C{tls}, C{udp}, C{rabbitmq}: the same tiny C{GET /ping} handler at
   four versions, so one gateway can route to the instance on a chosen
   transport with C{X-Stella-Version};
 - C{echo}: service C{bench-echo}, C{POST /echo} answers the request body
   as C{application/octet-stream} (the same handler as
   C{benchmarks/direct_klein.py}'s; run it with
   C{twistd stella-micro --config benchmarks/echo.yaml}).
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


def build_echo() -> Microservice:
    app = Microservice("bench-echo", "1.0.0")

    @app.endpoint("POST", "/echo", timeout=10.0)
    def echo(ctx: RawRequestContext) -> RawResponse:
        return RawResponse(200, (("Content-Type", "application/octet-stream"),), ctx.body)

    return app


echo = build_echo()


def build_faults() -> Microservice:
    """
    Service C{faults} for C{benchmarks/faults.py}: C{GET /ping} (2 s
    timeout, so a frozen instance's requests end quickly) answers the
    instance id; C{POST /charge} appends one line to the file named by
    C{FAULTS_LEDGER} (if set) and answers it, so a run can count executions.
    """
    import os

    app = Microservice("faults", "1.0.0")
    ledger = os.environ.get("FAULTS_LEDGER")

    @app.endpoint("GET", "/ping", timeout=2.0)
    def ping(ctx: RawRequestContext) -> RawResponse:
        return RawResponse.text(ctx.instance.instance_id if ctx.instance else "?")

    @app.endpoint("POST", "/charge", timeout=2.0)
    def charge(ctx: RawRequestContext) -> RawResponse:
        if ledger:
            with open(ledger, "a", encoding="utf-8") as f:
                f.write(f"{ctx.correlation_id} {ctx.instance.instance_id if ctx.instance else '?'}\n")
        return RawResponse.text("charged")

    return app


faults = build_faults()
