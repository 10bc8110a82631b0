"""
Hot reload: watch a configuration file on the injected clock, and hand each
new valid version to a callback; an invalid edit keeps the last good one.

A file is applied only once it has been seen identical by two polls one
interval apart (a half-written file, seen mid-write, is not), or at once on
SIGHUP (L{ConfigWatcher.check} with C{force}): the operator says the write
is complete.  Reading, hashing and parsing run off the reactor thread (the
injected C{run_blocking}), so a slow or hostile file never stalls the
gateway's requests or C{/health/live}.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Generic, List, Optional, Protocol, Sequence, Tuple, TypeVar, Union

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .errors import ConfigError
from .reader import MAX_CONFIG_BYTES

#: What a blocking function gives (and its Deferred fires with).
Result = TypeVar("Result")
#: The configuration a L{ConfigWatcher} loads.
Config = TypeVar("Config")


class RunBlocking(Protocol):
    """
    How C{run_blocking} is called: C{run_blocking(function, *args)} returns
    a Deferred of C{function(*args)}, run wherever blocking work may run.
    """

    def __call__(self, function: Callable[..., Result], *args: object) -> Deferred[Result]: ...


def run_here(function: Callable[..., Result], *args: object) -> Deferred[Result]:
    """
    A C{run_blocking} that runs C{function} at once, in this thread (tests
    on a L{Clock}; in-memory deployments).
    """
    return maybeDeferred(function, *args)


class ConfigWatcher(Generic[Config]):
    """
    Polls a file's content (a hash) every C{interval} seconds (or when
    L{check} is called, e.g. on SIGHUP).  A changed file that stayed the
    same for one more interval is loaded with C{load}; a valid result goes
    to C{on_change(config)}, an invalid one is logged and the last good
    configuration stays; so does one C{on_change} refuses (raising
    L{ConfigError}: valid, but it cannot be put in force).  After a refusal,
    the next valid file is said to be valid again (also when it changes
    nothing: put back as it was).

    @ivar current: the last good configuration.
    @ivar failures: how many reloads were refused (invalid, or refused or
        failed by C{on_change}).
    @ivar pending: the stamp of a change seen once and waiting to be seen
        again, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        load: Callable[[str], Config],
        on_change: Callable[[Config], object],
        clock: IReactorTime,
        current: Config,
        interval: float = 1.0,
        also_watch: Callable[[Config], Sequence[str]] = lambda config: (),
        run_blocking: RunBlocking = run_here,
    ) -> None:
        """
        @param load: reads and validates the file; raises L{ConfigError}.
        @param on_change: puts a new configuration in force; raises
            L{ConfigError} to refuse it whole.  Whatever it raises, nothing
            of the new configuration may be in force (the log says the
            previous one stays).
        @param current: the configuration in force (loaded from C{path}).
        @param also_watch: files a configuration refers to whose changes
            count as changes of the configuration (e.g. a JWKS file).
        @param run_blocking: runs file reading and parsing (a thread pool in
            the gateway process; L{run_here} by default).
        """
        self.also_watch = also_watch
        self.path = path
        self.load = load
        self.on_change = on_change
        self.current = current
        self.failures = 0
        #: The last reload was refused (logged): the next valid file is
        #: said to be so, even when it changes nothing.
        self._refused = False
        self.run_blocking = run_blocking
        self.pending: Optional[Tuple[Optional[str], ...]] = None
        self._busy = False
        self._forced_while_busy = False
        self._stamp = self._read_stamp(self._watched(current))
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self.interval = interval

    def _watched(self, config: Config) -> Tuple[str, ...]:
        return (self.path, *self.also_watch(config))

    @staticmethod
    def _read_stamp(paths: Sequence[str]) -> Tuple[Optional[str], ...]:
        """
        The content hash of each file (C{None}: unreadable).  Blocking: runs
        through C{run_blocking}, except once at construction.
        """
        stamps: List[Optional[str]] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256()
                    # Past the cap the file is refused anyway: hash the
                    # first bytes only, plus the size.
                    digest.update(f.read(MAX_CONFIG_BYTES + 1))
                    f.seek(0, 2)
                    digest.update(str(f.tell()).encode())
                    stamps.append(digest.hexdigest())
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

    def check(self, force: bool = False) -> Deferred[bool]:
        """
        Reload if the file changed and stayed the same since the previous
        poll (or at once, with C{force}).  One check runs at a time: a poll
        asked for while one is running does nothing; a forced check (SIGHUP)
        runs once the running one is done.

        @return: a Deferred firing with C{True} if a new configuration was
            applied.
        """
        if self._busy:
            self._forced_while_busy = self._forced_while_busy or force
            return Deferred.fromCoroutine(_false())
        self._busy = True
        d = Deferred.fromCoroutine(self._check(force))

        def done(result: Union[bool, Failure]) -> Union[bool, Failure]:
            self._busy = False
            if self._forced_while_busy:
                self._forced_while_busy = False
                self.check(force=True)
            return result

        return d.addBoth(done)

    async def _check(self, force: bool) -> bool:
        paths = self._watched(self.current)
        stamp = await self.run_blocking(self._read_stamp, paths)
        if not force:
            if stamp == self._stamp:
                self.pending = None
                return False
            if stamp != self.pending:
                # Seen for the first time: maybe half-written. Look again
                # at the next poll.
                self.pending = stamp
                return False
        self.pending = None
        try:
            config = await self.run_blocking(self.load, self.path)
        except ConfigError as e:
            self._stamp = stamp
            self._refuse()
            self.log.error("configuration reload refused; keeping the last good one:\n{problems}",
                           problems=str(e))
            return False
        except Exception:
            self._stamp = stamp
            self._refuse()
            self.log.failure("configuration reload failed; keeping the last good one")
            return False
        if not force and await self.run_blocking(self._read_stamp, paths) != stamp:
            # Changed again while it was being parsed: wait until it settles.
            self.pending = None
            return False
        self._stamp = stamp
        if config == self.current:
            if self._refused:
                self._refused = False
                self.log.info("configuration file {path} is valid again; nothing to change",
                              path=self.path)
            return False
        if self._refused:
            self.log.info("configuration file {path} is valid again", path=self.path)
        try:
            self.on_change(config)
        except ConfigError as e:
            # Valid, but it cannot be put in force (an access log file that
            # cannot be opened): refused whole.
            self._refuse()
            self.log.error("configuration reload refused; keeping the last good one:\n"
                           "{problems}", problems=str(e))
            return False
        except Exception:
            # (on_change builds everything before it changes anything.)
            self._refuse()
            self.log.failure("applying the reloaded configuration failed; the previous one "
                             "stays in force")
            return False
        self._refused = False
        self.current = config
        return True

    def _refuse(self) -> None:
        self.failures += 1
        self._refused = True


async def _false() -> bool:
    return False
