#!/usr/bin/env python3
"""
The gateway under a UDP flood (issue 18, item 1), loopback only.

One gateway listens on TCP and UDP; instance C{bench} 1.0.0 dials in over
TCP and 1.0.2 over UDP.  Each round runs wrk on C{GET /ping} (TCP
instance) for C{--seconds}, first without a flood, then while one unknown
UDP socket sends C{--rate} junk datagrams per second to the gateway's UDP
port (half random bytes, half well-formed HEARTBEAT datagrams from a socket
that never said HELLO; at most C{rate * (seconds + 1)} datagrams).  In
both phases a second, single-connection wrk asks the UDP instance, whose
answers must not be lost under the flood.  Printed per round: requests/s, p99, the UDP
instance's answers and errors, and how many bytes the gateway logged
during the flood.  Needs wrk (apt-get install -y wrk).

    .venv/bin/python benchmarks/udp_flood.py [--seconds 5] [--rounds 3] [--rate 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

FLOODER = r"""
import os, socket, struct, sys, time
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
junk = [os.urandom(48), bytes([2]) + os.urandom(16) + b'{"status":"healthy"}']
total, sent, start = int(rate * seconds), 0, time.monotonic()
while sent < total:
    due = min(int((time.monotonic() - start) * rate) + 1, total)
    while sent < due:
        try:
            s.sendto(junk[sent & 1], ("127.0.0.1", port))
        except OSError:
            pass
        sent += 1
    time.sleep(0.002)
print("FLOODED", sent, round(time.monotonic() - start, 2))
"""


def wrk(url: str, version: str, seconds: float, connections: int) -> Dict[str, float]:
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_report.lua")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
               "-H", f"X-Stella-Version: {version}", "-s", lua, url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise RuntimeError(f"wrk printed no report:\n{out}")


def flood(port: int, rate: int, seconds: float) -> str:
    out = subprocess.run([sys.executable, "-c", FLOODER, str(port), str(rate), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 30)
    return out.stdout.strip()


def errors(result: Dict[str, float]) -> int:
    return int(sum(v for k, v in result.items() if k.startswith("err_")))


async def measure(seconds: int, rounds: int, rate: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        deployment = ProcessDeployment(reactor, directory)
        listeners = ('{type: tcp, listen: "tcp:0:interface=127.0.0.1"}, '
                     '{type: udp, listen: "udp:0:interface=127.0.0.1"}')
        try:
            gateway = await deployment.start_gateway(node_id="gw-flood", transport=listeners)
            ready = next(line for line in gateway.lines if "ready: {" in line)
            tcp_port, udp_port = [int(a.rsplit(":", 1)[1]) for a in
                                  json.loads(ready.split("ready: ", 1)[1])["transports"]]
            for name, port in (("tcp", tcp_port), ("udp", udp_port)):
                gateway.transport_port = port
                await deployment.start_microservice(f"benchmarks.apps:{name}", f"bench-{name}",
                                                    transport=name)
            url = deployment.base_url + "/ping"
            normal: List[float] = []
            flooded: List[float] = []
            print(f"wrk -t1 -c16 -d{seconds}s GET /ping (TCP instance); flood {rate} junk "
                  f"datagrams/s from one unknown socket; {rounds} rounds")
            for r in range(rounds):
                quiet, quiet_udp = await gatherResults([
                    deferToThread(wrk, url, "1.0.0", seconds, 16),
                    deferToThread(wrk, url, "1.0.2", seconds, 1),
                ])
                logged_before = sum(len(line) + 1 for line in gateway.lines)
                first_line = len(gateway.lines)
                loud, udp, flooder = await gatherResults([
                    deferToThread(wrk, url, "1.0.0", seconds, 16),
                    deferToThread(wrk, url, "1.0.2", seconds, 1),
                    deferToThread(flood, udp_port, rate, seconds + 1),
                ])
                logged = sum(len(line) + 1 for line in gateway.lines) - logged_before
                other = [line for line in gateway.lines[first_line:] if "dropped" not in line]
                normal.append(quiet["rps"])
                flooded.append(loud["rps"])
                print(f"round {r + 1}: normal {quiet['rps']:7.0f} req/s p99 "
                      f"{quiet['p99_us'] / 1000:.1f} ms (UDP instance {quiet_udp['requests']}) "
                      f"| flood {loud['rps']:7.0f} req/s p99 "
                      f"{loud['p99_us'] / 1000:.1f} ms errors {errors(loud)} | UDP instance "
                      f"{udp['requests']} answers, {errors(udp)} errors | gateway log "
                      f"{logged} bytes | {flooder}")
                for line in other[:3]:
                    print("   gateway:", line[:200])
            ratio = (sum(flooded) / rounds) / (sum(normal) / rounds)
            print(f"SUMMARY normal {sum(normal) / rounds:.0f} req/s, under flood "
                  f"{sum(flooded) / rounds:.0f} req/s, ratio {ratio:.2f}")
        finally:
            await deployment.stop_all("TERM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    task.react(lambda _r: Deferred.fromCoroutine(
        measure(args.seconds, args.rounds, args.rate)))


if __name__ == "__main__":
    main()
