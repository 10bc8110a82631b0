"""
The Klein bridge end to end (issue 25): the notes Klein app
(C{examples/migration/notes_app.py}) served directly by Klein on a real
socket, and the same app mounted with C{service.mount_klein} in a real
C{stella-micro} process behind a real gateway.  The same requests get the
same answers both ways; a stream longer than its endpoint's timeout
completes; a client that leaves mid-stream reaches the app's
C{notifyFinish}.
"""

from __future__ import annotations

import json
from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.server import Site

from examples.migration.notes_app import NotesAPI

from .test_processes import ProcessTestCase

BRIDGED = "examples.migration.bridged:service"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

#: Response headers that differ by design (docs/router/migration.md): the
#: framing (Content-Length from the gateway, chunked from Klein), the
#: gateway's X-Correlation-Id, the SDK's X-Stella-Version, and the time.
IGNORED = {"content-length", "transfer-encoding", "x-correlation-id", "x-stella-version",
           "date", "connection"}

#: (method, path, body, headers): the table both servers answer.
REQUESTS: List[Tuple[str, str, bytes, dict]] = [
    ("POST", "/notes", b"text=first&tag=a", FORM),
    ("POST", "/notes", b"text=second%20one&tag=b", FORM),
    ("POST", "/notes", b"tag=b", FORM),
    ("GET", "/notes", b"", {}),
    ("GET", "/notes?tag=b&limit=1", b"", {}),
    ("GET", "/notes/1", b"", {}),
    ("GET", "/notes/99", b"", {}),
    ("GET", "/notes/abc", b"", {}),
    ("DELETE", "/notes/2", b"", {}),
    ("DELETE", "/notes/2", b"", {"X-Confirm": "yes"}),
    ("GET", "/notes/2", b"", {}),
    ("GET", "/last", b"", {"Cookie": "last_note=1"}),
    ("GET", "/last", b"", {}),
    ("GET", "/notes/1/summary", b"", {}),
    ("GET", "/notes/1/page", b"", {}),
    ("GET", "/export?count=2&interval=0.05", b"", {}),
    ("GET", "/feed?count=3&interval=0.05", b"", {}),
    ("GET", "/files/a/b%20c/d.txt", b"", {}),
    ("GET", "/docs/guide/intro", b"", {}),
    ("GET", "/whoami", b"", {"User-Agent": "table"}),
    ("HEAD", "/notes/1", b"", {}),
]


class KleinBridgeProcessTests(ProcessTestCase):
    async def start(self) -> None:
        await self.deployment.start_gateway()
        self.micro = await self.deployment.start_microservice(
            BRIDGED, "notes-it", extra="""
endpoints:
  - {method: GET, path: /feed, timeout: 1}
""")
        port = reactor.listenTCP(0, Site(NotesAPI(reactor).app.resource()),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.direct_url = f"http://127.0.0.1:{port.getHost().port}"

    async def answers(self, base: str) -> List[Tuple[int, List[Tuple[str, str]], bytes]]:
        answers = []
        for method, path, body, headers in REQUESTS:
            response = await treq.request(method, base + path, data=body or None,
                                          headers=headers, pool=self.pool,
                                          allow_redirects=False)
            content = await response.content()
            kept = sorted((name.decode().lower(), value.decode())
                          for name, values in response.headers.getAllRawHeaders()
                          for value in values if name.decode().lower() not in IGNORED)
            host = base.split("//", 1)[1]
            answers.append((response.code,
                            [(n, v.replace(host, "HOST")) for n, v in kept],
                            content.replace(host.encode(), b"HOST")))
        return answers

    async def test_same_answers_directly_and_bridged(self) -> None:
        """
        Every request of the table gets the same status, headers (but the
        documented ones) and body from Klein directly and from the same
        app through the gateway and the bridge.
        """
        await self.start()
        direct = await self.answers(self.direct_url)
        bridged = await self.answers(self.deployment.base_url)
        for request, one, other in zip(REQUESTS, direct, bridged):
            self.assertEqual(one, other, f"{request[0]} {request[1]}")

    async def test_stream_longer_than_the_timeout(self) -> None:
        """
        A C{request.write} stream of 2.5 s on an endpoint whose timeout is
        1 s completes (the timeout is an idle timeout once streaming).
        """
        await self.start()
        response = await treq.get(self.deployment.base_url + "/feed?count=5&interval=0.5",
                                  pool=self.pool)
        self.assertEqual(response.code, 200)
        self.assertEqual((await response.content()).count(b"data: tick"), 5)

    async def test_client_leaving_reaches_notify_finish(self) -> None:
        """
        A client that leaves mid-stream makes the app's C{notifyFinish}
        fail (the app stops its export), and the microservice logs the
        CANCEL.
        """
        await self.start()
        host = self.deployment.base_url.split("//", 1)[1]
        client = _FirstBytes()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(host.split(":")[1])),
                              client)
        client.transport.write(b"GET /export?count=1000&interval=0.1 HTTP/1.1\r\n"
                               b"Host: " + host.encode() + b"\r\n\r\n")
        await client.first
        self.assertTrue(client.data.startswith(b"HTTP/1.1 200 "))
        client.transport.loseConnection()  # the client goes away mid-stream
        await self.micro.wait_for(r"request [0-9a-f-]{36} cancelled: ClientDisconnected",
                                  reactor)
        stats = await treq.get(self.deployment.base_url + "/stats", pool=self.pool)
        stopped: Any = json.loads(await stats.content())["streams_stopped"]
        self.assertEqual(len(stopped), 1, stopped)
        self.assertIn("cancelled by the gateway: ClientDisconnected", stopped[0])


class _FirstBytes(Protocol):
    """
    A raw HTTP client: C{first} fires once the response's first bytes came.
    """

    def __init__(self) -> None:
        self.first: Deferred = Deferred()
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.first.called:
            self.first.callback(None)
