"""
Lines the documentation quotes from the processes' logs have the shape the
code writes (outside test F10: configuration.md's ready line had no
C{admin}).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, List

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.config.gateway import GatewayConfig, HttpConfig, NodeConfig
from stellarouter.gateway.service import GatewayService
from stellarouter.testing.admin import FakeMetricsExposition

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "router")


def doc_text(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


class ReadyLineTests(SynchronousTestCase):
    def logged_ready_line(self) -> str:
        config = GatewayConfig(node=NodeConfig(node_id="gw-demo-1", region="eu1"),
                               http=HttpConfig(listen="tcp:8080"))
        service = GatewayService(config, MemoryReactorClock(), metrics=FakeMetricsExposition())
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        [line] = [formatEvent(e) for e in events if "ready: {" in formatEvent(e)]
        return line

    def test_configuration_md(self) -> None:
        """
        configuration.md's ready line names the same addresses, in the same
        order, as the line a gateway with the default admin listener logs.
        """
        logged = self.logged_ready_line()
        documented = re.search(r"`(gateway gw-demo-1 \(region eu1\) ready: \{.*?\})`",
                               doc_text("configuration.md"))
        assert documented is not None
        prefix, _, addresses = documented.group(1).partition(" ready: ")
        self.assertEqual(prefix, logged.partition(" ready: ")[0])
        keys: List[Any] = list(json.loads(addresses))
        self.assertEqual(keys, list(json.loads(logged.partition(" ready: ")[2])))
        self.assertEqual(keys, ["http", "transports", "admin"])


class LogRotationTests(SynchronousTestCase):
    def test_documented_twistd_rotation(self) -> None:
        """
        operations.md states twistd's rotation as the installed Twisted does
        it (every 1,000,000 bytes, every rotated file kept: F11), and the
        README's correlation-id search takes in the rotated files.
        """
        from twisted.python.logfile import LogFile

        directory = self.mktemp()
        os.makedirs(directory)
        log = LogFile("twistd.log", directory)
        self.addCleanup(log.close)
        self.assertEqual((log.rotateLength, log.maxRotatedFiles), (1_000_000, None))
        text = " ".join(doc_text("operations.md").split())
        self.assertIn("rotates FILE every 1,000,000 bytes", text)
        self.assertIn("**keeps every rotated file**", text)
        with open(os.path.join(DOCS, "..", "..", "README.md"), encoding="utf-8") as f:
            readme = f.read()
        self.assertIn('grep "$cid" .demo/*.log* ', readme)
        self.assertNotIn('grep "$cid" .demo/*.log ', readme)


class ReadmeTableTests(SynchronousTestCase):
    def test_each_page_once(self) -> None:
        """
        The README's documentation table lists every page of docs/router
        exactly once (F13: operations.md and migration.md were listed twice).
        """
        with open(os.path.join(DOCS, "..", "..", "README.md"), encoding="utf-8") as f:
            pages = re.findall(r"^\| `docs/router/([\w-]+\.md)` \|", f.read(), re.M)
        self.assertEqual(sorted(pages), sorted(set(pages)))
        self.assertEqual(set(pages), {n for n in os.listdir(DOCS) if n.endswith(".md")})
