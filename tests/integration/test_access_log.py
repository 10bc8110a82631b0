"""
The access log with real processes (issue 21, item 5): a gateway and the
Billing demo as twistd processes with their default settings; one request;
its correlation id is searched in both processes' logs and found on both
sides.  Also the file and logfmt settings.
"""

import json
import socket
import os
import re

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from stellarouter.testing.processes import ProcessDeployment


class AccessLogProcessTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.deployment = ProcessDeployment(reactor, self.directory)
        self.addCleanup(self.deployment.stop_all)

    async def test_one_correlation_id_in_both_logs(self) -> None:
        """
        With the default configuration, one request's correlation id (the
        client's X-Correlation-Id) is in the gateway's log, with its route,
        instance and status, and in the microservice's log.
        """
        gateway = await self.deployment.start_gateway()
        billing = await self.deployment.start_microservice("examples.billing:service",
                                                           "billing-log")
        # (A query value no path or id can contain by chance: a short one
        # once matched the random name of the checkout's temporary directory,
        # which twistd's first log line shows.)
        response = await treq.get(
            self.deployment.base_url + "/invoices/nope?token=query-secret-d41d8cd98f",
            pool=self.pool)
        await response.content()
        self.assertEqual(response.code, 404)
        cid = response.headers.getRawHeaders("X-Correlation-Id")[0]
        gateway_line = await gateway.wait_for(rf'\{{"time":"[^"]+","cid":"{cid}".*', reactor)
        micro_line = await billing.wait_for(rf'\{{"time":"[^"]+","cid":"{cid}".*', reactor)
        logged = json.loads(gateway_line.group(0))
        self.assertEqual(
            {k: logged[k] for k in ("method", "path", "route", "service", "instance", "status")},
            {"method": "GET", "path": "/invoices/nope", "route": "/invoices/{id}",
             "service": "billing", "instance": "billing-log", "status": 404})
        self.assertIn("[stellarouter.access#info]", "\n".join(
            line for line in gateway.lines if cid in line))
        logged = json.loads(micro_line.group(0))
        self.assertEqual((logged["status"], logged["outcome"]), (404, "ok"))
        self.assertNotIn("query-secret-d41d8cd98f", "\n".join(gateway.lines + billing.lines))

    async def test_file_and_logfmt(self) -> None:
        """
        C{access_log.path} and C{format: logfmt}: the gateway's lines go to
        the file, bare, one per request, written out when the process stops.
        """
        path = os.path.join(self.directory, "access.log")
        gateway = await self.deployment.start_gateway(
            extra=f"access_log: {{path: {path!r}, format: logfmt, flush_interval: 60}}")
        await self.deployment.start_microservice("examples.billing:service", "billing-file")
        cids = []
        for _ in range(3):
            response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
            await response.content()
            cids.append(response.headers.getRawHeaders("X-Correlation-Id")[0])
        gateway.signal("TERM")
        await gateway.ended
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual([re.search(r" cid=(\S+) ", line).group(1)  # type: ignore[union-attr]
                          for line in lines], cids)
        self.assertTrue(all(" route=/ping service=billing " in line and " status=200 " in line
                            for line in lines), lines)
        self.assertFalse(any(cid in line for cid in cids for line in gateway.lines))

    async def test_request_cut_short_by_the_stop_is_logged(self) -> None:
        """
        A streamed answer the gateway cuts short as it stops (outside test,
        session 9: its line was lost, the client's connection being aborted
        a reactor turn after the access log had closed) still gets its
        gateway line.
        """
        path = os.path.join(self.directory, "access.log")
        gateway = await self.deployment.start_gateway(
            extra=f"access_log: {{path: {path!r}, flush_interval: 60}}")
        await self.deployment.start_microservice("examples.billing:service", "billing-cut")
        host, port = self.deployment.base_url.split("//")[1].split(":")
        client = socket.socket()
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((host, int(port)))
        client.sendall(b"GET /invoices/inv-1/export?bytes=1000000000 HTTP/1.1\r\n"
                       b"Host: gateway\r\n\r\n")
        client.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1024)
        found = re.search(rb"(?i)x-correlation-id: ([0-9a-f-]+)", head)
        assert found is not None, head
        cid = found.group(1)
        gateway.signal("TERM")
        await gateway.ended
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f.read().splitlines()]
        [line] = [line for line in lines if line["cid"] == cid.decode()]
        self.assertEqual(line["route"], "/invoices/{id}/export")
