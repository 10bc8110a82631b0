"""
The shell helpers behind C{scripts/demo.sh} and C{scripts/test.sh}: the
port check that names the process holding a port, echoed commands that can
be pasted, and no reinstall of an unchanged source tree.
"""

import os
import shutil
import socket
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.testing.processes import ROOT

COMMON = os.path.join(ROOT, "scripts", "common.sh")


def bash(script: str, env: dict = None, common: str = COMMON) -> subprocess.CompletedProcess:
    """
    Run C{script} in bash after sourcing C{common.sh}.
    """
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run(["bash", "-c", f'source "{common}"\n{script}'], env=environment,
                          capture_output=True, text=True, timeout=60)


class PortCheckTests(SynchronousTestCase):
    def test_busy_port_names_its_holder(self) -> None:
        """
        A port someone listens on fails the check, naming that process's
        pid; free ports pass.
        """
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        result = bash(f"check_ports_free {free_port} {port}")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(f"port {port} is already in use by pid {os.getpid()} (", result.stderr)
        self.assertNotIn(str(free_port), result.stderr)
        self.assertEqual(bash(f"check_ports_free {free_port}").returncode, 0)

    def test_demo_configs_ports(self) -> None:
        """
        The ports the demo checks are those its gateway configuration listens
        on (not the broker's).
        """
        examples = os.path.join(ROOT, "examples", "billing")
        for name, ports in (("gateway.yaml", "8080 5100"), ("gateway-tls.yaml", "8080 5101"),
                            ("gateway-amqp.yaml", "8080")):
            result = bash(f'echo $(listen_ports "{os.path.join(examples, name)}")')
            self.assertEqual(result.stdout.strip(), ports)


class QuotingTests(SynchronousTestCase):
    def test_echoed_commands_paste_back(self) -> None:
        """
        C{shell_quote} prints a line that the shell reads back as the same
        arguments (JSON bodies, headers with spaces, quotes).
        """
        args = ["curl", "-si", "-X", "POST", "localhost:8080/invoices", "-d",
                '{"customer":"acme","amount_cents":1250}', "-H", "Authorization: Bearer a.b.c",
                "it's", "$HOME", ""]
        quoted = bash('shell_quote "$@"'.replace('"$@"', " ".join(
            "'" + a.replace("'", "'\\''") + "'" for a in args))).stdout.strip()
        self.assertIn("-d '{\"customer\":\"acme\",\"amount_cents\":1250}'", quoted)
        again = subprocess.run(["bash", "-c", f"printf '%s\\0' {quoted}"],
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(again.stdout.split("\0")[:-1], args)


class ReinstallTests(SynchronousTestCase):
    def test_reinstall_only_when_the_source_changed(self) -> None:
        """
        C{ensure_venv} runs pip once for a source tree, not again while it
        is unchanged, and again after an edit.
        """
        root = os.path.abspath(self.mktemp())
        for path in ("scripts", "stellarouter", "twisted/plugins", "venv/bin"):
            os.makedirs(os.path.join(root, path))
        shutil.copy(COMMON, os.path.join(root, "scripts", "common.sh"))
        for path, text in (("setup.py", "# setup\n"), ("README.md", "# readme\n"),
                           ("stellarouter/__init__.py", "x = 1\n"),
                           ("twisted/plugins/p.py", "# plugin\n"),
                           ("venv/bin/python", "#!/bin/sh\nexit 0\n"),
                           ("venv/bin/pip", f'#!/bin/sh\necho "$*" >> "{root}/pip.log"\n')):
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
        for tool in ("python", "pip"):
            os.chmod(os.path.join(root, "venv", "bin", tool), 0o755)
        common = os.path.join(root, "scripts", "common.sh")
        env = {"STELLA_VENV": os.path.join(root, "venv")}

        def installs() -> int:
            result = bash("ensure_venv", env, common)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(os.path.join(root, "pip.log")) as f:
                return len(f.readlines())

        self.assertEqual(installs(), 1)
        self.assertEqual(installs(), 1)
        with open(os.path.join(root, "stellarouter", "__init__.py"), "a") as f:
            f.write("y = 2\n")
        self.assertEqual(installs(), 2)
