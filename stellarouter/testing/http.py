"""
Drive a twisted.web L{Site} in memory: write raw HTTP/1.1 requests into a
channel on a C{StringTransport} and parse what comes back.  No sockets, no
reactor: the site's clock is whatever the test injected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.server import Site


@dataclass
class HttpResponse:
    """
    One parsed HTTP response.
    """

    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """
        The first value of header C{name} (case-insensitive), or C{None}.
        """
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def headers_dict(self) -> Dict[str, str]:
        return {k.lower(): v for k, v in self.headers}


class InMemoryHttpClient:
    """
    One HTTP connection to a L{Site}, in memory.
    """

    def __init__(self, site: Site, transport: Optional[StringTransport] = None,
                 host: str = "gateway.test") -> None:
        """
        @param transport: the client's connection (default: a new
            L{StringTransport}).
        @param host: the C{Host} header sent.
        """
        self.site = site
        self.host = host
        self.transport = transport or StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)
        #: The methods of the requests sent and not yet answered, in order
        #: (the answer to a HEAD has no body whatever its headers say).
        self.unanswered: List[str] = []

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Sequence[Tuple[str, str]] = (),
    ) -> None:
        """
        Write one request on the connection.
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines.extend(f"{k}: {v}" for k, v in headers)
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.unanswered.append(method)
        self.channel.dataReceived(raw)

    def response(self) -> Optional[HttpResponse]:
        """
        Parse and consume the next complete response written so far, or
        return C{None} if none is complete yet.
        """
        data = self.transport.value()
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        lookup = {k.lower(): v for k, v in headers}
        if self.unanswered[:1] == ["HEAD"] or status in (204, 304):
            body, remainder = b"", rest
        elif "content-length" in lookup:
            size = int(lookup["content-length"])
            if len(rest) < size:
                return None
            body, remainder = rest[:size], rest[size:]
        elif lookup.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(rest)
            if parsed is None:
                return None
            body, remainder = parsed
        else:
            body, remainder = rest, b""
        self.transport.clear()
        self.transport.io.write(remainder)
        del self.unanswered[:1]
        return HttpResponse(status, headers, body)

    def disconnect(self) -> None:
        """
        Drop the connection as a client that goes away would.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        if self.transport.disconnecting or getattr(self, "_gone", False):
            return
        self._gone = True
        self.channel.connectionLost(Failure(ConnectionLost("client went away")))


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that, like TCP, can close its write side only.

    @ivar write_closed: L{loseWriteConnection} was called.
    @ivar aborted: L{abortConnection} was called.
    """

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def parse_responses(data: bytes) -> List[HttpResponse]:
    """
    Every complete response in C{data}, in order (interim 1xx ones
    included).
    """
    transport = StringTransport()
    transport.write(data)
    reader = InMemoryHttpClient.__new__(InMemoryHttpClient)
    reader.transport = transport
    reader.unanswered = []
    out: List[HttpResponse] = []
    while True:
        response = reader.response()
        if response is None:
            return out
        out.append(response)


def _dechunk(data: bytes) -> Optional[Tuple[bytes, bytes]]:
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        size = int(line.split(b";")[0], 16)
        if len(data) < size + 2:
            return None
        if size == 0:
            return body, data[2:]
        body += data[:size]
        data = data[size + 2 :]
