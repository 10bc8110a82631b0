"""
A broker restart (C{rabbitmqctl stop_app} / C{start_app}: the RabbitMQ
application stops, every connection and queue goes away, the Erlang VM stays)
on a private RabbitMQ node started for the test (its own node name, AMQP
port and data directory), so it does not disturb the shared broker that the
other tests use in parallel.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections import Counter
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from .test_processes import ProcessTestCase


def _free_port() -> int:
    """
    A loopback port free now, below the kernel's ephemeral range: a port
    that bind(0) hands out is in that range, where any outgoing connection
    of a test running in parallel may take it before the broker binds it
    (seen as the broker's C{eaddrinuse}).
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randrange(max(low - 12000, 1024), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


class PrivateBroker:
    """
    One RabbitMQ node of our own: C{rabbitmq-server} with a config file that
    listens on a free loopback port, no plugins, data under a fresh
    directory.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = _free_port()
        self.node = f"stellatest-{uuid.uuid4().hex[:8]}@localhost"
        self.process: Any = None

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_CONFIG_FILE=os.path.join(self.directory, "rabbitmq.conf"),
            RABBITMQ_DIST_PORT=str(_free_port()),
            RABBITMQ_MNESIA_BASE=os.path.join(self.directory, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.directory, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.directory, "enabled_plugins"),
            RABBITMQ_FEATURE_FLAGS_FILE=os.path.join(self.directory, "feature_flags"),
            RABBITMQ_PID_FILE=os.path.join(self.directory, "pid"),
        )
        return env

    async def start(self) -> None:
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        with open(os.path.join(self.directory, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        with open(os.path.join(self.directory, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        # The server may drop to the rabbitmq user: let it write here.
        for root, dirs, files in os.walk(self.directory):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o777)
        os.chmod(self.directory, 0o777)
        server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
        output = open(os.path.join(self.directory, "server.out"), "wb")
        # Its own process group: run as root, rabbitmq-server is a wrapper
        # that starts the Erlang VM under su, and stop() must reach them all.
        self.process = subprocess.Popen([server], env=self._env(), stdout=output,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        output.close()
        # await_startup fails at once until the node has registered with
        # epmd: ask again until it answers, the server exits, or a minute.
        deadline = reactor.seconds() + 60
        while True:
            try:
                await self.ctl("await_startup", "--timeout", "60")
                return
            except RuntimeError:
                if self.process.poll() is not None or reactor.seconds() > deadline:
                    with open(os.path.join(self.directory, "server.out")) as f:
                        raise RuntimeError("the private broker did not start:\n"
                                           + f.read()[-3000:])
                await deferLater(reactor, 0.5, lambda: None)

    async def ctl(self, *args: str) -> str:
        """
        Run C{rabbitmqctl -n NODE ARGS}; raise with its output if it fails
        (or takes more than 90 s).
        """
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        d = getProcessOutputAndValue(ctl, ["-q", "-n", self.node, *args], env=os.environ,
                                     reactor=reactor)
        out, err, code = await d.addTimeout(90, reactor)
        if code != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} exited {code}: "
                               f"{out.decode()} {err.decode()}")
        return out.decode()

    async def stop(self) -> None:
        """
        Stop the node and make sure none of its processes is left: ask
        politely, then kill the VM (which C{su} puts in a session of its own,
        out of reach of our process group) and the wrapper processes.
        """
        process, self.process = self.process, None
        if process is None:
            return
        try:
            await self.ctl("stop")
        except Exception:
            pass
        vm = _pids_of(self.node)
        deadline = reactor.seconds() + 15
        while vm and reactor.seconds() < deadline:
            await deferLater(reactor, 0.2, lambda: None)
            vm = _pids_of(self.node)
        for pid in vm:
            _kill(pid)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = reactor.seconds() + 15
        while process.poll() is None and reactor.seconds() < deadline:
            await deferLater(reactor, 0.1, lambda: None)


def _pids_of(node: str) -> List[int]:
    """
    The live processes whose command line names C{node} (the Erlang VM).
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if node.split("@")[0].encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class BrokerRestartTests(ProcessTestCase):
    """
    Gateway and microservice (real twistd processes) through a broker that
    is stopped and started under load.
    """

    timeout = 120

    async def test_broker_restart_under_load(self) -> None:
        """
        Requests in flight when the broker stops fail cleanly (502, the
        connection was lost; none hang); both sides reconnect with backoff
        once it is back, the microservice announces itself again, and
        requests succeed again within seconds; no request is executed twice.
        """
        # Not under _trial_temp: trial makes its directories private, and the
        # server may run as the rabbitmq user.
        directory = tempfile.mkdtemp(prefix="stellarouter-broker-")
        self.addCleanup(shutil.rmtree, directory, True)
        broker = PrivateBroker(directory)
        self.addCleanup(broker.stop)
        await broker.start()
        address = f"amqp:host=127.0.0.1:port={broker.port}"
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.deployment.start_gateway(
            node_id=node, transport=f'{{type: rabbitmq, listen: "{address}"}}',
            extra="health: {degraded_after: 30, unhealthy_after: 60, sweep_interval: 5, "
                  "ping_interval: 60}")
        config = self.deployment.write("slow-restart.yaml", f"""
region: eu1
instance_id: slow-restart
routers: [{{transport: rabbitmq, address: "{address}:gateway={node}"}}]
""")
        micro = self.deployment.spawn("slow-restart", [
            "stella-micro", "--config", config, "--app", "examples.slowpoke:service"])
        await gateway.wait_for(r"registered instance slow-restart .* over rabbitmq", reactor)
        base = self.deployment.base_url
        response = await treq.get(base + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()

        # Light load: requests that are still running when the broker stops.
        seen = len(gateway.lines)
        before = len(micro.lines)
        in_flight = [treq.get(base + "/slow?seconds=5", pool=self.pool) for _ in range(4)]
        # Stop the broker only once all four handlers are running.
        while len(re.findall(r"slow request \S+ started", "\n".join(micro.lines[before:]))) < 4:
            await micro.wait_for(r"slow request \S+ started", reactor, since=len(micro.lines))
        await broker.ctl("stop_app")
        results = await DeferredList(in_flight, consumeErrors=True)
        codes: List[Any] = []
        for ok, response in results:
            self.assertTrue(ok, response)
            codes.append(response.code)
            await response.content()
        self.assertEqual(set(codes), {502},
                         (codes, gateway.lines[-20:]))
        await gateway.wait_for(r"AMQP link lost", reactor, since=seen)

        # While the broker is down the gateway answers at once: its only
        # instance is gone, so nothing can serve the endpoint (invariant 5);
        # the route was served moments ago, so 503, not 404 (routing.md).
        response = await treq.get(base + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 503)
        await response.content()

        started = reactor.seconds()
        await broker.ctl("start_app")
        await gateway.wait_for(r"registered instance slow-restart ", reactor, timeout=30,
                               since=seen)
        recovered = reactor.seconds() - started
        response = await treq.get(base + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200, gateway.lines[-20:])
        await response.content()
        self.assertLess(recovered, 30)
        # At most once: no request was started twice (nothing redelivered
        # after the reconnect), and each of the four in flight did start.
        started = Counter(re.findall(r"slow request ([0-9a-f-]{36}) started",
                                     "\n".join(micro.lines)))
        self.assertEqual(set(started.values()), {1}, started)
        self.assertEqual(len(started), 6, started)
        self.assertNotIn("Traceback", "\n".join(gateway.lines + micro.lines))
