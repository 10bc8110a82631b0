"""
Hot reload: watch a configuration file on the injected clock, and hand each
new valid version to a callback; an invalid edit keeps the last good one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, List, Optional, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .errors import ConfigError


class ConfigWatcher:
    """
    Polls a file's content (a hash) every C{interval}
    seconds (or when L{check} is called, e.g. on SIGHUP).  A changed file is
    loaded with C{load}; a valid result goes to C{on_change(config)}, an
    invalid one is logged and the last good configuration stays.

    @ivar current: the last good configuration.
    @ivar failures: how many reloads were refused as invalid.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        load: Callable[[str], Any],
        on_change: Callable[[Any], object],
        clock: IReactorTime,
        current: Any,
        interval: float = 1.0,
        also_watch: Callable[[Any], Sequence[str]] = lambda config: (),
    ) -> None:
        """
        @param load: reads and validates the file; raises L{ConfigError}.
        @param current: the configuration in force (loaded from C{path}).
        @param also_watch: files a configuration refers to whose changes
            count as changes of the configuration (e.g. a JWKS file).
        """
        self.also_watch = also_watch
        self.path = path
        self.load = load
        self.on_change = on_change
        self.current = current
        self.failures = 0
        self._stamp = self._read_stamp()
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self.interval = interval

    def _read_stamp(self) -> tuple:
        stamps: List[Optional[str]] = []
        for path in (self.path, *self.also_watch(self.current)):
            try:
                with open(path, "rb") as f:
                    stamps.append(hashlib.sha256(f.read()).hexdigest())
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def start(self) -> None:
        """
        Start polling.
        """
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """
        Stop polling.
        """
        if self._loop.running:
            self._loop.stop()

    def check(self, force: bool = False) -> bool:
        """
        Reload if the file changed (or always, with C{force}).

        @return: C{True} if a new configuration was applied.
        """
        stamp = self._read_stamp()
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = self.load(self.path)
        except ConfigError as e:
            self.failures += 1
            self.log.error("configuration reload refused; keeping the last good one:\n{problems}",
                           problems=str(e))
            return False
        except Exception:
            self.failures += 1
            self.log.failure("configuration reload failed; keeping the last good one")
            return False
        if config == self.current:
            return False
        try:
            self.on_change(config)
        except Exception:
            self.failures += 1
            self.log.failure("applying the reloaded configuration failed; the previous one "
                             "stays in force")
            return False
        self.current = config
        return True
