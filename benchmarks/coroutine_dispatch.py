"""
The SDK's cost for a request whose handler is an C{async def}, on the
default reactor (no event loop): REQUEST frames straight into a
L{RequestDispatcher}, answers into a sink.

    python benchmarks/coroutine_dispatch.py              # microseconds per request
    N=3000 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/coroutine_dispatch.py          # instructions: run N=3000 and N=6000,
                                                         # divide the difference by 3000
"""

from __future__ import annotations

import os
import time

from twisted.internet.task import Clock

from stellarouter.common.enums import FrameType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.common.payloads import RequestMessage, encode_request
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.microservice.dispatcher import RequestDispatcher


class _Sink:
    def sendFrame(self, frame: Frame) -> None:
        pass


def main() -> None:
    app = Microservice("svc", "1.0.0")
    pong = RawResponse.text("pong")

    @app.endpoint("GET", "/a")
    async def answer(ctx: object) -> RawResponse:
        return pong

    dispatcher = RequestDispatcher(app, _Sink(), Clock())
    payload = encode_request(RequestMessage("GET", "/a", "/a"))
    count = int(os.environ.get("N", "50000"))
    frames = [Frame(FrameType.REQUEST, new_correlation_id(), payload) for _ in range(count)]
    best = float("inf")
    for _ in range(int(os.environ.get("R", "1" if "N" in os.environ else "7"))):
        started = time.process_time()
        for frame in frames:
            dispatcher.request_received(frame)
        best = min(best, time.process_time() - started)
    print(f"{best / count * 1e6:.3f} us per request to an async def handler")


if __name__ == "__main__":
    main()
