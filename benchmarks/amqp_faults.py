"""
Issue 18 items 6-9 reproduced from outside: twistd gateway and Billing over
the RabbitMQ broker on 127.0.0.1:5672 (guest/guest), curl for HTTP, signals
for the faults; prints what it measured (figures in docs/reliability.md).

usage: .venv/bin/python benchmarks/amqp_faults.py PYTHON WORKDIR ITEM...
  PYTHON   the interpreter of the virtualenv whose stellarouter to run
           (its twistd is used; REPRO_SRC, default this checkout, is put on
           PYTHONPATH for the examples)
  WORKDIR  where configurations and logs go
  ITEM     6 (gateway restarted), 7a (one of two instances SIGKILLed under
           /ping load), 7b (instance SIGKILLed during a streamed export),
           8 (forged goodbye), 9 (Ctrl-C after the gateway died)
The HTTP port is REPRO_PORT (default 18480).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ITEMS = sys.argv[3:]
TWISTD = os.path.join(os.path.dirname(PY), "twistd")
BROKER = "amqp:host=127.0.0.1:port=5672:user=guest:password=guest:vhost=/"
os.makedirs(WORK, exist_ok=True)


ALL = []


class Proc:
    def __init__(self, name, args):
        self.name = name
        self.log = os.path.join(WORK, name + ".log")
        out = open(self.log, "ab")
        env = dict(os.environ, PYTHONPATH=os.environ.get("REPRO_SRC", ROOT))
        self.p = subprocess.Popen([PY, TWISTD, "-n", "--pidfile=", "--logfile=-", *args],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=WORK, env=env)
        ALL.append(self)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern, timeout=30, since=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text()[since:])
            if m:
                return m
            time.sleep(0.05)
        raise SystemExit(f"{self.name}: no {pattern!r} within {timeout}s\n" + self.text()[-2000:])

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)


def gateway(node, port):
    path = os.path.join(WORK, f"{node}.yaml")
    with open(path, "w") as f:
        f.write(f"""node: {{node_id: {node}, region: eu1}}
http: {{listen: "tcp:{port}:interface=127.0.0.1"}}
transports: [{{type: rabbitmq, listen: "{BROKER}"}}]
admin: {{listen: "tcp:0:interface=127.0.0.1"}}
""")
    g = Proc(f"gateway-{node}-{int(time.time() * 1000) % 100000}", ["stella-gateway", "--config", path])
    g.wait_for(r"ready: ")
    return g


def micro(gw, node, instance, app="examples.billing:service"):
    path = os.path.join(WORK, f"{instance}.yaml")
    with open(path, "w") as f:
        f.write(f"""region: eu1
instance_id: {instance}
routers: [{{transport: rabbitmq, address: "{BROKER}:gateway={node}"}}]
""")
    seen = len(gw.text())
    m = Proc(instance, ["stella-micro", "--config", path, "--app", app])
    gw.wait_for(rf"registered instance {instance} ", since=seen)
    return m


def curl(url, max_time=200, extra=()):
    start = time.time()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                          str(max_time), *extra, url], capture_output=True, text=True)
    return out.stdout.strip(), time.time() - start


def item6(port):
    """
    Restart the gateway (SIGTERM, start again, same node id) under a
    registered Billing; curl /ping every 0.5 s until it is 200 again.
    """
    node = f"gw-r6-{uuid.uuid4().hex[:6]}"
    g = gateway(node, port)
    m = micro(g, node, f"billing-r6-{uuid.uuid4().hex[:4]}")
    print("  /ping before restart:", curl(f"http://127.0.0.1:{port}/ping")[0])
    g.kill(signal.SIGTERM)
    g.p.wait()
    g2 = gateway(node, port)
    ready = time.time()
    codes = {}
    while True:
        code, _ = curl(f"http://127.0.0.1:{port}/ping", 10)
        codes[code] = codes.get(code, 0) + 1
        if code == "200" or time.time() - ready > 120:
            break
        time.sleep(0.5)
    text = m.text()
    path = ("hello_again" if "no session for us" in text else
            "returned heartbeat" if "is gone" in text else "idle timer")
    print(f"  item 6: first 200 {time.time() - ready:.1f}s after the restarted gateway was "
          f"ready; answers meanwhile {codes}; Billing came back by: {path}")
    m.kill(signal.SIGKILL), g2.kill(signal.SIGKILL)
    m.p.wait(), g2.p.wait()


def item7a(port):
    """
    Two Billing instances, four concurrent curl /ping loops for 25 s; one
    instance SIGKILLed 3 s in.
    """
    node = f"gw-r7-{uuid.uuid4().hex[:6]}"
    g = gateway(node, port)
    a = micro(g, node, "billing-r7a")
    b = micro(g, node, "billing-r7b")
    results = []
    stop = time.time() + 25
    killed_at = [0.0]

    def load():
        while time.time() < stop:
            start = time.time()
            code, took = curl(f"http://127.0.0.1:{port}/ping", 20)
            results.append((start, code, took))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    killed_at[0] = time.time()
    a.kill()
    for t in threads:
        t.join()
    after = [(s - killed_at[0], c, d) for s, c, d in results if s + d >= killed_at[0]]
    tally = {}
    for _, c, _ in after:
        tally[c] = tally.get(c, 0) + 1
    bad = [(round(s, 2), c, round(d, 2)) for s, c, d in after if c != "200"]
    last_bad = max((s + d for s, c, d in after if c != "200"), default=0.0)
    print(f"  item 7a: two instances, 4 concurrent /ping loops, one instance SIGKILLed: after the "
          f"kill {tally}; non-200 (start, code, seconds): {bad[:30]}"
          f"{' ...' if len(bad) > 30 else ''}; last non-200 ended {last_bad:.1f}s after the kill")
    g_text = g.text()
    m = re.search(r"instance billing-r7a .* -> degraded \(", g_text)
    print("  degraded logged:", bool(m), "| disconnected logged:",
          bool(re.search(r"instance billing-r7a .*disconnected", g_text)))
    b.kill(), g.kill()
    b.p.wait(), g.p.wait()


def item7b(port):
    """
    A streamed 8 GiB export read at 4 MB/s; its instance SIGKILLed 2 s in.
    """
    node = f"gw-r7b-{uuid.uuid4().hex[:6]}"
    g = gateway(node, port)
    m = micro(g, node, "billing-r7s")
    result = {}

    def download():
        result["code"], result["took"] = curl(
            f"http://127.0.0.1:{port}/invoices/7/export?bytes={8 * 1024 ** 3}", 200,
            ("--limit-rate", "4M"))
        result["end"] = time.time()

    t = threading.Thread(target=download)
    t.start()
    time.sleep(2)
    killed = time.time()
    m.kill()
    t.join()
    print(f"  item 7b: streamed export, instance SIGKILLed 2 s in: curl ended "
          f"{result['end'] - killed:.1f}s after the kill (status {result['code']})")
    g.kill()
    g.p.wait()


def item8(port):
    """
    Another broker client publishes {"goodbye": true} with Billing's queue
    in reply_to.
    """
    node = f"gw-r8-{uuid.uuid4().hex[:6]}"
    g = gateway(node, port)
    m = micro(g, node, "billing-r8")
    queue = re.search(r"registered instance billing-r8 .* from amqp:(\S+)", g.text()).group(1)
    print("  /ping before the forged goodbye:", curl(f"http://127.0.0.1:{port}/ping")[0])
    forge = subprocess.run([PY, "-c", f"""
import pika, json, uuid
c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
ch = c.channel()
ch.basic_publish("stellaops.router", "stella.gw.{node}", json.dumps({{"goodbye": True}}),
    pika.BasicProperties(type="2", correlation_id=str(uuid.uuid4()), reply_to="{queue}"))
c.close()
"""], capture_output=True, text=True)
    time.sleep(0.5)
    code, _ = curl(f"http://127.0.0.1:{port}/ping")
    print(f"  item 8: forged goodbye for {queue} published ({forge.returncode}); /ping now: "
          f"{code}; gateway log: "
          + "; ".join(re.findall(r"(disconnected: [^\n]*|dropped a HEARTBEAT[^\n]*)", g.text())))
    m.kill(), g.kill()
    m.p.wait(), g.p.wait()


def item9(port):
    """
    SIGKILL the gateway, then SIGINT (Ctrl-C) Billing: how long it takes
    to exit.
    """
    node = f"gw-r9-{uuid.uuid4().hex[:6]}"
    g = gateway(node, port)
    m = micro(g, node, "billing-r9")
    g.kill()
    g.p.wait()
    start = time.time()
    m.kill(signal.SIGINT)
    m.p.wait()
    print(f"  item 9: gateway SIGKILLed, then SIGINT (Ctrl-C) to Billing: it exited "
          f"{time.time() - start:.2f}s later")


PORT = int(os.environ.get("REPRO_PORT", "18480"))
try:
    for item in ITEMS:
        print(f"== item {item}", flush=True)
        {"6": item6, "7a": item7a, "7b": item7b, "8": item8, "9": item9}[item](PORT)
finally:
    for proc in ALL:
        proc.kill()
        proc.p.wait()
