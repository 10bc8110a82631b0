"""
How much of the proxied path is twisted.web's HTTP/1.1 handling, and how
much an edge on a C parser could save: a measurement for deciding whether to
own the gateway's HTTP edge (issue 21's "GET >= 1.0x bare Klein" target).

    pip install httptools        # optional: without it only twisted.web is timed
    python benchmarks/http_floor.py [-n 20000] [-r 3]

Times, in one process without sockets (C{time.process_time}, best of R
interleaved rounds; requests written into a C{StringTransport}):

 - C{twisted-leaf}: twisted.web's C{Site} with a leaf resource answering
   C{pong}, as C{hot_path.py}'s C{leaf-get}: the HTTP part of every request
   the gateway (and Klein) serves;
 - C{gateway-edge}: the gateway's own site, connection and request (its
   twisted.web subclasses) with a stub in place of the proxy that answers
   C{pong} at once through the gateway's writer: the gateway's HTTP part
   without routing, frames or the microservice;
 - C{httptools-sketch}: a sketch of an edge on httptools (llhttp, Node's
   parser): the head parsed in C, a request object with its header list,
   limits on the header count and head size, keep-alive as the parser
   says, a C{Date} header formatted once a second, a C{Content-Length}
   answer.  It lacks what a real edge needs on top (timers, flow control,
   pipelining order, refusals, uploads), so it is a lower bound of what
   such an edge would cost, not an estimate;
 - C{gateway-get-c16} and C{gateway-get-c16-quiet} from C{hot_path.py}:
   the whole proxied GET (gateway and SDK in one process), to put the two
   above in proportion.

Each for wrk's two-line GET head and a browser-like head of ten headers.
C{--vectors} prints instead what llhttp does with request-smuggling and
framing vectors (L{VECTORS}).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from email.utils import formatdate
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hot_path  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.web.server import NOT_DONE_YET  # noqa: E402

from stellarouter.gateway.writer import write_response  # noqa: E402
from stellarouter.testing.harness import InMemoryDeployment  # noqa: E402

try:
    import httptools
except ImportError:  # (optional: only the sketch needs it)
    httptools = None

BROWSER_GET = (b"GET /ping HTTP/1.1\r\nHost: gateway.test\r\n"
               b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r\n"
               b"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
               b"Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate\r\n"
               b"Connection: keep-alive\r\nCookie: session=abcdef0123456789\r\n"
               b"Cache-Control: no-cache\r\nPragma: no-cache\r\n"
               b"X-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n\r\n")

MAX_HEADERS = 100
MAX_HEAD_BYTES = 16384


class _Request:
    __slots__ = ("method", "target", "headers", "head_bytes", "body")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.body: List[bytes] = []


class SketchEdge(Protocol):
    """
    The essentials of an HTTP/1.1 edge on httptools (see the module
    docstring).
    """

    _date: Tuple[int, bytes] = (-1, b"")

    def connectionMade(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.request: Optional[_Request] = None

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                 b"Content-Length: 0\r\n\r\n")
            self.transport.loseConnection()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self.request = _Request()

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.target += url
        request.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.head_bytes += len(name) + len(value)
        if len(request.headers) >= MAX_HEADERS or request.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request head too large")
        request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        request.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.body.append(body)

    def on_message_complete(self) -> None:
        request, self.request = self.request, None
        assert request is not None
        self.answer(request, 200, [(b"Content-Type", b"text/plain; charset=utf-8")], b"pong",
                    self.parser.should_keep_alive())

    def answer(self, request: _Request, status: int, headers: List[Tuple[bytes, bytes]],
               body: bytes, keep_alive: bool) -> None:
        now = int(time.time())
        if self._date[0] != now:
            SketchEdge._date = (now, formatdate(now, usegmt=True).encode("ascii"))
        lines = [b"HTTP/1.1 %d OK" % status, b"Date: " + self._date[1],
                 b"Content-Length: %d" % len(body)]
        lines.extend(name + b": " + value for name, value in headers)
        if not keep_alive:
            lines.append(b"Connection: close")
        lines.append(b"")
        lines.append(b"" if request.method == b"HEAD" else body)
        self.transport.write(b"\r\n".join(lines))
        if not keep_alive:
            self.transport.loseConnection()


class _StubProxy:
    """
    Answers every proxied request at once, as the proxy's response sink
    writes a whole answer.
    """

    def render(self, request: Any) -> object:
        own = request.take_own_headers()
        lines = [b"%s: %s\r\n" % pair for pair in own] if own else []
        lines += [b"Content-Type: text/plain; charset=utf-8\r\n", b"Content-Length: 4\r\n"]
        write_response(request, 200, lines, b"pong")
        request.finish()
        return NOT_DONE_YET


def _gateway_edge(raw: bytes) -> Callable[[], None]:
    deployment = InMemoryDeployment(clock=hot_path.HeapClock())  # type: ignore[arg-type]
    site = deployment.gateway.site
    site.proxy = _StubProxy()
    site.telemetry = None
    return hot_path._direct(site, raw)


def _sketch(raw: bytes) -> Callable[[], None]:
    transport = StringTransport()
    edge = SketchEdge()
    edge.makeConnection(transport)

    def one() -> None:
        edge.dataReceived(raw)
        if not transport.value().startswith(b"HTTP/1.1 200"):
            raise AssertionError(transport.value()[:200])
        transport.clear()

    return one


#: Request-smuggling and framing vectors: what llhttp does with each.
VECTORS = {
    "Content-Length and Transfer-Encoding": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different Content-Lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                     b"Content-Length: 5\r\n\r\nabcde",
    "Content-Length: 4, 4": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd",
    "Content-Length: +4": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    "Content-Length: -1": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "Transfer-Encoding: chunked, gzip": b"POST / HTTP/1.1\r\nHost: a\r\n"
                                        b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding: xchunked": b"POST / HTTP/1.1\r\nHost: a\r\n"
                                   b"Transfer-Encoding: xchunked\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"fffffffffffffffff1\r\nx\r\n",
    "LF in a chunk extension": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               b"\r\n1;a\nx\r\n0\r\n\r\n",
    "Transfer-Encoding on HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"0\r\n\r\n",
}


def print_vectors() -> None:
    """
    Feed each of L{VECTORS} to llhttp and print whether it is refused.
    """
    for name, raw in VECTORS.items():
        parser = httptools.HttpRequestParser(object())
        try:
            parser.feed_data(raw)
        except httptools.HttpParserError as e:
            print(f"  refused   {name:38s} ({e})")
        else:
            print(f"  ACCEPTED  {name}")


def setups() -> Dict[str, Callable[[], Callable[[], None]]]:
    leaf = lambda raw: hot_path._direct(hot_path._QuietSite(hot_path._Leaf()), raw)  # noqa: E731
    table: Dict[str, Callable[[], Callable[[], None]]] = {
        "twisted-leaf": lambda: leaf(hot_path.GET),
        "twisted-leaf-browser": lambda: leaf(BROWSER_GET),
    }
    table["gateway-edge"] = lambda: _gateway_edge(hot_path.GET)
    table["gateway-edge-browser"] = lambda: _gateway_edge(BROWSER_GET)
    if httptools is not None:
        table["httptools-sketch"] = lambda: _sketch(hot_path.GET)
        table["httptools-sketch-browser"] = lambda: _sketch(BROWSER_GET)
    gateway = hot_path.setups()
    table["gateway-get-c16"] = gateway["gateway-get-c16"]
    table["gateway-get-c16-quiet"] = gateway["gateway-get-c16-quiet"]
    return table


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per round")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds (best is kept)")
    parser.add_argument("--vectors", action="store_true",
                        help="only print what llhttp does with request-smuggling vectors")
    args = parser.parse_args(argv)
    if httptools is None:
        print("httptools is not installed (pip install httptools): timing twisted.web only")
    elif args.vectors:
        print_vectors()
        return 0
    ones = {name: make() for name, make in setups().items()}
    for one in ones.values():
        for _ in range(1000):
            one()
    best = {name: float("inf") for name in ones}
    for _ in range(args.rounds):
        for name, one in ones.items():  # interleaved
            gc.collect()
            best[name] = min(best[name], hot_path.measure(one, args.n))
    print(f"CPU us per request (best of {args.rounds} rounds of {args.n}, one process, "
          "no sockets)")
    for name, us in best.items():
        print(f"  {name:26s} {us:7.1f} us")
    if httptools is not None:
        for suffix in ("", "-browser"):
            edge, sketch = best[f"gateway-edge{suffix}"], best[f"httptools-sketch{suffix}"]
            print(f"  head{suffix or '-wrk'}: gateway edge - httptools sketch = "
                  f"{edge - sketch:.1f} us, {(edge - sketch) / best['gateway-get-c16']:.0%} of "
                  f"the proxied GET with telemetry on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
