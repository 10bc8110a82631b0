"""
The fault suite (issue 24): real twistd processes on loopback, a bounded
Python load generator (N keep-alive connections sending C{GET /ping} in a
loop), one fault per scenario, and a table of what the clients saw: the
errors, their kind, and the time to recover.

usage: python benchmarks/faults.py [--scenarios kill9,sigstop,drain,gateway,udp,rabbitmq]
                                   [--stop-seconds 40] [--connections 16] [--workdir DIR]

Scenarios (each starts its own processes and stops them):
  kill9     two instances over TCP; one SIGKILLed under load
  sigstop   two instances; one SIGSTOPped for --stop-seconds, then SIGCONT
  drain     two instances; one SIGTERMed (graceful drain)
  gateway   two instances; the gateway SIGKILLed and started again at once
            (time until the microservices are back)
  udp       one instance over UDP; the gateway SIGKILLed and started again
  rabbitmq  two instances over RabbitMQ (127.0.0.1:5672 guest/guest); the
            broker's app stopped (rabbitmqctl stop_app) for 5 s, then started
  post      two instances; POST /charge (not idempotent) from 16 clients while
            one instance is SIGKILLed: prints executions vs requests answered

"time to recover": from the fault to the end of the last failed request
(0 when nothing failed).  The processes run this checkout (PYTHONPATH) with
the interpreter running this script (its twistd).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
BROKER = "amqp:host=127.0.0.1:port=5672:user=guest:password=guest:vhost=/"
APP = "benchmarks.apps:faults"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """
    One twistd process logging to a file in the work directory.
    """

    def __init__(self, work: str, name: str, args: List[str],
                 env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.log = os.path.join(work, f"{name}-{time.monotonic_ns() % 10**9}.log")
        environment = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", **(env or {}))
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen([sys.executable, TWISTD, "-n", "--pidfile=",
                                       "--logfile=-", *args], stdout=out,
                                      stderr=subprocess.STDOUT, cwd=work, env=environment)

    def text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern: str, timeout: float = 30.0, since: int = 0) -> float:
        """
        Wait until the log matches C{pattern}; return when (monotonic).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()[since:]):
                return time.monotonic()
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise SystemExit(f"{self.name}: no /{pattern}/ within {timeout}s\n{self.text()[-3000:]}")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
        self.p.wait()


class Deployment:
    """
    A gateway and microservices for one scenario.
    """

    def __init__(self, work: str, transport: str = "tcp") -> None:
        self.work = work
        self.transport = transport
        self.http_port = free_port()
        self.transport_port = free_port(socket.SOCK_DGRAM if transport == "udp"
                                        else socket.SOCK_STREAM)
        self.node = f"gw-faults-{os.getpid()}"
        self.procs: List[Proc] = []
        self.gateway: Optional[Proc] = None
        self.ledger = os.path.join(work, "ledger.txt")

    def _listener(self) -> str:
        if self.transport == "udp":
            return f'{{type: udp, listen: "udp:{self.transport_port}:interface=127.0.0.1"}}'
        if self.transport == "rabbitmq":
            return f'{{type: rabbitmq, listen: "{BROKER}"}}'
        return f'{{type: tcp, listen: "tcp:{self.transport_port}:interface=127.0.0.1"}}'

    def start_gateway(self) -> Proc:
        path = os.path.join(self.work, "gateway.yaml")
        with open(path, "w") as f:
            f.write(f"""node: {{node_id: {self.node}, region: eu1}}
http: {{listen: "tcp:{self.http_port}:interface=127.0.0.1"}}
transports: [{self._listener()}]
health: {{ping_interval: 1}}
""")
        gateway = Proc(self.work, "gateway", ["stella-gateway", "--config", path])
        self.procs.append(gateway)
        gateway.wait_for(r"ready: ")
        self.gateway = gateway
        return gateway

    def start_micro(self, instance: str) -> Proc:
        if self.transport == "rabbitmq":
            address = f"{BROKER}:gateway={self.node}"
        else:
            address = f"{self.transport}:host=127.0.0.1:port={self.transport_port}"
        path = os.path.join(self.work, f"{instance}.yaml")
        with open(path, "w") as f:
            f.write(f"""region: eu1
instance_id: {instance}
heartbeat_interval: 1
drain_grace_period: 10
routers: [{{transport: {self.transport}, address: "{address}"}}]
""")
        assert self.gateway is not None
        since = len(self.gateway.text())
        micro = Proc(self.work, instance, ["stella-micro", "--config", path, "--app", APP],
                     env={"FAULTS_LEDGER": self.ledger})
        self.procs.append(micro)
        self.gateway.wait_for(rf"registered instance {instance} ", since=since)
        return micro

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class Load:
    """
    C{connections} threads, each with one keep-alive HTTP connection,
    sending requests back to back; every outcome is recorded with its end
    time.  Bounded: one request in flight per thread, a 10 s socket timeout,
    a 50 ms pause after a connection error.
    """

    def __init__(self, port: int, connections: int = 16, method: str = "GET",
                 path: str = "/ping") -> None:
        self.port = port
        self.method = method
        self.path = path
        self.results: List[Tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(connections)]

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.results.append((time.monotonic(), outcome))

    def _run(self) -> None:
        connection: Optional[http.client.HTTPConnection] = None
        body = b"{}" if self.method == "POST" else None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request(self.method, self.path, body=body)
                response = connection.getresponse()
                response.read()
                self._record(str(response.status))
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as e:
                self._record(type(e).__name__)
                if connection is not None:
                    connection.close()
                connection = None
                self._stop.wait(0.05)
        if connection is not None:
            connection.close()

    def report(self, fault_at: float) -> Dict[str, object]:
        ok = {"200"}
        errors = [(t, o) for t, o in self.results if o not in ok]
        kinds = collections.Counter(o for _, o in errors)
        after = [t for t, _ in errors if t >= fault_at]
        recover = max(after) - fault_at if after else 0.0
        return {"requests": len(self.results), "errors": len(errors),
                "kinds": ", ".join(f"{n}×{k}" for k, n in kinds.most_common()) or "-",
                "recover": recover}


def wait_until_ok(port: int, timeout: float = 60.0) -> float:
    """
    Poll C{GET /ping} until it is 200; return when (monotonic).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ping")
            if c.getresponse().status == 200:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    raise SystemExit(f"/ping not 200 within {timeout}s")


def scenario(work: str, name: str, args: argparse.Namespace) -> Dict[str, object]:
    transport = {"udp": "udp", "rabbitmq": "rabbitmq"}.get(name, "tcp")
    d = Deployment(os.path.join(work, name), transport)
    os.makedirs(d.work, exist_ok=True)
    extra = ""
    try:
        d.start_gateway()
        a = d.start_micro("a")
        if name != "udp":
            d.start_micro("b")
        load = Load(d.http_port, args.connections, *(("POST", "/charge") if name == "post"
                                                     else ("GET", "/ping"))).start()
        time.sleep(args.warmup)
        fault = time.monotonic()
        if name in ("kill9", "post"):
            a.signal(signal.SIGKILL)
            time.sleep(args.after)
        elif name == "sigstop":
            a.signal(signal.SIGSTOP)
            time.sleep(args.stop_seconds)
            a.signal(signal.SIGCONT)
            time.sleep(args.after)
        elif name == "drain":
            a.signal(signal.SIGTERM)
            time.sleep(args.after)
        elif name in ("gateway", "udp"):
            assert d.gateway is not None
            d.gateway.signal(signal.SIGKILL)
            d.gateway.p.wait()
            d.start_gateway()
            back = wait_until_ok(d.http_port)
            extra = f"microservices back {back - fault:.2f} s after the kill"
            time.sleep(args.after)
        elif name == "rabbitmq":
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
            try:
                time.sleep(5)
            finally:
                subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
            back = wait_until_ok(d.http_port, 120)
            extra = f"broker down 5 s; /ping 200 again {back - fault:.2f} s after stop_app"
            time.sleep(args.after)
        load.stop()
        result = load.report(fault)
        if name == "post":
            executions = len(open(d.ledger).read().splitlines()) if os.path.exists(
                d.ledger) else 0
            answered = sum(1 for _, o in load.results if o == "200")
            extra = f"{executions} executions for {answered} answered 200 + " \
                    f"{result['errors']} errors (never more executions than requests sent)"
        result["note"] = extra
        return result
    finally:
        d.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="kill9,sigstop,drain,gateway,udp,post,rabbitmq")
    parser.add_argument("--stop-seconds", type=float, default=40.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="stella-faults-")
    print(f"# logs in {work}; {args.connections} connections; SIGSTOP {args.stop_seconds:g} s")
    print("| scenario | requests | client errors | kind | time to recover | note |")
    print("|---|---|---|---|---|---|")
    for name in args.scenarios.split(","):
        r = scenario(work, name, args)
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['kinds']} | "
              f"{r['recover']:.2f} s | {r['note']} |")


if __name__ == "__main__":
    main()
