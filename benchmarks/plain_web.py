#!/usr/bin/env python3
"""
A plain twisted.web server with the same upload (hash) and download
(pattern) resources as the Billing example, for the streaming benchmark's
baseline: the bytes go client -> server directly, no gateway, no hop.

    python benchmarks/plain_web.py PORT
"""

import hashlib
import json
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

BLOCK = bytes(range(256)) * 256


class HashingRequest(Request):
    """
    Hashes the body as it arrives instead of buffering it.
    """

    def gotLength(self, length):  # type: ignore[no-untyped-def]
        super().gotLength(length)
        self.digest = hashlib.sha256()
        self.size = 0

    def handleContentChunk(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)


class Upload(Resource):
    isLeaf = True

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        request.setResponseCode(201)
        return json.dumps({"bytes": request.size, "sha256": request.digest.hexdigest()}).encode()


class Download(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        size = int(request.args.get(b"bytes", [b"1048576"])[0])
        producer = Pattern(request, size)
        request.registerProducer(producer, True)
        producer.resumeProducing()
        return NOT_DONE_YET


class Pattern:
    def __init__(self, request, size):  # type: ignore[no-untyped-def]
        self.request, self.left, self.paused = request, size, False

    def pauseProducing(self):  # type: ignore[no-untyped-def]
        self.paused = True

    def resumeProducing(self):  # type: ignore[no-untyped-def]
        self.paused = False
        while not self.paused and self.left > 0:
            piece = BLOCK[: min(len(BLOCK), self.left)]
            self.left -= len(piece)
            self.request.write(piece)
        if self.left == 0 and self.request is not None:
            request, self.request = self.request, None
            request.unregisterProducer()
            request.finish()

    def stopProducing(self):  # type: ignore[no-untyped-def]
        self.left = 0


class Ping(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        return b"pong"


def main() -> None:
    root = Resource()
    root.putChild(b"upload", Upload())
    root.putChild(b"download", Download())
    root.putChild(b"ping", Ping())
    site = Site(root, requestFactory=HashingRequest)
    site.log = lambda request: None  # type: ignore[method-assign]
    reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
