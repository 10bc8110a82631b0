#!/usr/bin/env python3
"""
The gateway's memory when a registered microservice never reads (issue 18
item 3): a raw peer sends HELLO for C{POST /sink} (1 s timeout) and then
reads nothing; C{--rate} 1 MiB POSTs per second go to it for C{--seconds}.
Prints the gateway's RSS every second, the answers' status codes and
whether (when) the gateway cut the peer off.

    .venv/bin/python benchmarks/stalled_peer.py [--seconds 20] [--rate 8]
        [--gateway-yaml '...']
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody  # noqa: E402

from stellarouter.common.enums import FrameType  # noqa: E402
from stellarouter.common.frames import encode_frame  # noqa: E402
from stellarouter.common.ids import new_correlation_id  # noqa: E402
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor  # noqa: E402
from stellarouter.common.payloads import Hello, encode_hello  # noqa: E402
from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

from benchmarks.procstat import rss_mib  # noqa: E402

from io import BytesIO  # noqa: E402

MIB = 1024 * 1024


def pause(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def measure(seconds: int, rate: int, gateway_yaml: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        try:
            gateway = await deployment.start_gateway(node_id="gw-peer", extra=gateway_yaml)
            pid = gateway.transport.pid  # type: ignore[union-attr]
            peer = socket.socket()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.connect(("127.0.0.1", gateway.transport_port))
            instance = InstanceDescriptor("raw-peer", "sink", "1.0.0", "eu1")
            endpoint = EndpointDescriptor("sink", "1.0.0", "POST", "/sink", default_timeout=1.0)
            peer.sendall(encode_frame(Frame(FrameType.HELLO, new_correlation_id(),
                                            encode_hello(Hello(instance, (endpoint,))))))
            await gateway.wait_for(r"registered instance raw-peer ", reactor)
            agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
            codes: collections.Counter = collections.Counter()
            body = b"x" * MIB

            async def post() -> None:
                response = await agent.request(b"POST", (gateway.base_url + "/sink").encode(),
                                               bodyProducer=FileBodyProducer(BytesIO(body)))
                codes[response.code] += 1
                await readBody(response)

            base = rss_mib(pid)
            print(f"gateway RSS before: {base:.1f} MiB; {rate} x 1 MiB POST/s for {seconds} s")
            start = time.monotonic()
            for second in range(1, seconds + 1):
                for _ in range(rate):
                    Deferred.fromCoroutine(post()).addErrback(lambda f: codes.update(["error"]))
                    await pause(1.0 / rate)
                cut = [line for line in gateway.lines if "disconnected: stalled" in line]
                print(f"t={time.monotonic() - start:5.1f}s RSS {rss_mib(pid):6.1f} MiB "
                      f"(+{rss_mib(pid) - base:.1f}) answers {dict(codes)}"
                      + (" | peer cut off" if cut else ""))
            await pause(2.0)
            stalls = [line for line in gateway.lines if "is stalled" in line]
            print(f"stall log lines: {len(stalls)}")
            for line in stalls[:1]:
                print("   ", line[:220])
            peer.close()
        finally:
            await deployment.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=8)
    parser.add_argument("--gateway-yaml", default="", help="more gateway configuration")
    args = parser.parse_args()

    def run() -> Any:
        d = Deferred.fromCoroutine(measure(args.seconds, args.rate, args.gateway_yaml))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()


if __name__ == "__main__":
    main()
