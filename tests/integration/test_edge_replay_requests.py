"""
Issue 17, request level, replayed from outside: a real twistd gateway and
the real Billing microservice (plus an echo service where Billing cannot
show what it was given), driven over raw sockets so that nothing between
the test and the gateway tidies the request up.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Tuple

import jwt
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from .test_processes import ProcessTestCase

BILLING = "examples.billing:service"
ECHO = "tests.integration.echo_app:service"
SECRET = "replay-secret-0123456789abcdef0123"
PROBLEMS = "https://stellarouter.dev/problems/"


class _Raw(Protocol):
    """
    Collects everything the gateway sends until it closes.
    """

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred = Deferred()
        #: Fires once the first response head is in.
        self.head: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.head.called and b"\r\n\r\n" in self.data:
            self.head.callback(self.data)

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(self.data)


def responses(data: bytes) -> List[Tuple[int, Dict[str, str], bytes]]:
    """
    Split what came back into (status, headers, body) triples (bodies by
    Content-Length).
    """
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, data[:size]))
        data = data[size:]
    return out


def hs256(**claims: Any) -> str:
    body: Dict[str, Any] = {"exp": int(time.time()) + 600, "sub": "mallory"}
    body.update(claims)
    return jwt.encode(body, SECRET, algorithm="HS256")


class EdgeRequestReplayTests(ProcessTestCase):
    async def start(self, extra: str = "", app: str = BILLING) -> Any:
        gateway = await self.deployment.start_gateway(extra=extra)
        micro = await self.deployment.start_microservice(app, "replay-1")
        return gateway, micro

    async def send(self, data: bytes, timeout: float = 10.0) -> bytes:
        """
        Write C{data} on a new connection and return everything until the
        gateway closes it (the last request says C{Connection: close}).
        """
        host, port = self.deployment.base_url[len("http://"):].rsplit(":", 1)
        raw = await TCP4ClientEndpoint(reactor, host, int(port)).connect(
            Factory.forProtocol(_Raw))
        raw.transport.write(data)
        return await raw.closed.addTimeout(timeout, reactor)

    async def one(self, data: bytes) -> Tuple[int, Dict[str, str], bytes]:
        answers = responses(await self.send(data))
        self.assertEqual(len(answers), 1, answers)
        return answers[0]

    def assertProblem(self, answer: Tuple[int, Dict[str, str], bytes], status: int,
                      kind: str) -> dict:
        code, headers, body = answer
        self.assertEqual(code, status, body)
        self.assertEqual(headers["content-type"], "application/problem+json")
        problem = json.loads(body)
        self.assertEqual(problem["type"], PROBLEMS + kind)
        self.assertEqual(problem["correlation_id"], headers["x-correlation-id"])
        return problem

    def assertNoTraceback(self, *processes: Any) -> None:
        for process in processes:
            self.assertNotIn("Traceback", "\n".join(process.lines))

    async def test_item2_long_version_is_400(self) -> None:
        """
        X-Stella-Version: <5000 digits>.0.0 gets a 400 bad-version problem,
        no traceback in the gateway's log, and the gateway goes on serving.
        """
        gateway, billing = await self.start()
        answer = await self.one(b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                                b"X-Stella-Version: " + b"9" * 5000 + b".0.0\r\n\r\n")
        self.assertProblem(answer, 400, "bad-version")
        answer = await self.one(b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        self.assertEqual((answer[0], answer[2]), (200, b"pong"))
        self.assertNoTraceback(gateway, billing)

    async def test_item4_known_route_without_instance_is_503(self) -> None:
        """
        A route the configuration names is 503 before any instance serves
        it; once Billing has served /ping and stopped, /ping is 503 with
        Retry-After; a path nobody knows stays 404.
        """
        gateway = await self.deployment.start_gateway(extra="""
services:
  - name: billing
    endpoints: [{method: GET, path: "/invoices/{id}/export", timeout: 60}]
""")
        request = (b"GET /invoices/inv-1/export HTTP/1.1\r\nHost: gw\r\n"
                   b"Connection: close\r\n\r\n")
        problem = self.assertProblem(await self.one(request), 503, "no-route")
        self.assertIn("billing", problem["detail"])
        billing = await self.deployment.start_microservice(BILLING, "replay-1")
        ping = b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        self.assertEqual((await self.one(ping))[2], b"pong")
        billing.signal("TERM")
        await billing.ended
        await gateway.wait_for(r"instance replay-1 .* disconnected", reactor)
        answer = await self.one(ping)
        self.assertProblem(answer, 503, "no-route")
        self.assertEqual(answer[1]["retry-after"], "1")
        self.assertProblem(await self.one(b"GET /nope HTTP/1.1\r\nHost: gw\r\n"
                                          b"Connection: close\r\n\r\n"), 404, "not-found")

    async def test_item5_head_does_not_pull_the_body(self) -> None:
        """
        HEAD of an 8 GiB export is answered from the head and the export is
        stopped at Billing (as a HEAD answered, not a client that left); a
        GET pipelined behind it is answered at once (before the fix it
        waited for 8 GiB to be pulled and dropped).
        """
        gateway, billing = await self.start()
        started = reactor.seconds()
        data = await self.send(
            b"HEAD /invoices/x/export?bytes=8589934592 HTTP/1.1\r\nHost: gw\r\n\r\n"
            b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", timeout=5.0)
        elapsed = reactor.seconds() - started
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), data[:300])
        self.assertIn(b"application/octet-stream", head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:300])
        self.assertTrue(rest.endswith(b"\r\n\r\npong"), rest[-100:])
        cid = re.search(rb"X-Correlation-Id: ([0-9a-f-]{36})", head).group(1).decode()
        # (Billing's access log line: the HEAD's GET, completed, not cancelled.)
        await billing.wait_for(rf'"cid":"{cid}".*"status":200.*"outcome":"ok"', reactor)
        self.assertLess(elapsed, 5.0)

    async def test_item7_duplicate_and_missing_host_and_authorization(self) -> None:
        """
        Two Authorization headers (a forged token riding behind a good one),
        two Host headers, and HTTP/1.1 without Host are 400 problems.
        """
        await self.start(extra=f"auth: {{hs256_secret: {SECRET}}}")
        good = hs256(scope="billing:write").encode()
        for request in (
            b"DELETE /invoices/inv-1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
            b"Authorization: Bearer " + good + b"\r\nAuthorization: Bearer forged\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n",
        ):
            self.assertProblem(await self.one(request), 400, "bad-request")

    async def test_item7_forwarded_headers(self) -> None:
        """
        A client's X-Forwarded-For, Forwarded and X-Correlation-Id never
        reach the service: it sees the gateway's peer address and the
        gateway's correlation id; with forward_authorization false it gets
        the verified claims and no Authorization header.
        """
        await self.start(extra=f"""
auth: {{hs256_secret: {SECRET}}}
services:
  - name: echo
    endpoints: [{{method: GET, path: /echo/private, forward_authorization: false}}]
""", app=ECHO)
        spoofed = "11111111-2222-3333-4444-555555555555"
        bearer = b"Authorization: Bearer " + hs256(scope="echo:read").encode() + b"\r\n"
        seen = {}
        for path in (b"/echo", b"/echo/private"):
            status, headers, body = await self.one(
                b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
                b"X-Correlation-Id: " + spoofed.encode() + b"\r\n" + bearer + b"\r\n")
            self.assertEqual(status, 200, body)
            echoed = json.loads(body)
            forwarded: Dict[str, List[str]] = {}
            for name, value in echoed["headers"]:
                forwarded.setdefault(name.lower(), []).append(value)
            self.assertEqual(forwarded["x-forwarded-for"], ["127.0.0.1"])
            self.assertEqual(forwarded["forwarded"], ["for=127.0.0.1"])
            self.assertNotIn("x-correlation-id", forwarded)
            self.assertEqual(echoed["correlation_id"], headers["x-correlation-id"])
            self.assertNotEqual(headers["x-correlation-id"], spoofed)
            self.assertEqual(echoed["claims"]["scope"], "echo:read")
            seen[path] = forwarded
        self.assertIn("authorization", seen[b"/echo"])
        self.assertNotIn("authorization", seen[b"/echo/private"])

    async def test_item8_path_parameters(self) -> None:
        """
        /invoices/%2e%2e, /invoices/a%2Fb and /invoices/%00 are the gateway's
        400 problems; before, Billing's handler got '..', 'a/b' and NUL.
        """
        gateway, billing = await self.start()
        for path in (b"/invoices/%2e%2e", b"/invoices/a%2Fb", b"/invoices/%00",
                     b"/invoices/.."):
            answer = await self.one(b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n"
                                    b"Connection: close\r\n\r\n")
            self.assertProblem(answer, 400, "bad-request")
        self.assertNoTraceback(gateway, billing)

    async def test_item9_scope_split_on_ascii_space_only(self) -> None:
        """
        A token whose scope is 'billing:read<NBSP>billing:write' gets 403 on
        Billing's DELETE (it needs billing:write); with a real space it is
        authorized (Billing answers its own 404 for the unknown invoice).
        """
        await self.start(extra=f"auth: {{hs256_secret: {SECRET}}}")
        for scope, status in (("billing:read\u00a0billing:write", 403),
                              ("billing:read billing:write", 404)):
            answer = await self.one(
                b"DELETE /invoices/inv-404 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                b"Authorization: Bearer " + hs256(scope=scope).encode() + b"\r\n\r\n")
            self.assertEqual(answer[0], status, answer[2])

    async def test_kept_jwt_checks(self) -> None:
        """
        Kept: alg none and an expired token are 401 on any endpoint; a 1 MB
        token is refused without a crash and the gateway goes on serving.
        """
        gateway, billing = await self.start(extra=f"auth: {{hs256_secret: {SECRET}}}")
        unsigned = jwt.encode({"exp": int(time.time()) + 60, "scope": "billing:write"},
                              None, algorithm="none").encode()
        expired = hs256(exp=int(time.time()) - 3600, scope="billing:write").encode()
        for token in (unsigned, expired):
            answer = await self.one(
                b"DELETE /invoices/inv-1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                b"Authorization: Bearer " + token + b"\r\n\r\n")
            self.assertProblem(answer, 401, "unauthorized")
        huge = hs256(pad="p" * 1024 * 1024).encode()
        data = await self.send(b"GET /ping HTTP/1.1\r\nHost: gw\r\n"
                               b"Authorization: Bearer " + huge + b"\r\n\r\n")
        self.assertNotIn(b" 200 ", data[:20])
        answer = await self.one(b"GET /ping HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        self.assertEqual(answer[2], b"pong")
        self.assertNoTraceback(gateway, billing)

    async def test_kept_cancel_on_client_disconnect(self) -> None:
        """
        Kept: a client that leaves in the middle of an export gets it
        cancelled at Billing (CANCEL ClientDisconnected).
        """
        gateway, billing = await self.start()
        host, port = self.deployment.base_url[len("http://"):].rsplit(":", 1)
        raw = await TCP4ClientEndpoint(reactor, host, int(port)).connect(
            Factory.forProtocol(_Raw))
        raw.transport.write(b"GET /invoices/x/export?bytes=8589934592 HTTP/1.1\r\n"
                            b"Host: gw\r\n\r\n")
        head = await raw.head.addTimeout(10, reactor)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head[:200])
        cid = re.search(rb"X-Correlation-Id: ([0-9a-f-]{36})", head).group(1).decode()
        raw.transport.abortConnection()
        await billing.wait_for(rf"request {cid} cancelled: ClientDisconnected", reactor)
