"""
Run twistd plugins as real child processes in integration tests: watch
their output line by line and wait for a line, without sleeping.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
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

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: List[str] = []
        self.ended: Deferred = Deferred()
        self._partial = b""
        self._waiting: List[Tuple[re.Pattern, Deferred]] = []
        self.running = False

    def connectionMade(self) -> None:
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            still = []
            for pattern, d in self._waiting:
                match = pattern.search(line)
                if match is not None:
                    d.callback(match)
                else:
                    still.append((pattern, d))
            self._waiting = still

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

    def wait_for(self, pattern: str, clock: Any, timeout: float = 20.0) -> Deferred:
        """
        Fires with the regex match of the first line (from now on, or
        already printed) matching C{pattern}.
        """
        compiled = re.compile(pattern)
        for line in self.lines:
            match = compiled.search(line)
            if match is not None:
                d: Deferred = Deferred()
                d.callback(match)
                return d
        d = Deferred()
        self._waiting.append((compiled, d))
        return d.addTimeout(timeout, clock)

    def signal(self, name: str = "TERM") -> None:
        """
        Send a signal if still running.
        """
        if self.running and self.transport is not None:
            self.transport.signalProcess(name)


def spawn_twistd(reactor: Any, name: str, plugin_args: Sequence[str],
                 env: Optional[Dict[str, str]] = None, cwd: str = ROOT) -> WatchedProcess:
    """
    Start C{twistd -n <plugin_args>} logging to stdout, importing this
    source tree.
    """
    process = WatchedProcess(name)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = ROOT + os.pathsep + environment.get("PYTHONPATH", "")
    environment["PYTHONUNBUFFERED"] = "1"
    if env:
        environment.update(env)
    args = [twistd_path(), "-n", "--pidfile=", "--logfile=-", *plugin_args]
    reactor.spawnProcess(process, args[0], args, env=environment, path=cwd)
    return process


__all__ = ["WatchedProcess", "spawn_twistd", "twistd_path", "ROOT"]
