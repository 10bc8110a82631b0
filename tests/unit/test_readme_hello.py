"""
The README's hello endpoint: short (at most 8 lines) and working, served
with L{ServiceClient}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.testing.client import ServiceClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ReadmeHelloTests(SynchronousTestCase):
    def test_hello(self) -> None:
        """
        The first Python block under "Writing a microservice" has at most 8
        lines and serves its endpoint.
        """
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("## Writing a microservice"):]
        code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
        assert code is not None
        self.assertLessEqual(len(code.group(1).strip().splitlines()), 8)
        namespace: Dict[str, Any] = {}
        exec(compile(code.group(1), "README.md", "exec"), namespace)
        response = self.successResultOf(ServiceClient(namespace["service"]).get("/hello/ada"))
        self.assertEqual((response.status, response.json()), (200, {"hello": "ada"}))
