"""
Issue 21 item 4: the C{stellarouter status | services | instances | routes |
drain} commands: aligned tables, C{--json}, and one-line errors (the same
commands against a live gateway: tests/integration/test_admin.py).
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any, Callable, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from stellarouter import admin_client
from stellarouter.admin_client import AdminError, duration, table
from stellarouter.cli import main

#: The real command runner (the tests wrap it to pass a fake and an environment).
_RUN = admin_client.run

INSTANCES = {"instances": [
    {"instance_id": "billing-1", "service": "billing", "version": "1.0.0", "region": "eu1",
     "connection_id": "tcp-1", "transport": "tcp", "peer": "127.0.0.1:40000",
     "peer_identity": [], "health": "healthy", "ping_ewma_ms": 1.234, "in_flight": 2,
     "last_heartbeat": "x", "last_heartbeat_age_s": 0.4, "connected_since": "x",
     "connected_for_s": 3725.0, "draining": False, "drained_by_operator": False,
     "endpoints": 6},
    {"instance_id": "billing-22", "service": "billing", "version": "1.1.0", "region": "us1",
     "connection_id": "tls-2", "transport": "tls", "peer": "10.0.0.7:5000",
     "peer_identity": ["billing"], "health": "draining", "ping_ewma_ms": None,
     "in_flight": 0, "last_heartbeat": "x", "last_heartbeat_age_s": 12.0,
     "connected_since": "x", "connected_for_s": 5.0, "draining": True,
     "drained_by_operator": True, "endpoints": 6}]}


class FakeAdmin:
    """
    Answers every request with C{answer} (or C{answer_for(path)}), or raises
    C{error}; records the requests.
    """

    def __init__(self, answer: Any = None, error: Optional[AdminError] = None,
                 answer_for: Optional[Callable[[str], Any]] = None) -> None:
        self.answer, self.error, self.answer_for = answer, error, answer_for
        self.requests: List[Tuple[str, str, Optional[str], str]] = []

    def __call__(self, base: str, path: str, token: Optional[str], timeout: float,
                 method: str) -> Any:
        self.requests.append((base, path, token, method))
        if self.error is not None:
            raise self.error
        return self.answer if self.answer_for is None else self.answer_for(path)


class AdminCommandTests(SynchronousTestCase):
    def command(self, argv: List[str], fake: FakeAdmin,
                environ: Any = None) -> Tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        def run(args: argparse.Namespace, o: Any, e: Any) -> int:
            return _RUN(args, o, e, environ or {}, fake)

        self.patch(admin_client, "run", run)
        code = main(argv, out, err)
        return code, out.getvalue(), err.getvalue()

    def test_instances_table(self) -> None:
        """
        C{stellarouter instances} prints one aligned row per instance under
        upper-case headers.
        """
        fake = FakeAdmin(INSTANCES)
        code, out, err = self.command(["instances"], fake)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(fake.requests, [("http://127.0.0.1:9901", "/instances", None, "GET")])
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["INSTANCE", "SERVICE", "VERSION", "REGION",
                                            "TRANSPORT", "PEER", "HEALTH", "PING-MS",
                                            "IN-FLIGHT", "HEARTBEAT", "UP"])
        self.assertEqual(lines[1].split(), ["billing-1", "billing", "1.0.0", "eu1", "tcp",
                                            "127.0.0.1:40000", "healthy", "1.2", "2", "0.4s",
                                            "ago", "1h02m"])
        self.assertIn("10.0.0.7:5000 (billing)", lines[2])
        self.assertIn("draining (operator)", lines[2])
        for column in ("SERVICE", "HEALTH", "UP"):
            start = lines[0].index(column)
            for line in lines[1:]:
                self.assertEqual((line[start - 2:start], line[start] != " "), ("  ", True),
                                 (column, out))

    def test_json(self) -> None:
        """
        C{--json} prints the API's answer as JSON.
        """
        code, out, _ = self.command(["instances", "--json"], FakeAdmin(INSTANCES))
        self.assertEqual((code, json.loads(out)), (0, INSTANCES))

    def test_url_and_token_from_options_or_environment(self) -> None:
        """
        C{--admin} and C{--token} win; otherwise C{STELLA_ADMIN_URL} and
        C{STELLA_ADMIN_TOKEN}; C{--service} filters; drain POSTs.
        """
        fake = FakeAdmin(INSTANCES)
        self.command(["instances", "--admin", "http://h:1", "--token", "t1", "--service",
                      "bill ing"], fake)
        self.command(["instances"], fake, {"STELLA_ADMIN_URL": "http://e:2",
                                           "STELLA_ADMIN_TOKEN": "t2"})
        fake.answer = {"drained": INSTANCES["instances"][:1]}
        code, out, _ = self.command(["drain", "billing/1"], fake)
        self.assertEqual(fake.requests, [
            ("http://h:1", "/instances?service=bill%20ing", "t1", "GET"),
            ("http://e:2", "/instances", "t2", "GET"),
            ("http://127.0.0.1:9901", "/instances/billing%2F1/drain", None, "POST")])
        self.assertEqual(out, "draining billing-1 (billing 1.0.0, connection tcp-1): no new "
                              "requests, 2 in flight\n")

    def test_services_routes_status(self) -> None:
        """
        The other tables.
        """
        services = {"services": [{"name": "billing", "instances": 2, "routable": 1,
                                  "draining": 1, "in_flight": 3, "default_version": "1.0.0",
                                  "versions": [{"version": "1.0.0", "instances": 1},
                                               {"version": "1.1.0", "instances": 1}]}]}
        out = self.command(["services"], FakeAdmin(services))[1]
        self.assertEqual(out.splitlines()[1].split(), [
            "billing", "1.0.0", "(1),", "1.1.0", "(1)", "2", "1", "1", "3", "1.0.0"])
        routes = {"routes": [{"method": "DELETE", "template": "/invoices/{id}",
                              "service": "billing", "versions": ["1.0.0"], "instances": 1,
                              "claims": [{"type": "scope", "value": "billing:write",
                                          "text": "scope=billing:write"}],
                              "timeout_s": 30.0, "streaming": False, "idempotent": None,
                              "limits": {"max_request_bytes": 4096}}]}
        out = self.command(["routes"], FakeAdmin(routes))[1]
        self.assertEqual(out.splitlines()[1].split(), [
            "DELETE", "/invoices/{id}", "billing", "1.0.0", "scope=billing:write", "30s", "no",
            "4", "KiB"])
        status = {"status": "ok", "node_id": "gw-1", "region": "eu1",
                  "listening": {"http": "127.0.0.1:8080", "admin": "127.0.0.1:9901",
                                "transports": ["tcp:127.0.0.1:5100"]},
                  "services": 1, "instances": 2, "instances_by_health": {"healthy": 2},
                  "routes": 6, "in_flight": 0, "metrics": False}
        out = self.command(["status"], FakeAdmin(status))[1]
        self.assertIn("status      ok\n", out)
        self.assertIn("instances   2 (2 healthy)\n", out)

    def test_control_characters_escaped(self) -> None:
        """
        An instance id or peer name holding ESC or a newline (F2) is printed
        escaped: no raw control character reaches the terminal and each
        instance stays on one line of the table.
        """
        evil = dict(INSTANCES["instances"][0], instance_id="evil\x1b[2J\n{\"x\":1}",
                    region="eu\u2028", peer_identity=["cn\r\x07"])
        for argv, answer in ((["instances"], {"instances": [evil]}),
                             (["drain", "x"], {"drained": [evil]}),
                             (["status"], {"status": "ok\x1b[31m", "node_id": "gw\n1"})):
            code, out, err = self.command(argv, FakeAdmin(answer))
            self.assertEqual((code, err), (0, ""))
            self.assertTrue(all(line.isprintable() for line in out.splitlines()), repr(out))
        code, out, _ = self.command(["instances"], FakeAdmin({"instances": [evil]}))
        self.assertEqual(len(out.splitlines()), 2)
        self.assertIn("evil\\x1b[2J\\n{\"x\":1}", out)
        self.assertIn("eu\\u2028", out)

    def test_unknown_service(self) -> None:
        """
        N4: C{instances --service NAME} for a service the gateway does not
        know says so and exits 1 (a typo used to print an empty table and
        exit 0); for a known one an empty table stays an empty table.
        """
        answers = {"/instances?service=nope": {"instances": []},
                   "/services": {"services": [{"name": "billing"}, {"name": "audit"}]}}
        fake = FakeAdmin(answer_for=answers.__getitem__)
        code, out, err = self.command(["instances", "--service", "Nope"], fake)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "stellarouter instances: no service named 'nope' is registered at "
                              "the gateway (services: audit, billing)\n")
        answers["/instances?service=billing"] = {"instances": []}
        code, out, err = self.command(["instances", "--service", "billing"], fake)
        self.assertEqual((code, err, len(out.splitlines())), (0, "", 1))

    def test_errors_are_one_line(self) -> None:
        """
        A refused or unreachable admin listener: exit 1, one line on stderr,
        nothing on stdout.
        """
        fake = FakeAdmin(error=AdminError("cannot reach the admin listener at http://x: no"))
        code, out, err = self.command(["routes"], fake)
        self.assertEqual((code, out, err),
                         (1, "", "stellarouter routes: cannot reach the admin listener at "
                                 "http://x: no\n"))

    def test_unexpected_answer(self) -> None:
        """
        An answer of another shape (another server on that port) is one line
        too, not a traceback.
        """
        code, out, err = self.command(["instances"], FakeAdmin({"nope": 1}))
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("unexpected answer from http://127.0.0.1:9901", err)

    def test_not_a_url(self) -> None:
        """
        C{--admin} must be an http(s) URL with a port in range (outside
        test, session 12: port 99999 was tried, and reported as
        "Connection refused"), or a unix socket's C{unix:PATH}.
        """
        for wrong, why in (("ftp://x", "is not an http://, https:// or unix: address"),
                           ("http://127.0.0.1:99999",
                            "is not a valid URL: Port out of range 0-65535"),
                           ("http://127.0.0.1:x", "is not a valid URL: Port could not be cast "
                                                  "to integer value as 'x'"),
                           ("http://[::1", "is not a valid URL: Invalid IPv6 URL"),
                           ("unix:", "names no socket (unix:PATH)")):
            with self.assertRaises(AdminError) as caught:
                admin_client.fetch(wrong, "/status", None, 1.0)
            self.assertEqual(str(caught.exception), f"--admin {wrong!r} {why}")
        # A password in the URL is neither used nor shown (third outside test: it
        # was echoed on stderr after a failed name lookup).
        with self.assertRaises(AdminError) as caught:
            admin_client.fetch("http://ops:hunter2@127.0.0.1:9901", "/status", None, 1.0)
        self.assertEqual(str(caught.exception),
                         "--admin 'http://ops:***@127.0.0.1:9901' holds a user or password; the "
                         "admin API takes a bearer token (--token or $STELLA_ADMIN_TOKEN)")


class FormattingTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Columns are as wide as their widest cell, two spaces apart, no
        trailing blanks.
        """
        self.assertEqual(table([["a", "bbb"], ["cccc", "d"]], ["X", "Y"]),
                         "X     Y\na     bbb\ncccc  d\n")

    def test_duration(self) -> None:
        """
        Durations read at a glance.
        """
        self.assertEqual([duration(s) for s in (None, 0.42, 12.7, 307, 10920, 187200)],
                         ["-", "0.4s", "12s", "5m07s", "3h02m", "2d04h"])
