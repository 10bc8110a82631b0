"""
How the two twistd plugins fail: a process that cannot set up a listener
or a router says so in one line and exits with status 1, instead of logging
a traceback and staying alive half-listening.

C{twistd} offers no way for a plugin to choose its exit status: it returns
0 once the reactor has stopped.  So a start-up failure is logged as one
critical line, the reactor is stopped (at once if running, else as soon as
it runs), twistd shuts down as usual (services stopped, pid file removed),
and a last C{atexit} hook turns the exit status into 1.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import List, NoReturn

from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

log = Logger(namespace="stellarouter")


class StartupError(Exception):
    """
    A listener or a router could not be set up.  The message is one line
    naming what (the configuration key) and why.
    """


class StartAbandoned(Exception):
    """
    The service was stopped (a signal, the reactor stopping) before its
    start-up was over: what was still to start is not started.  Not a
    failure of the start-up.
    """


class _ExitStatus:
    """
    The status the process exits with once twistd is done.
    """

    status = 0
    hooked = False


def _exit_with_status() -> None:
    if _ExitStatus.status:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(_ExitStatus.status)


def fail_startup(reactor: IReactorCore, plugin: str, reason: str) -> None:
    """
    Log C{"<plugin> cannot start: <reason>; exiting with status 1"}, stop the
    reactor (now, or as soon as it runs) and make the process exit with 1.

    @param reactor: provides C{IReactorCore}.
    @param plugin: C{stella-gateway} or C{stella-micro}.
    @param reason: one line.
    """
    log.critical("{plugin} cannot start: {reason}; exiting with status 1",
                 plugin=plugin, reason=reason)
    _ExitStatus.status = 1
    if not _ExitStatus.hooked:
        _ExitStatus.hooked = True
        atexit.register(_exit_with_status)

    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    reactor.callWhenRunning(stop)


def refuse_to_start(plugin: str, reason: str) -> NoReturn:
    """
    Before twistd has started logging (in C{makeService}): print one line
    to stderr and exit with status 1.
    """
    raise SystemExit(f"{plugin} cannot start: {reason}")


def one_line(error: BaseException) -> str:
    """
    An exception as one line: its message, or its type when it has none.
    """
    text = " ".join(str(error).split())
    return text or type(error).__name__


__all__: List[str] = ["StartupError", "fail_startup", "one_line", "refuse_to_start"]
