"""
Handlers that are asyncio coroutines: on Twisted's asyncio reactor they run
as asyncio tasks (and may still await Deferreds), a CANCEL cancels the task;
on the default reactor asyncio code gets an error that names the fix.

The asyncio tests drive a private event loop with C{run_until_complete}, one
loop turn at a time: no timers, no sleeps.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, List, Optional

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import (
    RequestMessage,
    decode_response,
    decode_stream_data,
    encode_request,
    encode_stream_data,
)
from stellarouter.config import ConfigError
from stellarouter.config.microservice import parse_microservice_config
from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.microservice.asyncio_bridge import (
    awaitable_deferred,
    reactor_event_loop,
    use_asyncio_reactor,
)
from stellarouter.microservice.dispatcher import RequestDispatcher
from stellarouter.microservice.tap import Options
from stellarouter.testing.fakes import FakeFrameSender


def request(template: str, method: str = "GET", body: bytes = b"",
            deadline: Optional[float] = None) -> Frame:
    return Frame(FrameType.REQUEST, new_correlation_id(), encode_request(RequestMessage(
        method, template, template, body=body, deadline=deadline)))


async def loop_turn() -> None:
    """
    Await an asyncio future the running loop completes on its next turn
    (unlike C{asyncio.sleep(0)}, this needs a running loop and a task).
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, None)
    await future


class AsyncioLoopTestCase(SynchronousTestCase):
    """
    A dispatcher whose clock is Twisted's asyncio reactor on a private event
    loop (not installed, not running: the test turns the loop).
    """

    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.reactor = AsyncioSelectorReactor(self.loop)
        self.addCleanup(self.loop.close)
        self.addCleanup(self.reactor.removeAll)
        self.app = Microservice("svc", "1.0.0")
        self.sender = FakeFrameSender()
        self.dispatcher = RequestDispatcher(self.app, self.sender, self.reactor)

    def turn(self, times: int = 5) -> None:
        """
        Let the event loop run C{times} turns (each ready callback once).
        """
        async def turns() -> None:
            for _ in range(times):
                await asyncio.sleep(0)

        self.loop.run_until_complete(turns())

    def responses(self) -> list:
        return [decode_response(f.payload) for f in self.sender.take()
                if f.type is FrameType.RESPONSE]


class AsyncioReactorTests(AsyncioLoopTestCase):
    def test_reactor_event_loop(self) -> None:
        """
        The loop of Twisted's asyncio reactor is found (this pins the private
        attribute C{AsyncioSelectorReactor._asyncioEventloop}); any other
        clock has none.
        """
        self.assertIs(self.reactor._asyncioEventloop, self.loop)
        self.assertIs(reactor_event_loop(self.reactor), self.loop)
        self.assertIsNone(reactor_event_loop(Clock()))
        self.assertIs(self.dispatcher.event_loop, self.loop)

    def test_handler_awaits_asyncio(self) -> None:
        """
        On the asyncio reactor a handler may await asyncio (a sleep, a future
        the loop completes), sees its deadline, and is answered 200; before,
        it was a 500 "await wasn't used with future".
        """
        @self.app.endpoint("GET", "/aio")
        async def aio(ctx: Any) -> RawResponse:
            await asyncio.sleep(0)
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.set_result, "from asyncio")
            text = await future
            return RawResponse.json({"text": text, "deadline": ctx.deadline,
                                     "task": asyncio.current_task() is not None})

        deadline = self.reactor.seconds() + 60
        self.dispatcher.request_received(request("/aio", deadline=deadline))
        self.turn()
        [response] = self.responses()
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(json.loads(response.body),
                         {"text": "from asyncio", "deadline": deadline, "task": True})
        self.assertEqual(self.dispatcher.in_flight, 0)

    def test_typed_handler_awaits_asyncio(self) -> None:
        """
        A typed (JSON) handler's coroutine runs as a task too.
        """
        @self.app.json("POST", "/typed", status=201)
        async def typed(ctx: Any, body: Any) -> Any:
            await loop_turn()
            return {"got": body}

        self.dispatcher.request_received(request("/typed", "POST", b'{"a": 1}'))
        self.turn()
        [response] = self.responses()
        self.assertEqual((response.status, json.loads(response.body)), (201, {"got": {"a": 1}}))

    def test_handler_awaits_deferreds_too(self) -> None:
        """
        A coroutine running as an asyncio task may still await Deferreds (a
        Twisted API, the SDK's own objects), before and after asyncio awaits.
        """
        pending: List[Deferred] = []

        @self.app.endpoint("GET", "/mixed")
        async def mixed(ctx: Any) -> RawResponse:
            d: Deferred = Deferred()
            pending.append(d)
            first = await d
            await loop_turn()
            failing: Deferred = Deferred()
            pending.append(failing)
            try:
                await failing
            except ValueError as e:
                second = str(e)
            return RawResponse.text(f"{first} {second}")

        self.dispatcher.request_received(request("/mixed"))
        self.turn()
        self.assertEqual(self.responses(), [])
        pending[0].callback("one")
        self.turn()
        pending[1].errback(ValueError("two"))
        self.turn()
        [response] = self.responses()
        self.assertEqual((response.status, response.body), (200, b"one two"))

    def test_cancel_cancels_the_task(self) -> None:
        """
        A CANCEL cancels the handler's asyncio task: the coroutine sees
        C{asyncio.CancelledError} at its await, nothing is answered, and the
        request is no longer in flight.
        """
        seen: List[str] = []

        @self.app.endpoint("GET", "/forever")
        async def forever(ctx: Any) -> RawResponse:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                seen.append(f"cancelled: {ctx.cancel_reason.value}")
                raise
            return RawResponse.text("never")

        frame = request("/forever")
        self.dispatcher.request_received(frame)
        self.turn()
        self.assertEqual(self.dispatcher.in_flight, 1)
        self.dispatcher.cancel(frame.correlation_id, CancelReason.TIMEOUT)
        self.turn()
        self.assertEqual(seen, ["cancelled: Timeout"])
        self.assertEqual(self.responses(), [])
        self.assertEqual(self.dispatcher.in_flight, 0)
        self.assertEqual(self.dispatcher.late_results, 0)

    def test_cancel_while_awaiting_a_deferred(self) -> None:
        """
        A task cancelled while its coroutine awaits a Deferred cancels that
        Deferred, and the coroutine sees Twisted's CancelledError, as it
        would on the default reactor.
        """
        waiting: List[Deferred] = []
        seen: List[BaseException] = []

        @self.app.endpoint("GET", "/deferred")
        async def deferred(ctx: Any) -> RawResponse:
            d: Deferred = Deferred()
            waiting.append(d)
            try:
                await d
            except BaseException as e:
                seen.append(e)
                raise
            return RawResponse.text("never")

        frame = request("/deferred")
        self.dispatcher.request_received(frame)
        self.turn()
        self.dispatcher.cancel(frame.correlation_id, CancelReason.CLIENT_DISCONNECTED)
        self.turn()
        self.assertEqual([type(e) for e in seen], [CancelledError])
        self.failureResultOf(waiting[0], CancelledError)
        self.assertEqual(self.responses(), [])
        self.assertEqual(self.dispatcher.late_results, 0)

    def test_handler_error(self) -> None:
        """
        An exception raised after an asyncio await is a 500 problem, as on
        the default reactor.
        """
        @self.app.endpoint("GET", "/boom")
        async def boom(ctx: Any) -> RawResponse:
            await loop_turn()
            raise KeyError("boom")

        self.dispatcher.request_received(request("/boom"))
        self.turn()
        [response] = self.responses()
        self.assertEqual(response.status, 500)
        self.assertEqual(json.loads(response.body)["type"],
                         "https://stellarouter.dev/problems/internal-error")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_streamed_body_from_asyncio(self) -> None:
        """
        A StreamingResponse whose async generator awaits asyncio (a database
        cursor, say) is pumped on the loop.
        """
        @self.app.endpoint("GET", "/rows")
        def rows(ctx: Any) -> StreamingResponse:
            async def body() -> Any:
                for i in range(3):
                    await loop_turn()
                    yield f"row {i}\n".encode()
            return StreamingResponse(200, [("Content-Type", "text/plain")], body())

        self.dispatcher.request_received(request("/rows"))
        self.turn(20)
        frames = self.sender.take()
        self.assertEqual(decode_response(frames[0].payload).status, 200)
        chunks = [decode_stream_data(f.payload) for f in frames[1:]]
        self.assertEqual(b"".join(c[0] for c in chunks), b"row 0\nrow 1\nrow 2\n")
        self.assertTrue(chunks[-1][1])
        self.assertEqual(self.dispatcher.in_flight, 0)

    def test_streamed_upload_read_by_an_asyncio_handler(self) -> None:
        """
        A streaming endpoint's asyncio handler reads C{ctx.body} (a
        BodyStream, whose waits are Deferreds) as chunks arrive.
        """
        @self.app.endpoint("POST", "/upload", streaming=True)
        async def upload(ctx: Any) -> RawResponse:
            chunks = []
            async for chunk in ctx.body:
                await loop_turn()
                chunks.append(chunk)
            return RawResponse(200, [], b"|".join(chunks))

        frame = Frame(FrameType.REQUEST, new_correlation_id(), encode_request(RequestMessage(
            "POST", "/upload", "/upload", streaming=True)))
        self.dispatcher.request_received(frame)
        self.turn()
        for chunk, end in ((b"one", False), (b"two", True)):
            self.dispatcher.stream_data_received(Frame(
                FrameType.REQUEST_STREAM_DATA, frame.correlation_id,
                encode_stream_data(chunk, end=end)))
            self.turn()
        [response] = self.responses()
        self.assertEqual((response.status, response.body), (200, b"one|two"))

    def test_awaitable_deferred_result(self) -> None:
        """
        L{awaitable_deferred} on a loop gives the coroutine's result.
        """
        async def answer() -> int:
            await loop_turn()
            return 42

        d = awaitable_deferred(answer(), self.loop)
        self.assertNoResult(d)
        self.turn()
        self.assertEqual(self.successResultOf(d), 42)


class DefaultReactorTests(SynchronousTestCase):
    def test_asyncio_await_names_the_fix(self) -> None:
        """
        On the default reactor a handler that awaits asyncio gets a 500 whose
        problem and log line name the fix (the asyncio reactor), not a bare
        "no running event loop".
        """
        app = Microservice("svc", "1.0.0")

        @app.endpoint("GET", "/aio")
        async def aio(ctx: Any) -> RawResponse:
            # Fails at once: asyncio.sleep looks the running loop up first.
            await asyncio.sleep(1)
            return RawResponse.text("unreachable")

        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock()).request_received(request("/aio"))
        [frame] = sender.take()
        response = decode_response(frame.payload)
        self.assertEqual(response.status, 500)
        problem = json.loads(response.body)
        self.assertEqual(problem["type"],
                         "https://stellarouter.dev/problems/asyncio-reactor-required")
        self.assertIn("twistd -r asyncio stella-micro", problem["detail"])
        self.assertIn("reactor: asyncio", problem["detail"])
        [error] = [e for e in events if e.get("log_level") is LogLevel.critical]
        self.assertIn("twistd -r asyncio", error["fix"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


    def test_streamed_body_awaiting_asyncio_names_the_fix(self) -> None:
        """
        On the default reactor, a StreamingResponse whose generator awaits
        asyncio is aborted, and the log line names the fix.
        """
        app = Microservice("svc", "1.0.0")

        @app.endpoint("GET", "/rows")
        def rows(ctx: Any) -> StreamingResponse:
            async def body() -> Any:
                await asyncio.sleep(1)
                yield b"unreachable"
            return StreamingResponse(200, [], body())

        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock()).request_received(request("/rows"))
        header, abort = sender.take()
        self.assertEqual(decode_response(header.payload).status, 200)
        self.assertTrue(decode_stream_data(abort.payload)[2])
        [error] = [e for e in events if e.get("log_level") is LogLevel.critical]
        self.assertIn("twistd -r asyncio stella-micro", error["hint"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_other_awaitables(self) -> None:
        """
        A handler may return any awaitable, not only a coroutine (before, one
        that was not a coroutine raised out of the dispatcher, unanswered).
        """
        app = Microservice("svc", "1.0.0")
        pending: Deferred = Deferred()

        class Later:
            def __await__(self) -> Any:
                value = yield from pending
                return RawResponse.text(value)

        app.endpoint("GET", "/later")(lambda ctx: Later())
        sender = FakeFrameSender()
        RequestDispatcher(app, sender, Clock()).request_received(request("/later"))
        self.assertEqual(sender.take(), [])
        pending.callback("later")
        [frame] = sender.take()
        self.assertEqual(decode_response(frame.payload).body, b"later")


class ReactorConfigTests(SynchronousTestCase):
    def test_reactor_key(self) -> None:
        """
        C{reactor: asyncio} is read; any other value is refused, naming the
        key and the accepted value.
        """
        base = {"region": "eu1", "routers": [{"transport": "tcp",
                                              "address": "tcp:host=127.0.0.1:port=5100"}]}
        self.assertIsNone(parse_microservice_config(base).reactor)
        self.assertEqual(parse_microservice_config({**base, "reactor": "asyncio"}).reactor,
                         "asyncio")
        error = self.assertRaises(ConfigError, parse_microservice_config,
                                  {**base, "reactor": "uvloop"})
        self.assertIn("reactor: 'uvloop'", str(error))
        self.assertIn("asyncio", str(error))

    def test_wrong_reactor_refused(self) -> None:
        """
        C{twistd stella-micro} with C{reactor: asyncio} refuses to start on
        another, already installed reactor (as under trial), naming the fix.
        """
        self.assertIsNone(reactor_event_loop(__import__("twisted.internet.reactor",
                                                        fromlist=["reactor"])))
        problem = use_asyncio_reactor()
        self.assertIsNotNone(problem)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("region: eu1\nreactor: asyncio\napp: examples.slowpoke:service\n"
                    "routers: [{transport: tcp, address: 'tcp:host=127.0.0.1:port=5100'}]\n")
        error = self.assertRaises(usage.UsageError, Options().parseOptions, ["--config", path])
        self.assertIn("reactor: asyncio", str(error))
        self.assertIn("twistd -r asyncio stella-micro", str(error))
