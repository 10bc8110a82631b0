#!/usr/bin/env python3
"""
Expensive registrations (issue 18, item 4), loopback only, from raw sockets:

 1. ten HELLOs of 28,000 endpoints each (just under 1 MiB, the terse JSON a
    hostile peer would write), one connection each: how long the gateway
    takes to answer each, whether it accepted, and its RSS afterwards;
 2. C{GET /ping} throughput (wrk -c16) to instance C{bench} 1.0.0 over TCP,
    alone and then with C{--silent} more registrations of the same endpoint
    that never heartbeat (UNHEALTHY after 2 s; kept for the measurement by a
    long C{close_unhealthy_after}).

    .venv/bin/python benchmarks/silent_registrations.py [--silent 1000] [--seconds 5]
        [--legacy-config]   # for a gateway without the registration settings

Needs wrk (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from stellarouter.common.enums import FrameType  # noqa: E402
from stellarouter.common.frames import FrameDecoder, encode_frame  # noqa: E402
from stellarouter.common.ids import new_correlation_id  # noqa: E402
from stellarouter.common.models import Frame  # noqa: E402
from stellarouter.common.payloads import decode_hello_ack  # noqa: E402
from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

from benchmarks.procstat import rss_mib  # noqa: E402

from benchmarks.udp_flood import wrk  # noqa: E402


def hello(instance_id: str, service: str, paths: List[str]) -> bytes:
    payload = json.dumps({
        "instance": {"instance_id": instance_id, "service_name": service, "version": "1.0.0",
                     "region": "eu1"},
        "endpoints": [{"method": "GET", "path": p} for p in paths],
    }, separators=(",", ":")).encode()
    return encode_frame(Frame(FrameType.HELLO, new_correlation_id(), payload))


def huge_hellos(port: int, count: int) -> List[str]:
    results = []
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sockets.append(sock)
        frame = hello(f"huge-{n}", f"huge{n}", [f"/h{n}x{i}" for i in range(28000)])
        started = time.monotonic()
        sock.sendall(frame)
        decoder = FrameDecoder()
        frames: List[Frame] = []
        while not frames:
            data = sock.recv(65536)
            if not data:
                break
            frames = decoder.feed(data)
        took = time.monotonic() - started
        ack = decode_hello_ack(frames[0].payload) if frames else None
        results.append(f"{len(frame)} bytes: {took * 1000:.0f} ms, "
                       f"{'accepted' if ack and ack.accepted else 'refused'}")
    for sock in sockets:
        sock.close()
    return results


def silent(port: int, count: int) -> List[socket.socket]:
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(hello(f"silent-{n}", "bench", ["/ping"]))
        sockets.append(sock)
    return sockets


async def measure(count: int, seconds: int, legacy: bool) -> None:
    extra = "health: {degraded_after: 1, unhealthy_after: 2, sweep_interval: 0.5}\n"
    if not legacy:
        extra = ("health: {degraded_after: 1, unhealthy_after: 2, sweep_interval: 0.5, "
                 "close_unhealthy_after: 3600}\n"
                 "registration: {max_connections_per_peer_address: 100000}\n")
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        try:
            gateway = await deployment.start_gateway(node_id="gw-reg", extra=extra)
            pid = gateway.transport.pid  # type: ignore[attr-defined]
            port = gateway.transport_port
            print(f"gateway RSS at start: {rss_mib(pid):.0f} MiB")
            for line in await deferToThread(huge_hellos, port, 10):
                print("HELLO of 28,000 endpoints:", line)
            print(f"gateway RSS after ten of them: {rss_mib(pid):.0f} MiB")
            await deployment.start_microservice("benchmarks.apps:tcp", "bench-tcp")
            url = deployment.base_url + "/ping"
            alone = await deferToThread(wrk, url, "1.0.0", seconds, 16)
            held = await deferToThread(silent, port, count)
            await gateway.wait_for(rf"silent-{count - 1} .*-> unhealthy", reactor,
                                   timeout=60)
            crowded = await deferToThread(wrk, url, "1.0.0", seconds, 16)
            print(f"GET /ping alone: {alone['rps']:.0f} req/s p99 {alone['p99_us'] / 1000:.1f} ms")
            print(f"GET /ping with {count} UNHEALTHY registrations of it: {crowded['rps']:.0f} "
                  f"req/s p99 {crowded['p99_us'] / 1000:.1f} ms; gateway RSS "
                  f"{rss_mib(pid):.0f} MiB")
            print(f"SUMMARY ratio {crowded['rps'] / alone['rps']:.2f}")
            for sock in held:
                sock.close()
        finally:
            await deployment.stop_all("TERM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--silent", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--legacy-config", action="store_true")
    args = parser.parse_args()
    task.react(lambda _r: Deferred.fromCoroutine(
        measure(args.silent, args.seconds, args.legacy_config)))


if __name__ == "__main__":
    main()
