#!/usr/bin/env python3
"""
Resident memory of the gateway and the microservice under clients that
never read (issue 17, item 6): ROUNDS times, CLIENTS raw sockets each send
C{GET /invoices/N/export?bytes=SIZE} and then read nothing; once both
processes' RSS stops moving, the clients close and the next round starts.

Prints the RSS of both processes before the first round, at the peak of
each round and after each round (clients gone), and the growth after the
last round.  The target (issue 17): both stay under +64 MiB after 9 rounds
of 100 stalled readers.

    .venv/bin/python benchmarks/stalled_readers.py [--rounds 9] [--clients 100]
        [--size 50000000] [--gateway-yaml '...'] [--micro-yaml '...']
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from typing import Any, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

from benchmarks.procstat import rss_mib  # noqa: E402


def stalled_client(port: int, path: str) -> socket.socket:
    """
    A client that sends one request and never reads (a small receive
    buffer, so the kernel holds little of the answer for it).
    """
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    return s


#: The highest RSS seen of each process (by pid), sampled while settling.
PEAKS: dict = {}


async def settle(pids: List[int], quiet: float = 3.0, limit: float = 30.0) -> List[float]:
    """
    Wait until no process's RSS moved by more than 1 MiB for C{quiet}
    seconds (at most C{limit}); return the last samples.
    """
    start = last_move = time.monotonic()
    previous = [rss_mib(p) for p in pids]
    while time.monotonic() - start < limit:
        d: Deferred = Deferred()
        reactor.callLater(0.1, d.callback, None)
        await d
        now = [rss_mib(p) for p in pids]
        for p, value in zip(pids, now):
            PEAKS[p] = max(PEAKS.get(p, 0.0), value)
        if any(abs(a - b) > 1.0 for a, b in zip(now, previous)):
            last_move, previous = time.monotonic(), now
        elif time.monotonic() - last_move >= quiet:
            return now
    return [rss_mib(p) for p in pids]


async def measure(rounds: int, clients: int, size: int, gateway_yaml: str,
                  micro_yaml: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        try:
            gateway = await deployment.start_gateway(node_id="gw-stalled", extra=gateway_yaml)
            micro = await deployment.start_microservice("examples.billing:service",
                                                        "billing-stalled", extra=micro_yaml)
            pids = [gateway.transport.pid, micro.transport.pid]  # type: ignore[union-attr]
            port = int(deployment.base_url.rsplit(":", 1)[1])
            base = await settle(pids)
            print(f"{clients} clients x {rounds} rounds, export of {size} bytes each")
            print(f"before:        gateway {base[0]:6.1f} MiB | microservice {base[1]:6.1f} MiB")
            after = base
            for n in range(1, rounds + 1):
                socks = [stalled_client(port, f"/invoices/{i}/export?bytes={size}")
                         for i in range(clients)]
                held = await settle(pids)
                for s in socks:
                    s.close()
                after = await settle(pids)
                print(f"round {n}: held gateway {held[0]:6.1f} MiB | microservice "
                      f"{held[1]:6.1f} MiB; after gateway {after[0]:6.1f} MiB | "
                      f"microservice {after[1]:6.1f} MiB")
            cancels = sum("CANCEL sent" in line for line in gateway.lines)
            print(f"gateway log: {cancels} CANCEL(s) for clients gone; last lines:")
            for line in gateway.lines[-5:]:
                print("   ", line[:200])
            print(f"peak: gateway {PEAKS[pids[0]]:6.1f} MiB | microservice "
                  f"{PEAKS[pids[1]]:6.1f} MiB")
            print(f"growth after {rounds} rounds: gateway {after[0] - base[0]:+.1f} MiB | "
                  f"microservice {after[1] - base[1]:+.1f} MiB")
        finally:
            await deployment.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--gateway-yaml", default="", help="more gateway configuration")
    parser.add_argument("--micro-yaml", default="", help="more microservice configuration")
    args = parser.parse_args()

    def run() -> Any:
        d = Deferred.fromCoroutine(measure(args.rounds, args.clients, args.size,
                                           args.gateway_yaml, args.micro_yaml))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()


if __name__ == "__main__":
    main()
