#!/usr/bin/env python3
"""
Issue 23: the cost of the gateway's OpenAPI document and of endpoint
descriptions in HELLO, in one process (no sockets, no reactor):

 - C{GET /openapi.json} with 1,000 described endpoints (10 services of 100,
   typed request and response bodies), through the gateway's HTTP site in
   memory: cold (the set of HELLOs just changed: the document is built and
   serialized) and conditional (C{If-None-Match} with its ETag: 304);
 - the gateway handling the HELLOs of 100 instances (decode, shape check,
   registration, answer), with the descriptions and without, interleaved
   rounds; and the SDK building one HELLO with and without.

Times are CPU seconds of this process (C{time.process_time}): the shared
machines run several loads at once, and wall-clock time mostly measures them.

    .venv/bin/python benchmarks/openapi.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stellarouter.common.enums import FrameType, TransportType  # noqa: E402
from stellarouter.common.ids import new_correlation_id  # noqa: E402
from stellarouter.common.models import Frame, InstanceDescriptor  # noqa: E402
from stellarouter.common.payloads import Hello, encode_hello  # noqa: E402
from stellarouter.config.openapi import OpenApiConfig  # noqa: E402
from stellarouter.microservice import ClaimRequirement, Microservice  # noqa: E402
from stellarouter.microservice.descriptions import (  # noqa: E402
    describe,
    fitting_hello,
    schemas_for,
    service_schemas,
)
from stellarouter.testing.harness import InMemoryDeployment  # noqa: E402
from stellarouter.testing.http import InMemoryHttpClient  # noqa: E402


@dataclass
class Address:
    """A postal address."""

    street: str
    city: str
    country: str


@dataclass
class Customer:
    """A customer, with addresses."""

    id: str
    name: str
    addresses: List[Address]
    tags: List[str]


@dataclass
class NewOrder:
    """An order to create."""

    customer: str
    lines: List[str]
    note: Optional[str] = None


@dataclass
class Order:
    """A stored order."""

    id: str
    customer: Customer
    lines: List[str]
    total_cents: int
    status: str = "open"


def make_service(name: str, endpoints: int) -> Microservice:
    """
    A service of C{endpoints} typed endpoints (half reads, half writes with
    a body; a tenth with claims), each with a docstring.
    """
    app = Microservice(name, "1.0.0")
    for n in range(endpoints):
        def handler(ctx: Any, payload: Any) -> Order:
            """
            Create or read an order.

            The order's customer is embedded, with its addresses.
            """
            raise NotImplementedError

        claims = [ClaimRequirement("scope", f"{name}:write")] if n % 10 == 0 else []
        if n % 2:
            app.json("POST", f"/{name}/orders{n}", request_type=NewOrder, status=201,
                     claims=claims, tags=["orders"])(handler)
        else:
            app.json("GET", f"/{name}/orders{n}/{{id}}", claims=claims,
                     tags=["orders"])(handler)
    return app


def best_of(function: Callable[[], Any], repeat: int) -> float:
    """The median of C{repeat} timings of C{function}, seconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return statistics.median(times)


def openapi_get(rounds: int) -> None:
    deployment = InMemoryDeployment(openapi=OpenApiConfig(expose="public"))
    for s in range(10):
        deployment.add(make_service(f"svc{s}", 100), instance_id=f"svc{s}-1")
    state = deployment.gateway.routing_state
    assert sum(len(c.state.endpoints) for c in state.connections()) == 1000

    def get(headers: Any = (), path: str = "/openapi.json") -> Tuple[int, int]:
        client = InMemoryHttpClient(deployment.gateway.site)
        client.send("GET", path, b"", headers)
        response = client.response()
        assert response is not None
        client.disconnect()
        return response.status, len(response.body)

    status, size = get()
    assert status == 200
    etag = deployment.request("GET", "/openapi.json").header("ETag")
    assert get([("If-None-Match", etag)])[0] == 304

    def cold() -> None:
        state.generation += 1  # as a HELLO arriving or a connection going does
        get()

    catalog = deployment.gateway.openapi
    builds = catalog.builds
    cold_s = best_of(cold, rounds * 3)
    assert catalog.builds == builds + rounds * 3
    warm_s = best_of(lambda: get(), rounds * 30)
    conditional_s = best_of(lambda: get([("If-None-Match", etag)]), rounds * 30)
    ping_s = best_of(lambda: get(path="/health/live"), rounds * 30)
    print(f"GET /openapi.json, 1,000 endpoints in 10 services, document {size:,} bytes "
          f"(median of {rounds * 3} / {rounds * 30}):")
    print(f"  cold (HELLOs changed: build + serialize + HTTP): {cold_s * 1e3:8.2f} ms")
    print(f"  warm (kept document, 200):                       {warm_s * 1e3:8.2f} ms")
    print(f"  If-None-Match -> 304:                            {conditional_s * 1e3:8.2f} ms")
    print(f"  for scale, GET /health/live through the same site: {ping_s * 1e3:6.2f} ms")
    deployment.stop()


class _Sender:
    peer = "bench"
    peer_identity = ()
    transport_type = TransportType.INMEMORY

    def sendFrame(self, frame: Frame) -> None:
        pass

    def close(self, reason: str = "") -> None:
        pass


def hello_handling(rounds: int) -> None:
    app = make_service("billing", 20)
    base = [Hello(InstanceDescriptor(f"billing-{i}", app.name, app.version, "eu1"),
                  app.descriptors()) for i in range(100)]
    schemas = service_schemas(app.descriptors(), app.docs)
    plain = [encode_hello(h) for h in base]
    described = [fitting_hello(h, describe(schemas), 1024 * 1024) for h in base]

    # Only the 100 HELLOs are timed (not the deployment around them):
    # interleaved rounds, median of each.
    results: Dict[str, List[float]] = {"without": [], "with": []}
    for _ in range(rounds * 3):
        for name, payloads in (("without", plain), ("with", described)):
            deployment = InMemoryDeployment(openapi=OpenApiConfig(expose="public"))
            factory = deployment.gateway._receiver_factory(deployment.config.transports[0])
            connections = [factory() for _ in payloads]
            for connection in connections:
                connection.connectionOpened(_Sender())
            frames = [Frame(FrameType.HELLO, new_correlation_id(), p) for p in payloads]
            start = time.process_time()
            for connection, frame in zip(connections, frames):
                connection.frameReceived(frame)
            results[name].append(time.process_time() - start)
            for connection in connections:
                connection.connectionClosed("done")
            deployment.stop()
    without = statistics.median(results["without"])
    with_ = statistics.median(results["with"])
    print(f"gateway handling 100 HELLOs of 20 endpoints (median of {rounds * 3} interleaved "
          f"rounds):")
    print(f"  without descriptions: {without * 1e3:7.2f} ms ({len(plain[0]):,} bytes each)")
    print(f"  with descriptions:    {with_ * 1e3:7.2f} ms ({len(described[0]):,} bytes each)"
          f"  -> {with_ / without:.2f}x")
    sdk_without = best_of(lambda: [encode_hello(h) for h in base], rounds)
    sdk_with = best_of(lambda: [fitting_hello(h, schemas_for(app, app.descriptors()),
                                              1024 * 1024) for h in base], rounds)
    generate = best_of(lambda: service_schemas(app.descriptors(), app.docs), rounds)
    print(f"SDK building those 100 HELLOs: {sdk_without * 1e3:.2f} ms without, "
          f"{sdk_with * 1e3:.2f} ms with descriptions ({sdk_with / sdk_without:.2f}x; the "
          f"descriptions generated once per app: {generate * 1e3:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    openapi_get(args.rounds)
    hello_handling(args.rounds)


if __name__ == "__main__":
    main()
