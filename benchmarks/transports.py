#!/usr/bin/env python3
"""
Small calls through the gateway with the microservice on TCP, TLS (mutual),
UDP and RabbitMQ, measured in the same run with wrk, rounds interleaved:
requests/s, p50 and p99, and each transport's ratio to TCP.

One gateway listens on all four transports; four instances of the same
service at versions 1.0.0 (TCP), 1.0.1 (TLS), 1.0.2 (UDP) and 1.0.3
(RabbitMQ on 127.0.0.1:5672) dial in, and wrk picks one with
X-Stella-Version.  Needs wrk (apt-get install -y wrk).

    .venv/bin/python benchmarks/transports.py [--seconds 5] [--rounds 3] [--connections 16]
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
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from stellarouter import certs  # noqa: E402
from stellarouter.testing.processes import ProcessDeployment  # noqa: E402

VERSIONS = {"tcp": "1.0.0", "tls": "1.0.1", "udp": "1.0.2", "rabbitmq": "1.0.3"}


def wrk(url: str, version: str, seconds: int, connections: int) -> Dict[str, float]:
    lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_report.lua")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
               "-H", f"X-Stella-Version: {version}", "-s", lua, url]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0"] + command
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise RuntimeError(f"wrk printed no report:\n{out}")


async def measure(seconds: int, rounds: int, connections: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        pki = os.path.join(directory, "certs")
        certs.init_dev_certs(pki, ["bench"])
        deployment = ProcessDeployment(reactor, directory)
        listeners = ", ".join([
            '{type: tcp, listen: "tcp:0:interface=127.0.0.1"}',
            f'{{type: tls, listen: "tcp:0:interface=127.0.0.1", certificate: {pki}/gateway.pem, '
            f'private_key: {pki}/gateway.key, client_ca: {pki}/ca.pem}}',
            '{type: udp, listen: "udp:0:interface=127.0.0.1"}',
            '{type: rabbitmq, listen: "amqp:host=127.0.0.1:port=5672"}',
        ])
        try:
            gateway = await deployment.start_gateway(node_id="gw-bench", transport=listeners)
            ready = next(line for line in gateway.lines if "ready: {" in line)
            ports = [int(a.rsplit(":", 1)[1])
                     for a in json.loads(ready.split("ready: ", 1)[1])["transports"][:3]]
            tls_extra = (f"server_name: localhost, ca: {pki}/ca.pem, certificate: {pki}/bench.pem, "
                         f"private_key: {pki}/bench.key")
            for name, port, transport, extra in (("tcp", ports[0], "tcp", ""),
                                                  ("tls", ports[1], "tls", tls_extra),
                                                  ("udp", ports[2], "udp", "")):
                gateway.transport_port = port
                await deployment.start_microservice(f"benchmarks.apps:{name}", f"bench-{name}",
                                                    transport=transport, router_extra=extra)
            config = deployment.write("bench-rabbitmq.yaml", """
region: eu1
instance_id: bench-rabbitmq
routers: [{transport: rabbitmq, address: "amqp:host=127.0.0.1:port=5672:gateway=gw-bench"}]
""")
            deployment.spawn("bench-rabbitmq", ["stella-micro", "--config", config,
                                                "--app", "benchmarks.apps:rabbitmq"])
            await gateway.wait_for(r"registered instance bench-rabbitmq ", reactor)
            url = deployment.base_url + "/ping"
            results: Dict[str, List[Dict[str, float]]] = {k: [] for k in VERSIONS}
            order = list(VERSIONS)
            print(f"wrk -t1 -c{connections} -d{seconds}s, {rounds} interleaved rounds; "
                  f"GET /ping through the gateway, microservice on each transport")
            for r in range(rounds):
                for name in order:
                    results[name].append(await deferToThread(
                        wrk, url, VERSIONS[name], seconds, connections))
                order = order[1:] + order[:1]
                line = " | ".join(f"{n} {results[n][-1]['rps']:8.0f} req/s p50 "
                                  f"{results[n][-1]['p50_us'] / 1000:.2f} ms p99 "
                                  f"{results[n][-1]['p99_us'] / 1000:.2f} ms" for n in VERSIONS)
                print(f"round {r + 1}: {line}")
            tcp = sum(x["rps"] for x in results["tcp"]) / rounds
            for name in VERSIONS:
                rps = sum(x["rps"] for x in results[name]) / rounds
                errors = sum(x[k] for x in results[name] for k in x if k.startswith("err_"))
                p99 = sorted(x["p99_us"] for x in results[name])[rounds // 2] / 1000
                print(f"SUMMARY {name}: mean {rps:.0f} req/s, ratio to tcp {rps / tcp:.2f}, "
                      f"median p99 {p99:.2f} ms, errors {errors}")
        finally:
            await deployment.stop_all("TERM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    task.react(lambda _r: Deferred.fromCoroutine(
        measure(args.seconds, args.rounds, args.connections)))


if __name__ == "__main__":
    main()
