"""
The package type-checks: mypy with the zope plugin, configured in mypy.ini.
"""

import os
import sys

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


class TypeCheckTests(TestCase):
    timeout = 300

    async def test_mypy_clean(self) -> None:
        """
        mypy finds no error in the stellarouter package.
        """
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "mypy", "--config-file", "mypy.ini", "stellarouter"],
            env=dict(os.environ), path=ROOT)
        self.assertEqual(code, 0, (out + err).decode())
