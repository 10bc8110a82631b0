"""
The baseline of the gateway benchmark: a bare Klein app with the same
handlers as the microservices behind the gateway, served directly by
twisted.web -- no gateway, no binary hop:

 - C{GET /ping}: the Billing example's (C{text/plain; charset=utf-8} "pong");
 - C{POST /echo}: C{benchmarks.apps:echo}'s, the request body answered back
   as C{application/octet-stream}.

    python benchmarks/direct_klein.py [--port 8081] [--interface 127.0.0.1]
                                      [--like-gateway] [--gc-freeze]

Default: C{Site(app.resource())} with the access log off.  Klein's
C{app.run()} is not used on purpose: it turns the access log on (~60-80 us per
request), which the gateway does not pay.

C{--like-gateway}: the same L{Site} settings as the gateway's C{GatewaySite}
(C{parsePOSTFormSubmission=False}, access log off, C{noisy=False}), so the
like-for-like ratio is visible.  For C{GET /ping} form parsing never runs, so
both variants should measure the same; the flag matters for POST bodies.

C{--gc-freeze}: C{gc.collect(); gc.freeze()} once listening, as
C{twistd stella-gateway} does after start-up (off by default: the bare
baseline is a plain Klein app).
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, List, Optional

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web import http
from twisted.web.server import Site


class DirectApp:
    """
    The Billing example's C{GET /ping} and the echo microservice's
    C{POST /echo}, as a class-based Klein app.
    """

    app = Klein()

    @app.route("/ping", methods=["GET"])
    def ping(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"pong"

    @app.route("/echo", methods=["POST"])
    def echo(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/octet-stream")
        body: bytes = request.content.read()
        return body


class QuietSite(Site):
    """
    A L{Site} without the access log (L{Site} writes one line per request to
    the legacy log file by default).
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def make_site(like_gateway: bool = False) -> Site:
    """
    The site under test: C{Site(DirectApp().app.resource())}, access log off;
    with C{like_gateway}, also form parsing off as in C{GatewaySite}.
    """
    resource = DirectApp().app.resource()
    if like_gateway:
        return QuietSite(resource, parsePOSTFormSubmission=False)
    return QuietSite(resource)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("port", nargs="?", type=int, default=None,
                        help="TCP port (default 8081); same as --port")
    parser.add_argument("--port", dest="port_opt", type=int, default=None)
    parser.add_argument("--interface", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--like-gateway", action="store_true",
                        help="the gateway's Site settings: parsePOSTFormSubmission=False, no access log")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.collect(); gc.freeze() after start-up, as twistd stella-gateway does")
    args = parser.parse_args(argv)
    port = args.port_opt if args.port_opt is not None else (args.port if args.port is not None else 8081)

    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor  # (the module global is typed as a module, not a reactor)
    site = make_site(args.like_gateway)
    listening: Any = reactor.listenTCP(port, site, interface=args.interface)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    variant = "like-gateway" if args.like_gateway else "plain"
    print(f"direct Klein ({variant}{', gc.freeze' if args.gc_freeze else ''}) on "
          f"http://{args.interface}:{listening.getHost().port}/ping and /echo", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
