"""
The per-request CPU cost of the proxied path, in one process, without
sockets: a tool for finding where the gateway's time goes.

    python benchmarks/hot_path.py                 # GET /ping and POST 1 KiB echo
    python benchmarks/hot_path.py -n 50000 --profile gateway-get

What it times (C{time.process_time} over N keep-alive requests on one
connection, best of R rounds, gc enabled):

 - C{gateway-get}: C{GET /ping} written into a C{GatewaySite} channel on a
   C{StringTransport}; the gateway dispatches it over the in-memory transport
   to the Billing example's SDK in the same process, and the answer comes
   back.  Both sides' CPU (gateway and microservice), which is what a
   deployment with both on one core pays, minus the kernel's share.
 - C{klein-get}: the same request into a bare Klein app with the same handler
   (C{benchmarks/direct_klein.py}).
 - C{leaf-get}: a twisted.web leaf resource answering directly: the floor of
   twisted.web's own per-request cost.
 - C{sdk-get}: the microservice side alone (REQUEST frames into the SDK's
   stream protocol), the part of C{gateway-get} a microservice process pays.
 - the same four for C{POST} with a 1 KiB body echoed back.
 - C{sdk-typed-post}: the microservice side of a typed JSON endpoint,
   C{POST /invoices} with C{{"customer": ..., "amount_cents": ...}} decoded
   into a dataclass and a dataclass encoded back (201): the cost of the
   SDK's typed-JSON path.

The in-memory transport hands frames over with C{callLater(0)} on a clock
that keeps its calls in a heap, as the reactor does (L{HeapClock}; Twisted's
test C{Clock} sorts a list on every call and would dominate the profile).  The ratio
klein/gateway predicts the wrk ratio of C{gateway_vs_klein.sh} minus the
syscalls (which the hop adds: about 5-10 us per request on each side).
C{--profile NAME} runs one setup under cProfile and prints the functions with
the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import os
import pstats
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from klein import Klein  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.base import DelayedCall  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from stellarouter import microservice  # noqa: E402
from stellarouter.microservice import Microservice, RawRequestContext, RawResponse  # noqa: E402
from stellarouter.config.observability import AccessLogConfig, MetricsConfig  # noqa: E402
from stellarouter.testing.harness import InMemoryDeployment  # noqa: E402

BODY = b"x" * 1024
GET = b"GET /ping HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
POST = (b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1024\r\n\r\n" + BODY)


class HeapClock:
    """
    A manual clock (C{IReactorTime} plus C{advance}) whose calls sit in a
    heap, like the reactor's: C{callLater} and C{cancel} cost O(log n).
    """

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._heap: List[Tuple[float, int, DelayedCall]] = []
        self._seq = itertools.count()
        self._cancelled = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any,
                  **kw: Any) -> DelayedCall:
        call = DelayedCall(self.now + delay, f, args, kw, self._cancel, self._push,
                           seconds=self.seconds)
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.getTime(), next(self._seq), call))

    def _cancel(self, call: DelayedCall) -> None:
        # As the reactor does: drop cancelled calls once they are half the heap.
        self._cancelled += 1
        if self._cancelled > 50 and self._cancelled > len(self._heap) // 2:
            self._heap = [e for e in self._heap if e[2].active()]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def getDelayedCalls(self) -> List[DelayedCall]:
        return [c for _, _, c in self._heap if c.active()]

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            when, _, call = heapq.heappop(heap)
            if not call.active() or call.getTime() != when:
                continue  # cancelled, or reset (pushed again at its new time)
            call.called = 1
            call.func(*call.args, **call.kw)

    def pending(self) -> bool:
        """
        Whether a call is due now.
        """
        heap = self._heap
        while heap and not heap[0][2].active():
            heapq.heappop(heap)
        return bool(heap) and heap[0][0] <= self.now


def _app() -> Microservice:
    app = Microservice("bench", "1.0.0")

    @app.endpoint("GET", "/ping")
    def ping(ctx: RawRequestContext) -> RawResponse:
        return RawResponse.text("pong")

    @app.endpoint("POST", "/echo")
    def echo(ctx: RawRequestContext) -> RawResponse:
        return RawResponse(200, (("Content-Type", "application/octet-stream"),), ctx.body)

    return app


@dataclass(frozen=True)
class NewInvoice:
    """
    The typed body of the C{sdk-typed-post} setup.
    """

    customer: str
    amount_cents: int

    @classmethod
    def from_json(cls, obj: Any) -> "NewInvoice":
        # How a typed body had to be read before the SDK decoded dataclasses
        # itself (the Billing example's hand validation), for measuring an
        # older checkout with this script.
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        customer, amount = obj.get("customer"), obj.get("amount_cents")
        if not isinstance(customer, str) or not customer:
            raise ValueError("'customer' must be a non-empty string")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ValueError("'amount_cents' must be a non-negative integer")
        return cls(customer, amount)


@dataclass(frozen=True)
class Invoice:
    id: str
    customer: str
    amount_cents: int
    status: str = "open"


def _typed_app() -> Microservice:
    app = Microservice("bench", "1.0.0")
    # An SDK that decodes dataclasses itself takes the class; an older one
    # needs the hand-written reader.
    typed = hasattr(microservice, "Problem")
    request_type: Any = NewInvoice if typed else NewInvoice.from_json

    @app.json("POST", "/invoices", status=201, request_type=request_type)
    def create(ctx: RawRequestContext, new: NewInvoice) -> Invoice:
        return Invoice("inv-1", new.customer, new.amount_cents)

    return app


class _Klein:
    app = Klein()

    @app.route("/ping", methods=["GET"])
    def ping(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"pong"

    @app.route("/echo", methods=["POST"])
    def echo(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return request.content.read()


class _Leaf(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"pong"

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"application/octet-stream")
        return request.content.read()


class _QuietSite(Site):
    noisy = False

    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def _channel(site: Site) -> StringTransport:
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    return transport, channel


def _direct(site: Site, raw: bytes) -> Callable[[], None]:
    transport, channel = _channel(site)

    def one() -> None:
        channel.dataReceived(raw)
        if not transport.value():
            raise AssertionError("no response")
        transport.clear()

    return one


def _gateway(raw: bytes) -> Callable[[], None]:
    clock = HeapClock()
    deployment = InMemoryDeployment(clock=clock)  # type: ignore[arg-type]
    deployment.add(_app())
    transport, channel = _channel(deployment.gateway.site)
    expected = b"HTTP/1.1 200"

    def one() -> None:
        channel.dataReceived(raw)
        while clock.pending():
            clock.advance(0)
        if not transport.value().startswith(expected):
            raise AssertionError(transport.value()[:200])
        transport.clear()

    return one


def _gateway_concurrent(raw: bytes, connections: int = 16,
                        telemetry: bool = True) -> Callable[[], None]:
    """
    C{connections} keep-alive clients each send one request, then the
    frames are pumped until all are answered: requests in flight together,
    as under C{wrk -c16}, so per-batch costs (frame writes, timers) are
    shared.  One call is C{connections} requests.

    @param telemetry: metrics and both access logs on (the default
        configuration, but writing to /dev/null), or off.
    """
    clock = HeapClock()
    # (On: both access logs write to /dev/null, so their lines are formatted
    # and written as in a real process; into the process's own log they would
    # only be buffered here, no log observer formats them in this process.)
    settings = ({"access_log": AccessLogConfig(path=os.devnull)} if telemetry else
                {"access_log": AccessLogConfig(enabled=False),
                 "metrics": MetricsConfig(enabled=False)})
    deployment = InMemoryDeployment(clock=clock, **settings)  # type: ignore[arg-type]
    deployment.add(_app())
    clients = [_channel(deployment.gateway.site) for _ in range(connections)]
    expected = b"HTTP/1.1 200"

    def one() -> None:
        for _, channel in clients:
            channel.dataReceived(raw)
        while clock.pending():
            clock.advance(0)
        for transport, _ in clients:
            if not transport.value().startswith(expected):
                raise AssertionError(transport.value()[:200])
            transport.clear()

    one.requests = connections  # type: ignore[attr-defined]
    return one


TYPED = b'{"customer":"acme","amount_cents":1250}'


def _sdk(raw: bytes) -> Callable[[], None]:
    """
    The microservice side alone: REQUEST frames (as the gateway sends them for
    C{raw}) written into the SDK's stream protocol, RESPONSE frames written
    to a C{StringTransport}.
    """
    from stellarouter.common.enums import FrameType, TransportType
    from stellarouter.common.frames import FrameDecoder, encode_frame
    from stellarouter.common.ids import new_correlation_id
    from stellarouter.common.models import Frame, InstanceDescriptor
    from stellarouter.common.payloads import (
        COMPACT_HEADERS,
        HelloAck,
        RequestMessage,
        decode_hello,
        encode_hello_ack,
        encode_request,
    )
    from stellarouter.microservice.session import RouterSession
    from stellarouter.transports.stream import FrameStreamProtocol

    typed = raw is TYPED
    app = _typed_app() if typed else _app()
    clock = HeapClock()
    session = RouterSession(app, InstanceDescriptor("bench-1", "bench", "1.0.0", "eu1"),
                            "bench", clock)  # type: ignore[arg-type]
    protocol = FrameStreamProtocol(session, TransportType.TCP)
    transport = StringTransport()
    protocol.makeConnection(transport)
    # Answer the HELLO as the gateway does: take up the features it knows.
    (hello_frame,) = FrameDecoder().feed(transport.value())
    features = tuple(f for f in decode_hello(hello_frame.payload).features
                     if f == COMPACT_HEADERS)
    session.frameReceived(Frame(FrameType.HELLO, hello_frame.correlation_id, encode_hello_ack(
        HelloAck(True, None, "gw", "eu1", features))))
    transport.clear()
    get = raw is GET
    if typed:
        message = RequestMessage(
            "POST", "/invoices", "/invoices", {}, "", [
                ("Host", "gateway.test"), ("Content-Type", "application/json"),
                ("Content-Length", str(len(TYPED)))],
            {}, clock.seconds() + 30.0, False, TYPED)
    else:
        message = RequestMessage(
            "GET" if get else "POST", "/ping" if get else "/echo", "/ping" if get else "/echo",
            {}, "", [("Host", "gateway.test")] + ([] if get else [
                ("Content-Type", "application/octet-stream"), ("Content-Length", "1024")]),
            {}, clock.seconds() + 30.0, False, b"" if get else BODY)
    frame = encode_frame(Frame(FrameType.REQUEST, new_correlation_id(),
                               encode_request(message, bool(features))))

    def one() -> None:
        protocol.dataReceived(frame)
        if not transport.value():
            raise AssertionError("no response")
        transport.clear()

    return one


def setups() -> Dict[str, Callable[[], Callable[[], None]]]:
    klein_site = lambda: _QuietSite(_Klein().app.resource())  # noqa: E731
    leaf_site = lambda: _QuietSite(_Leaf())  # noqa: E731
    return {
        "gateway-get": lambda: _gateway(GET),
        "gateway-get-c16": lambda: _gateway_concurrent(GET),
        # The same with metrics and both access logs off (issue 21: what they cost).
        "gateway-get-c16-quiet": lambda: _gateway_concurrent(GET, telemetry=False),
        "sdk-get": lambda: _sdk(GET),
        "klein-get": lambda: _direct(klein_site(), GET),
        "leaf-get": lambda: _direct(leaf_site(), GET),
        "gateway-post": lambda: _gateway(POST),
        "sdk-post": lambda: _sdk(POST),
        "sdk-typed-post": lambda: _sdk(TYPED),
        "klein-post": lambda: _direct(klein_site(), POST),
        "leaf-post": lambda: _direct(leaf_site(), POST),
    }


def measure(one: Callable[[], None], n: int) -> float:
    """
    CPU microseconds per call of C{one}, over C{n} calls.
    """
    per_call = getattr(one, "requests", 1)
    calls = max(n // per_call, 1)
    start = time.process_time()
    for _ in range(calls):
        one()
    return (time.process_time() - start) / (calls * per_call) * 1e6


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per round")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds (best is kept)")
    parser.add_argument("--profile", metavar="SETUP", help="profile one setup instead")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--run", metavar="SETUP",
                        help="only run SETUP -n requests after a warm-up and gc.freeze(), "
                             "timing nothing (for benchmarks/instructions.sh)")
    args = parser.parse_args(argv)
    table = setups()
    if args.run:
        one = table[args.run]()
        per_call = getattr(one, "requests", 1)
        for _ in range(max(300 // per_call, 1)):
            one()
        gc.collect()
        gc.freeze()
        for _ in range(max(args.n // per_call, 1)):
            one()
        return 0
    if args.profile:
        one = table[args.profile]()
        for _ in range(1000):
            one()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.n):
            one()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
        return 0
    ones = {name: make() for name, make in table.items()}
    for one in ones.values():
        for _ in range(1000):
            one()
    best = {name: float("inf") for name in ones}
    for _ in range(args.rounds):
        for name, one in ones.items():  # interleaved: A B C A B C ...
            gc.collect()
            best[name] = min(best[name], measure(one, args.n))
    print(f"CPU us per request (best of {args.rounds} rounds of {args.n}, one process, "
          "no sockets)")
    for name, us in best.items():
        print(f"  {name:13s} {us:7.1f} us")
    for kind in ("get", "post"):
        g, k, leaf = best[f"gateway-{kind}"], best[f"klein-{kind}"], best[f"leaf-{kind}"]
        print(f"  {kind.upper():4s} klein/gateway {k / g:.2f}x  leaf/gateway {leaf / g:.2f}x  "
              f"(gateway path costs {g - leaf:.1f} us over a bare leaf)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
