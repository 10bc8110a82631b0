#!/usr/bin/env python3
"""
Gateway memory at scale: 1,000 connected instances (TCP) announcing 10,000
distinct endpoints in all (100 services x 100 endpoints, 10 instances
each), then an idle soak with heartbeats and pings, sampling the gateway's
RSS.  The instances run in this process (the SDK, one connection each).

    .venv/bin/python benchmarks/scale.py [--instances 1000] [--soak-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from stellarouter.common.enums import TransportType  # noqa: E402
from stellarouter.config.microservice import MicroserviceConfig, RouterEndpointConfig  # noqa: E402
from stellarouter.microservice import Microservice, RawResponse  # noqa: E402
from stellarouter.microservice.service import MicroserviceService  # noqa: E402
from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

from benchmarks.procstat import rss_mib  # noqa: E402


def app(index: int, endpoints: int) -> Microservice:
    service = Microservice(f"svc{index}", "1.0.0")
    for e in range(endpoints):
        path = f"/svc{index}/things{e}/{{id}}" if e % 2 else f"/svc{index}/items{e}"
        service.endpoint("GET", path)(lambda ctx: RawResponse.text("ok"))
    return service


async def measure(instances: int, services: int, soak: float) -> None:
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        try:
            gateway = await deployment.start_gateway(node_id="gw-scale")
            pid = gateway.transport.pid  # type: ignore[union-attr]
            idle = rss_mib(pid)
            apps = [app(i, 10_000 // services) for i in range(services)]
            address = f"tcp:host=127.0.0.1:port={deployment.transport_port}"
            started = time.perf_counter()
            clients = []
            for i in range(instances):
                config = MicroserviceConfig(
                    "eu1", (RouterEndpointConfig(TransportType.TCP, address),),
                    instance_id=f"scale-{i}")
                service = MicroserviceService(apps[i % services], config, reactor)
                service.startService()
                clients.append(service)
            while sum(1 for c in clients for s in c.sessions if s.accepted) < instances:
                await task.deferLater(reactor, 0.2, lambda: None)
            took = time.perf_counter() - started
            loaded = rss_mib(pid)
            print(f"{instances} instances, {services * (10_000 // services)} endpoints registered "
                  f"in {took:.1f}s; gateway RSS {idle:.1f} MiB idle -> {loaded:.1f} MiB "
                  f"(target < 200 MiB)")
            samples = []
            end = time.monotonic() + soak
            while time.monotonic() < end:
                await task.deferLater(reactor, min(5.0, soak), lambda: None)
                samples.append(rss_mib(pid))
            if samples:
                print(f"idle soak {soak:.0f}s with heartbeats: RSS first {samples[0]:.1f} MiB, "
                      f"last {samples[-1]:.1f} MiB, max {max(samples):.1f} MiB, growth "
                      f"{samples[-1] - samples[0]:+.1f} MiB")
            for c in clients:
                c.config = c.config.__class__(c.config.region, c.config.routers,
                                              drain_grace_period=0)
            await Deferred.fromCoroutine(_stop(clients))
        finally:
            await deployment.stop_all("TERM")


async def _stop(clients: list) -> None:
    from twisted.internet.defer import DeferredList

    await DeferredList([c.stopService() for c in clients])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    args = parser.parse_args()
    task.react(lambda _r: Deferred.fromCoroutine(
        measure(args.instances, args.services, args.soak_seconds)))


if __name__ == "__main__":
    main()
