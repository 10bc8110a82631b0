"""
The gateway's one response writer: every answer of the request path goes
out through L{write_response} (a whole response, the head of a streamed
one, a problem+json answer via L{write_problem}), and the raw refusal a
connection gets before a request reaches the pipeline (L{refusal}: 400,
408, 413, 414, 431, 503) is formatted by the same L{format_head}.  The
writer formats the status line and headers in one pass, adds the body
where HTTP allows one, and hands the bytes to the request in one write
(L{GatewayRequest.send_head}); a streamed body then follows in chunks
(twisted.web's C{Request.write} frames them once the head is out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, List, Sequence, Tuple

from twisted.web.http import NO_BODY_CODES

from .errors import PipelineError
from .problems import CORRELATION_HEADER, problem_answer, refusal_reason

if TYPE_CHECKING:
    from ._web import GatewayRequest

_CHUNKED = b"Transfer-Encoding: chunked\r\n"



def format_head(version: bytes, status: int, reason: bytes,
                header_lines: Iterable[bytes]) -> List[bytes]:
    """
    A response head: the status line, the header lines, the empty line.

    @param header_lines: each C{b"Name: value\\r\\n"}, in the order they go out.
    @return: the pieces of the head, to be joined or extended.
    """
    out = [version, b" %d " % status, reason, b"\r\n"]
    out.extend(header_lines)
    out.append(b"\r\n")
    return out


def header_lines(headers: Iterable[Tuple[bytes, Sequence[bytes]]]) -> List[bytes]:
    """
    The lines of headers held as name and values (twisted.web's
    L{Headers.getAllRawHeaders}, or the gateway's own headers).
    """
    return [b"%s: %s\r\n" % (name, value) for name, values in headers for value in values]


def write_response(request: GatewayRequest, status: int, lines: Sequence[bytes],
                   body: bytes = b"", stream: bool = False) -> None:
    """
    The one writer: write the head of C{request}'s answer and, for a whole
    answer, its body, in one write.  It does not finish the request.

    @param lines: the header lines, C{Content-Length} included for a whole
        answer that has one.
    @param body: the whole body (dropped for HEAD and for 1xx, 204 and 304).
    @param stream: a body follows in pieces (L{GatewayRequest.write}):
        chunked on HTTP/1.1, delimited by the close otherwise.
    """
    request.setResponseCode(status)
    body_allowed = request.method != b"HEAD" and status not in NO_BODY_CODES
    chunked = stream and body_allowed and request.clientproto == b"HTTP/1.1"
    out = format_head(request.clientproto, status, request.code_message,
                      [*lines, _CHUNKED] if chunked else lines)
    if body and body_allowed:
        out.append(body)
    else:
        body = b""
    # What twisted.web's Request.write records when it writes a head (all
    # public attributes of http.Request).
    request.startedWriting = 1
    request.chunked = 1 if chunked else 0
    request.sentLength = len(body)
    request.send_head(out, body_allowed, complete=not stream)


def write_problem(request: GatewayRequest, error: PipelineError, correlation_id: str) -> None:
    """
    Write the problem+json answer to C{error} on C{request} (through
    L{write_response}); the caller finishes the request.

    Header order: the gateway's own headers (C{Server}, C{Date},
    C{X-Correlation-Id}), those twisted.web set (C{Connection: close}), the
    problem's (C{Content-Type}, C{Allow}, C{WWW-Authenticate},
    C{Retry-After}), C{Content-Length}: the order of every whole answer.

    The own headers are those the request keeps
    (L{GatewayRequest.own_headers}); a request that keeps none gets
    C{X-Correlation-Id} unless it has one already.
    """
    problem, body = problem_answer(error, correlation_id)
    own_headers = request.take_own_headers()
    if own_headers is None:
        own_headers = []
        if not request.responseHeaders.hasHeader(CORRELATION_HEADER):
            own_headers.append((CORRELATION_HEADER, correlation_id.encode()))
    lines = header_lines((name, (value,)) for name, value in own_headers)
    lines += header_lines(request.responseHeaders.getAllRawHeaders())
    lines += problem
    lines.append(b"Content-Length: %d\r\n" % len(body))
    write_response(request, error.status, lines, body)


def refusal(error: PipelineError, correlation_id: str) -> bytes:
    """
    A whole HTTP/1.1 answer to a refused request or connection, formatted
    by the writer's L{format_head} and written raw by the connection (there
    may be no request to write it on): problem+json, C{X-Correlation-Id},
    C{Connection: close}.
    """
    problem, body = problem_answer(error, correlation_id)
    lines = [problem[0],  # Content-Type
             b"X-Correlation-Id: " + correlation_id.encode() + b"\r\n",
             b"Connection: close\r\n",
             b"Content-Length: %d\r\n" % len(body)]
    if error.retry_after is not None:
        lines.append(b"Retry-After: %d\r\n" % error.retry_after)
    return b"".join(format_head(b"HTTP/1.1", error.status, refusal_reason(error.status),
                                lines)) + body
