#!/usr/bin/env python3
"""
Cancellation latency over TCP: the time from an HTTP client closing its
connection to the microservice handler observing CancelledError.

Starts the gateway and the Slowpoke example as twistd processes on free
loopback ports, then N times: sends GET /slow?seconds=60 on a fresh
connection, waits until the handler logs that it started, closes the client
connection (time t0), and waits for the handler's "cancelled at T" line.
Prints median, p90, p99 and max of T - t0.

    .venv/bin/python benchmarks/cancel_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import List

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stellarouter.testing.processes import ProcessDeployment  # noqa: E402


class OneRequest(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"GET /slow?seconds=60 HTTP/1.1\r\nHost: bench\r\n\r\n")


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def measure(runs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        try:
            await deployment.start_gateway(node_id="gw-bench")
            slowpoke = await deployment.start_microservice("examples.slowpoke:service", "sp-bench")
            host, port = deployment.base_url[len("http://"):].rsplit(":", 1)
            latencies: List[float] = []
            for _ in range(runs):
                seen = len(slowpoke.lines)
                proto = await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)),
                                              OneRequest())
                started = await slowpoke.wait_for(r"slow request ([0-9a-f-]{36}) started",
                                                  reactor, since=seen)
                cid = started.group(1)
                t0 = time.time()
                proto.transport.loseConnection()
                cancelled = await slowpoke.wait_for(
                    rf"slow request {cid} cancelled at ([0-9.]+): ClientDisconnected", reactor)
                latencies.append((float(cancelled.group(1)) - t0) * 1000)
            print(f"cancellation latency over TCP, client close -> handler CancelledError, "
                  f"{runs} runs (ms): median {statistics.median(latencies):.2f}  "
                  f"p90 {percentile(latencies, 90):.2f}  p99 {percentile(latencies, 99):.2f}  "
                  f"max {max(latencies):.2f}")
        finally:
            for process in deployment.processes:
                process.signal("TERM")
            for process in deployment.processes:
                await process.ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    task.react(lambda _reactor: Deferred.fromCoroutine(measure(args.runs)))


if __name__ == "__main__":
    main()
