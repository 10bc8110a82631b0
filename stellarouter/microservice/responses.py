"""
Frames out of the microservice for one gateway connection: the
L{ResponseWriter} turns a handler's answer into a RESPONSE frame (or a
streaming RESPONSE header and RESPONSE_STREAM_DATA frames when the body does
not fit in one frame), pumps a L{StreamingResponse}'s body as the gateway
grants credit, and sends upload credit.  It also holds the checks that
decide whether a handler's result can be sent at all (L{response_problem})
and the problem+json answers the SDK gives on its own behalf.
"""

from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..common.enums import FrameType
from ..common.frames import FRAME_OVERHEAD, stream_data_frames, stream_data_step
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameSender, ISendBacklog
from ..common.models import Frame
from ..common.payloads import (
    ResponseMessage,
    encode_credit,
    encode_response,
    encode_stream_data,
    headers_problem,
)
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from .budget import ResponseStreamBudget
from .context import RawResponse
from .inbound import StreamCredit

_PROBLEM_HEADERS = (("Content-Type", PROBLEM_CONTENT_TYPE),)
# A member read from an enum class goes through the enum metaclass's
# __getattr__ hook on Python 3.11 (several times a global's cost): the frame
# type every answer has is read once, here.
_RESPONSE = FrameType.RESPONSE

#: What a handler may give as response headers.
ResponseHeaders = Union[Sequence[Tuple[str, str]], Mapping[str, str]]


class ResponseWriter:
    """
    Writes the answers of one gateway connection.

    @ivar compact_headers: RESPONSE headers go in the compact form (the
        gateway's HELLO answer listed C{compact-headers}).
    @ivar version_header: added to every response: the version that served
        it.
    """

    log = Logger()

    def __init__(self, sender: IFrameSender, max_frame_bytes: int, can_stream: bool,
                 version: str) -> None:
        """
        @param sender: where the frames go.
        @param max_frame_bytes: the connection's frame cap.
        @param can_stream: whether a response may be split into stream
            frames (not over UDP, where a response must fit one datagram).
        @param version: the serving version, for C{X-Stella-Version}.
        """
        self.sender = sender
        self.max_frame_bytes = max_frame_bytes
        self.can_stream = can_stream
        self.compact_headers = False
        self.version_header = ("X-Stella-Version", version)
        #: The largest body piece one RESPONSE_STREAM_DATA frame carries.
        self.step = stream_data_step(max_frame_bytes)

    def send(self, cid: CorrelationId, response: RawResponse) -> None:
        """
        Send a valid response: one RESPONSE frame, or a streaming RESPONSE
        header and stream frames (the last one flagged end) when it does not
        fit in one frame.
        """
        body = response.body
        if type(body) is not bytes:
            body = bytes(body)
        headers = response.headers
        # Which version served: the client sees it whatever it asked for.
        all_headers = (*(headers if type(headers) is tuple or type(headers) is list
                         else header_pairs(headers)), self.version_header)
        if len(body) < self.max_frame_bytes:
            payload = encode_response(ResponseMessage(response.status, all_headers, body),
                                      self.compact_headers)
            if len(payload) + FRAME_OVERHEAD <= self.max_frame_bytes:
                self.sender.sendFrame(Frame(_RESPONSE, cid, payload))
                return
        if not self.can_stream:
            self.log.error("the response to request {cid} ({size} bytes) does not fit in one "
                           "datagram of {limit} bytes", cid=cid, size=len(body),
                           limit=self.max_frame_bytes)
            self.send(cid, problem_response(500, "response-too-large", "Response too large",
                                            "the response does not fit in one datagram of "
                                            "this transport", cid))
            return
        header = encode_response(ResponseMessage(response.status, all_headers, b"",
                                                 streaming=True), self.compact_headers)
        if len(header) + FRAME_OVERHEAD > self.max_frame_bytes:
            self.log.error("response headers of request {cid} do not fit in one frame "
                           "({size} bytes)", cid=cid, size=len(header))
            self.send(cid, problem_response(500, "internal-error", "Internal server error",
                                            "the response headers are too large", cid))
            return
        self.sender.sendFrame(Frame(FrameType.RESPONSE, cid, header))
        for frame in stream_data_frames(FrameType.RESPONSE_STREAM_DATA, cid, body,
                                        self.max_frame_bytes):
            self.sender.sendFrame(frame)

    def send_stream_header(self, cid: CorrelationId, status: int,
                           headers: ResponseHeaders) -> None:
        """
        Send the RESPONSE header of a streamed response.
        """
        self.sender.sendFrame(Frame(FrameType.RESPONSE, cid, encode_response(ResponseMessage(
            status, header_pairs(headers) + [self.version_header], b"", streaming=True),
            self.compact_headers)))

    def send_stream_data(self, cid: CorrelationId, chunk: bytes, end: bool = False,
                         abort: bool = False) -> None:
        """
        Send one piece of a streamed response body (or its end, or abort it).
        """
        self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                    encode_stream_data(chunk, end=end, abort=abort)))

    def send_credit(self, cid: CorrelationId, amount: int) -> None:
        """
        Grant the gateway room for C{amount} more bytes of a request body.
        """
        self.sender.sendFrame(Frame(FrameType.RESPONSE_STREAM_DATA, cid,
                                    encode_credit(amount)))

    async def pump(self, cid: CorrelationId, body: object, credit: StreamCredit,
                   budget: ResponseStreamBudget) -> None:
        """
        Send a streamed body (an async iterable or an iterable of bytes) as
        the gateway grants room for it, within the process's C{budget}.
        """
        step = self.step
        sender = self.sender
        backlog = cast(ISendBacklog, sender) if ISendBacklog.providedBy(sender) else None

        async def put(chunk: bytes) -> None:
            offset = 0
            while offset < len(chunk):
                if credit.available <= 0:
                    await credit.wait()
                    continue
                if backlog is not None and backlog.unsent:
                    # The connection's write buffer is full: wait until it
                    # has gone out rather than pile more behind it.
                    await _drained(backlog)
                    continue
                # Room in the process's budget too: what this stream sent
                # stays counted until the gateway credits it back.
                size = budget.take(min(credit.available, step, len(chunk) - offset))
                if not size:
                    await budget.wait()
                    continue
                self.send_stream_data(cid, chunk[offset:offset + size])
                credit.available -= size
                credit.outstanding += size
                credit.sent += size
                if credit.idle is not None:
                    credit.idle.touch()
                offset += size

        if hasattr(body, "__aiter__"):
            iterator = body.__aiter__()
            try:
                while True:
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        break
                    await put(bytes(chunk))
            finally:
                close = getattr(iterator, "aclose", None)
                if close is not None and not getattr(iterator, "ag_running", False):
                    try:
                        await close()
                    except Exception:
                        self.log.failure("closing the body of request {cid} failed", cid=cid)
        else:
            pieces = iter(cast(Iterable[bytes], body))
            try:
                for piece in pieces:
                    await put(bytes(piece))
            finally:
                # Whether it ran out, failed, or was cancelled (client gone,
                # timeout, connection lost): a generator's finally runs now.
                self.close_body(cid, pieces)

    def close_body(self, cid: CorrelationId, body: object) -> None:
        """
        Close a streamed body that will not be (further) sent: C{close()}
        for a generator or any iterator that has it (a file), C{aclose()}
        for an async generator not running.
        """
        close = getattr(body, "close", None)
        aclose = getattr(body, "aclose", None)
        try:
            if close is not None:
                close()
            elif aclose is not None and not getattr(body, "ag_running", False):
                Deferred.fromCoroutine(aclose()).addErrback(
                    lambda failure: self.log.failure(
                        "closing the body of request {cid} failed", failure, cid=cid))
        except Exception:
            self.log.failure("closing the body of request {cid} failed", cid=cid)


def _drained(backlog: ISendBacklog) -> Deferred[None]:
    """
    A Deferred that fires once C{backlog}'s write buffer has drained
    (cancelling it just stops waiting).
    """
    waiter: Deferred[None] = Deferred()
    backlog.notifyDrained(lambda: None if waiter.called else waiter.callback(None))
    return waiter


def response_problem(result: object) -> Optional[str]:
    """
    Why C{result} is not a response the SDK can send, or C{None}.
    """
    if not isinstance(result, RawResponse):
        return f"expected a RawResponse, got {type(result).__name__}"
    status = result.status
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return f"status {status!r} is not a final HTTP status (200-599)"
    if not isinstance(result.body, (bytes, bytearray, memoryview)):
        return f"body must be bytes, not {type(result.body).__name__}"
    headers = result.headers
    if type(headers) is tuple or type(headers) is list:
        return headers_problem(headers)
    try:
        return headers_problem(list(header_pairs(headers)))
    except TypeError:
        return "headers must be (name, value) pairs"


def header_pairs(headers: ResponseHeaders) -> List[Tuple[str, str]]:
    """
    A response's headers as a list of pairs: a handler may give pairs (any
    iterable of them) or a mapping of names to values.  (Neither is
    checked here: see L{response_problem}.)

    @raise TypeError: C{headers} is not iterable.
    """
    if type(headers) is not tuple and type(headers) is not list and isinstance(headers, Mapping):
        return list(headers.items())
    return list(cast(Iterable[Tuple[str, str]], headers))


def problem_response(status: int, kind: str, title: str, detail: str,
                     cid: CorrelationId) -> RawResponse:
    """
    A problem+json answer the SDK gives on its own behalf.
    """
    return RawResponse(status, _PROBLEM_HEADERS, problem_body(status, kind, title, detail,
                                                              str(cid)))


__all__ = ["ResponseWriter", "header_pairs", "problem_response", "response_problem"]
