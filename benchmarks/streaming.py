#!/usr/bin/env python3
"""
Streaming through the gateway over TCP vs the same bytes through a plain
twisted.web server (one run, same machine):

 - upload and download MB/s (default 1 GiB each) and the gateway's peak
   resident memory growth during each;
 - p50 / p99 latency of GET /ping on the same microservice connection,
   idle and while a download is stalled by a client that reads nothing.

    .venv/bin/python benchmarks/streaming.py [--size-mib 1024] [--pings 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.protocol import ProcessProtocol, Protocol  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer  # noqa: E402
from zope.interface import implementer  # noqa: E402

from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

BLOCK = bytes(range(256)) * 256


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRSS:
    def __init__(self, pid: int) -> None:
        self.pid, self.base, self.peak = pid, rss_kib(pid), 0
        self.loop = task.LoopingCall(self.sample)
        self.loop.start(0.05)

    def sample(self) -> None:
        self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self.loop.stop()
        self.sample()
        return self.peak - self.base


@implementer(IBodyProducer)
class Producer:
    length = UNKNOWN_LENGTH

    def __init__(self, size: int) -> None:
        self.left, self.paused, self.consumer = size, False, None
        self.done: Deferred = Deferred()

    def startProducing(self, consumer: Any) -> Deferred:
        self.consumer = consumer
        self.resumeProducing()
        return self.done

    def resumeProducing(self) -> None:
        self.paused = False
        sent = 0
        while not self.paused and self.left > 0:
            piece = BLOCK[: min(len(BLOCK), self.left)]
            self.left -= len(piece)
            self.consumer.write(piece)
            sent += 1
            if sent % 64 == 0:
                reactor.callLater(0, self._again)
                return
        if self.left == 0 and not self.done.called:
            self.done.callback(None)

    def _again(self) -> None:
        if not self.paused:
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.left = 0


class Sink(Protocol):
    def __init__(self) -> None:
        self.size = 0
        self.finished: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)

    def connectionLost(self, reason: Any) -> None:
        self.finished.callback(None)


async def read_all(response: Any) -> int:
    sink = Sink()
    response.deliverBody(sink)
    await sink.finished
    return sink.size


async def upload(agent: Agent, url: str, size: int) -> float:
    start = time.perf_counter()
    response = await agent.request(b"POST", url.encode(), bodyProducer=Producer(size))
    await read_all(response)
    assert response.code == 201, response.code
    return size / (time.perf_counter() - start) / 2**20


async def download(agent: Agent, url: str, size: int) -> float:
    start = time.perf_counter()
    response = await agent.request(b"GET", url.encode())
    sink = Sink()
    response.deliverBody(sink)
    await sink.finished
    assert sink.size == size, (sink.size, size)
    return size / (time.perf_counter() - start) / 2**20


async def ping_latencies(agent: Agent, url: str, count: int) -> Tuple[float, float]:
    samples: List[float] = []
    for _ in range(count):
        start = time.perf_counter()
        response = await agent.request(b"GET", url.encode())
        await read_all(response)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


class Plain(ProcessProtocol):
    def __init__(self) -> None:
        self.ready: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        if b"ready" in data and not self.ready.called:
            self.ready.callback(None)


async def measure(size: int, pings: int) -> None:
    pool = HTTPConnectionPool(reactor, persistent=True)
    agent = Agent(reactor, pool=pool)
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        plain = Plain()
        port = 18000 + os.getpid() % 1000
        process = reactor.spawnProcess(plain, sys.executable, [
            sys.executable, os.path.join(os.path.dirname(__file__), "plain_web.py"), str(port)],
            env=dict(os.environ))
        try:
            gateway = await deployment.start_gateway(node_id="gw-bench")
            await deployment.start_microservice("examples.billing:service", "billing-bench")
            await plain.ready
            pid = gateway.transport.pid  # type: ignore[union-attr]
            base = deployment.base_url
            direct = f"http://127.0.0.1:{port}"
            mib = size // 2**20
            rows = []
            for label, run in (
                ("upload", lambda b: upload(agent, f"{b}/invoices/1/attachments", size)),
                ("download", lambda b: download(agent, f"{b}/invoices/1/export?bytes={size}", size)),
            ):
                peak = PeakRSS(pid)
                through = await run(base)
                growth = peak.stop()
                plain_path = "/upload" if label == "upload" else f"/download?bytes={size}"
                if label == "upload":
                    alone = await upload(agent, direct + plain_path, size)
                else:
                    alone = await download(agent, direct + plain_path, size)
                rows.append((label, through, alone, growth))
            for label, through, alone, growth in rows:
                print(f"{label:8} {mib} MiB: gateway {through:7.1f} MiB/s | plain twisted.web "
                      f"{alone:7.1f} MiB/s | ratio {through / alone:.2f} | gateway peak RSS "
                      f"growth {growth / 1024:.1f} MiB")
            idle = await ping_latencies(agent, base + "/ping", pings)
            stalled_response = await agent.request(
                b"GET", f"{base}/invoices/1/export?bytes={size}".encode())
            holder = Sink()
            stalled_response.deliverBody(holder)
            holder.transport.pauseProducing()
            busy = await ping_latencies(agent, base + "/ping", pings)
            print(f"GET /ping p50/p99 idle {idle[0]:.2f}/{idle[1]:.2f} ms | with a stalled "
                  f"download on the same microservice connection {busy[0]:.2f}/{busy[1]:.2f} ms "
                  f"({holder.size // 1024} KiB of it delivered)")
            holder.transport.stopProducing()
        finally:
            await pool.closeCachedConnections()
            await deployment.stop_all("TERM")
            process.signalProcess("TERM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--pings", type=int, default=300)
    args = parser.parse_args()
    task.react(lambda _r: Deferred.fromCoroutine(measure(args.size_mib * 2**20, args.pings)))


if __name__ == "__main__":
    main()
