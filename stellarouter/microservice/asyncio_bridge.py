"""
Handlers written for asyncio.

On Twisted's asyncio reactor (C{twistd -r asyncio stella-micro ...}, or
C{reactor: asyncio} in the microservice's configuration) the reactor runs
inside an asyncio event loop.  L{awaitable_deferred} then runs a handler's
coroutine as an asyncio task on that loop, so the handler may await asyncio
libraries (asyncpg, httpx, aiohttp, C{asyncio.sleep}, C{asyncio.timeout});
the same coroutine may still await Deferreds (the SDK's C{ctx.body} stream,
C{ctx.cancelled}, C{deferLater}), which the task would otherwise refuse.
Cancelling the returned Deferred (a CANCEL frame) cancels the task.

On any other reactor no asyncio event loop runs, and asyncio code fails
with errors that do not say why (C{no running event loop}, C{await wasn't
used with future}); L{needs_asyncio_reactor} recognises them so the SDK can
name the fix.

The asyncio reactor's event loop is a private attribute of Twisted's
L{AsyncioSelectorReactor}: it is read here only, in L{reactor_event_loop},
and pinned by C{tests/unit/test_asyncio_handlers.py}.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Awaitable, Generator, Generic, Optional, TypeVar

from twisted.internet.defer import CancelledError, Deferred, NotACoroutineError
from twisted.python.failure import Failure

#: What the SDK says when a handler awaited asyncio without an event loop.
ASYNCIO_REACTOR_FIX = (
    "run the microservice on Twisted's asyncio reactor: `twistd -r asyncio stella-micro ...`, "
    "or set `reactor: asyncio` in its configuration"
)

#: The messages of the C{RuntimeError}s asyncio raises when no event loop
#: runs the coroutine (CPython's own wording).
_NO_LOOP_MESSAGES = ("no running event loop", "await wasn't used with future")

_T = TypeVar("_T")


def reactor_event_loop(reactor: object) -> Optional[asyncio.AbstractEventLoop]:
    """
    The asyncio event loop C{reactor} runs on.

    @param reactor: a reactor (or a clock).
    @return: the loop of an L{AsyncioSelectorReactor}, C{None} for any other
        reactor or clock.
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if isinstance(reactor, AsyncioSelectorReactor):
        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop
        return loop
    return None


def awaitable_deferred(awaitable: Awaitable[_T],
                       event_loop: Optional[asyncio.AbstractEventLoop]) -> Deferred[_T]:
    """
    Run a handler's coroutine and give its outcome as a Deferred.

    @param awaitable: a coroutine, or any object with C{__await__}.
    @param event_loop: the asyncio loop the reactor runs on, or C{None}
        (not the asyncio reactor: Twisted steps the coroutine, which may
        await Deferreds only).
    @return: fires with the coroutine's result, or fails with its error;
        cancelling it cancels the coroutine at its current C{await} (on
        the asyncio loop: the task, and the Deferred fires once the task
        has finished, failing with L{CancelledError} if it ended
        cancelled).
    """
    if event_loop is None:
        try:
            return Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]
        except NotACoroutineError:
            # Another awaitable (an object with __await__): await it in one.
            return Deferred.fromCoroutine(_awaited(awaitable))
    task = asyncio.ensure_future(_DeferredsAwaitable(awaitable), loop=event_loop)
    return Deferred.fromFuture(task).addErrback(_as_twisted_cancel)


async def _awaited(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def _as_twisted_cancel(failure: Failure) -> Failure:
    """
    A task that ended cancelled fails with Twisted's L{CancelledError}, as
    a cancelled Deferred does.
    """
    if failure.check(asyncio.CancelledError):
        return Failure(CancelledError("the handler's asyncio task was cancelled"))
    return failure


class _DeferredsAwaitable(Generic[_T]):
    """
    An awaitable that steps a coroutine inside an asyncio task and lets it
    await Deferreds: a yielded Deferred is waited for through an asyncio
    future, everything else goes to the task as it is.

    A coroutine waiting on a Deferred when the task is cancelled sees what
    it would see on the default reactor: the Deferred is cancelled and its
    outcome (usually L{CancelledError}) raised at the C{await}; one waiting
    on asyncio sees C{asyncio.CancelledError}.
    """

    __slots__ = ("_awaitable",)

    def __init__(self, awaitable: Awaitable[_T]) -> None:
        self._awaitable = awaitable

    def __await__(self) -> Generator[object, object, _T]:
        inner = self._awaitable.__await__()
        value: object = None
        error: Optional[BaseException] = None
        while True:
            try:
                yielded = inner.send(value) if error is None else inner.throw(error)
            except StopIteration as stop:
                return stop.value
            value = error = None
            if isinstance(yielded, Deferred):
                try:
                    yield from _fired(yielded)
                except asyncio.CancelledError as e:
                    if not yielded.called:
                        error = e
                # Resumed: sending None lets the Deferred, now fired, give
                # the coroutine its result or raise its failure.
                continue
            try:
                value = yield yielded
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as e:
                error = e


def _fired(deferred: Deferred[object]) -> Generator[object, None, None]:
    """
    An asyncio future that completes when C{deferred} fires (leaving its
    result in the Deferred's chain); cancelling the future cancels
    C{deferred}.
    """
    future = asyncio.get_running_loop().create_future()

    def wake(result: object) -> object:
        if not future.done():
            future.set_result(None)
        return result

    def cancel_deferred(done: "asyncio.Future[None]") -> None:
        if done.cancelled():
            deferred.cancel()

    deferred.addBoth(wake)
    future.add_done_callback(cancel_deferred)
    return future.__await__()


def needs_asyncio_reactor(failure: Failure) -> bool:
    """
    Whether C{failure} is asyncio code failing because no asyncio event loop
    runs the coroutine (a handler awaited asyncio on another reactor).
    """
    error = failure.value
    if isinstance(error, RuntimeError) and str(error) in _NO_LOOP_MESSAGES:
        return True
    # sniffio (under httpx and anyio) cannot tell which library runs it.
    return type(error).__name__ == "AsyncLibraryNotFoundError"


def use_asyncio_reactor() -> Optional[str]:
    """
    Make sure this process runs on Twisted's asyncio reactor: install it if
    no reactor is installed yet (C{twistd} installs one only when given
    C{-r}), otherwise check the installed one.

    @return: why it cannot (another reactor is installed), or C{None}.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        return None
    from twisted.internet import reactor

    if reactor_event_loop(reactor) is not None:
        return None
    kind = f"{type(reactor).__module__}.{type(reactor).__qualname__}"
    return (f"needs Twisted's asyncio reactor, but this process runs {kind}: start it with "
            "`twistd -r asyncio stella-micro ...`, or without twistd's -r option")


__all__ = [
    "ASYNCIO_REACTOR_FIX",
    "awaitable_deferred",
    "needs_asyncio_reactor",
    "reactor_event_loop",
    "use_asyncio_reactor",
]
