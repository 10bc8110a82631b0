"""
Run twistd plugins as real child processes in integration tests: watch
their output line by line and wait for a line, without sleeping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import Dict, List, Optional, Sequence, Tuple, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: The repository root (the source tree the children import).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def twistd_path() -> str:
    """
    The C{twistd} script beside the running interpreter.
    """
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class WatchedProcess(ProcessProtocol):
    """
    A child process whose output lines can be waited for.

    @ivar lines: every line printed so far (stdout and stderr).
    @ivar ended: fires with the exit code (or signal as C{-N}) when it ends.
    """

    #: For gateways started by L{ProcessDeployment}: where they listen.
    base_url = ""
    transport_port = 0
    #: C{http://127.0.0.1:PORT} of its admin listener (empty: none).
    admin_url = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: List[str] = []
        self.ended: Deferred[int] = Deferred()
        self._partial = b""
        self._waiting: List[Tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self.running = False

    def connectionMade(self) -> None:
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            # A callback may start waiting again (re-entering wait_for): keep
            # those new waiters, they have not seen this line.
            waiting, self._waiting = self._waiting, []
            still = []
            for pattern, d in waiting:
                match = pattern.search(line)
                if match is not None:
                    d.callback(match)
                else:
                    still.append((pattern, d))
            self._waiting = still + self._waiting

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        for pattern, d in self._waiting:
            d.errback(AssertionError(
                f"{self.name} ended before printing /{pattern.pattern}/; output:\n"
                + "\n".join(self.lines[-40:])))
        self._waiting = []
        self.ended.callback(code if code is not None else -(sig or 0))

    def wait_for(self, pattern: str, clock: IReactorTime, timeout: float = 20.0,
                 since: int = 0) -> Deferred[re.Match[str]]:
        """
        Fires with the regex match of the first line matching C{pattern},
        among the lines printed from index C{since} on (already printed or
        still to come).
        """
        compiled = re.compile(pattern)
        for line in self.lines[since:]:
            match = compiled.search(line)
            if match is not None:
                d: Deferred[re.Match[str]] = Deferred()
                d.callback(match)
                return d
        d = Deferred()
        self._waiting.append((compiled, d))
        return d.addTimeout(timeout, clock)

    def signal(self, name: str = "TERM") -> None:  # noqa: F811
        """
        Send a signal if still running.
        """
        if self.running and self.transport is not None:
            self.transport.signalProcess(getattr(signal, "SIG" + name))


def spawn_twistd(reactor: IReactorProcess, name: str, plugin_args: Sequence[str],
                 env: Optional[Dict[str, str]] = None, cwd: str = ROOT,
                 prefix: Sequence[str] = ()) -> WatchedProcess:
    """
    Start C{twistd -n <plugin_args>} logging to stdout, importing this
    source tree.

    @param prefix: a command that runs twistd, e.g. C{["prlimit",
        "--nofile=128:128", "--"]}.
    """
    process = WatchedProcess(name)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = ROOT + os.pathsep + environment.get("PYTHONPATH", "")
    environment["PYTHONUNBUFFERED"] = "1"
    if env:
        environment.update(env)
    args = [*prefix, twistd_path(), "-n", "--pidfile=", "--logfile=-", *plugin_args]
    reactor.spawnProcess(process, args[0], args, env=environment, path=cwd)
    return process




class ProcessDeployment:
    """
    A gateway and microservices as twistd child processes on free loopback
    ports, with their configs written to a temporary directory.

    @ivar base_url: C{http://127.0.0.1:PORT} of the gateway, once started.
    """

    def __init__(self, reactor: IReactorTime, directory: str) -> None:
        """
        @param reactor: provides C{IReactorProcess} and C{IReactorTime}.
        """
        self.reactor = reactor
        self.directory = directory
        self.processes: List[WatchedProcess] = []
        self.gateway: Optional[WatchedProcess] = None
        self.base_url = ""
        self.transport_port = 0

    def write(self, name: str, text: str) -> str:
        """
        Write a file in the deployment's directory and return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def spawn(self, name: str, args: Sequence[str], prefix: Sequence[str] = (),
              env: Optional[Dict[str, str]] = None) -> WatchedProcess:
        """
        Start one twistd process (killed by L{stop_all} if still running).

        @param prefix: see L{spawn_twistd}.
        @param env: variables added to this process's environment.
        """
        process = spawn_twistd(cast(IReactorProcess, self.reactor), name, args, env,
                               prefix=prefix)
        self.processes.append(process)
        return process

    async def start_gateway(self, node_id: str = "gw-it", region: str = "eu1",
                            extra: str = "", neighbors: Sequence[str] = (),
                            transport: str = "{type: tcp, listen: \"tcp:0:interface=127.0.0.1\"}",
                            http: str = "", prefix: Sequence[str] = (),
                            admin: str = 'listen: "tcp:0:interface=127.0.0.1"'
                            ) -> WatchedProcess:
        """
        Start C{stella-gateway} on port 0 and wait until it is ready.  The
        process gets C{base_url} and C{transport_port} attributes; the first
        gateway started is also C{self.gateway}.

        @param extra: more top-level YAML for its configuration.
        @param http: more keys of its C{http} mapping (flow style,
            e.g. C{"backlog: 64"}).
        @param prefix: see L{spawn_twistd}.
        @param admin: the keys of its C{admin} mapping (flow style; default:
            a free loopback port, so gateways never contend for 9901).  The
            process gets an C{admin_url} attribute.
        """
        config = self.write(f"{node_id}.yaml", f"""
node: {{node_id: {node_id}, region: {region}, neighbor_regions: [{", ".join(neighbors)}]}}
http: {{listen: "tcp:0:interface=127.0.0.1"{", " + http if http else ""}}}
transports: [{transport}]
admin: {{{admin}}}
{extra}
""")
        gateway = self.spawn(node_id, ["stella-gateway", "--config", config], prefix)
        ready = await gateway.wait_for(r"ready: (\{.*\})", self.reactor)
        addresses = json.loads(ready.group(1))
        gateway.base_url = "http://" + addresses["http"]
        port = re.search(r":(\d+)$", addresses["transports"][0])
        gateway.transport_port = int(port.group(1)) if port else 0
        if "admin" in addresses:
            gateway.admin_url = "http://" + addresses["admin"]
        if self.gateway is None:
            self.gateway = gateway
            self.base_url = gateway.base_url
            self.transport_port = gateway.transport_port
        return gateway

    async def start_microservice(self, app: str, instance_id: str, region: str = "eu1",
                                 gateways: Optional[Sequence[WatchedProcess]] = None,
                                 extra: str = "", transport: str = "tcp",
                                 router_extra: str = "", wait: bool = True,
                                 twistd_args: Sequence[str] = (),
                                 env: Optional[Dict[str, str]] = None) -> WatchedProcess:
        """
        Start C{stella-micro} for C{app} dialling the given gateways (default:
        the first one), and wait until each has registered it.

        @param extra: more top-level YAML for its configuration.
        @param twistd_args: twistd's own options, before the plugin name
            (C{["-r", "asyncio"]}).
        @param env: variables added to the process's environment.
        """
        if gateways:
            targets = list(gateways)
        else:
            assert self.gateway is not None, "start a gateway first"
            targets = [self.gateway]
        routers = ", ".join(
            f'{{transport: {transport}, address: '
            f'"{"udp" if transport == "udp" else "tcp"}:host=127.0.0.1:port={g.transport_port}"'
            f'{", " + router_extra if router_extra else ""}}}'
            for g in targets)
        config = self.write(f"{instance_id}.yaml", f"""
region: {region}
instance_id: {instance_id}
routers: [{routers}]
{extra}
""")
        seen = [len(g.lines) for g in targets]
        process = self.spawn(instance_id, [*twistd_args, "stella-micro", "--config", config,
                                           "--app", app], env=env)
        if not wait:
            return process
        for gateway, since in zip(targets, seen):
            await gateway.wait_for(
                rf"registered instance {re.escape(instance_id)} ", self.reactor, since=since)
        return process

    async def stop_all(self, signal: str = "KILL") -> None:
        """
        Send C{signal} to whatever is still running, all at once, and wait
        for it to end (C{"TERM"} for a graceful stop, as the benchmarks do).
        """
        running = [process for process in self.processes if process.running]
        for process in running:
            process.signal(signal)
        for process in running:
            await process.ended


__all__ = ["ProcessDeployment", "WatchedProcess", "spawn_twistd", "twistd_path", "ROOT"]
