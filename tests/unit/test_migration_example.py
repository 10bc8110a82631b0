"""
The migration example (docs/router/migration.md): during the transition the
old Klein app and the new microservice behind the gateway answer the same
requests the same way, because both call one core; the transition .tac file
builds both services.
"""

import json
import os

from twisted.application.service import IServiceCollection
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from examples.migration import core, legacy, service
from stellarouter.testing.harness import InMemoryDeployment
from stellarouter.testing.http import InMemoryHttpClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MigrationExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(core, "NOTES", {})
        self.deployment = InMemoryDeployment()
        self.addCleanup(self.deployment.stop)
        self.deployment.add(service.service)

    def klein(self, method: str, path: str, body: bytes = b"") -> tuple:
        # On a Clock: the site's idle-timeout timers must not reach the
        # global reactor.
        client = InMemoryHttpClient(Site(legacy.app.resource(), reactor=Clock()))
        client.send(method, path, body)
        response = client.response()
        assert response is not None
        return response.status, json.loads(response.body)

    def gateway(self, method: str, path: str, body: bytes = b"") -> tuple:
        response = self.deployment.request(method, path, body)
        return response.status, json.loads(response.body)

    def test_same_answers_both_ways(self) -> None:
        """
        A note created through either door is read through the other with
        the same status and JSON.
        """
        status, created = self.klein("POST", "/notes", b"old door")
        self.assertEqual(status, 201)
        self.assertEqual(self.gateway("GET", f"/notes/{created['id']}"),
                         self.klein("GET", f"/notes/{created['id']}"))
        status, created = self.gateway("POST", "/notes", b"new door")
        self.assertEqual(status, 201)
        self.assertEqual(self.klein("GET", f"/notes/{created['id']}"),
                         (200, {"id": created["id"], "text": "new door"}))
        self.assertEqual(self.gateway("GET", "/notes/999"), self.klein("GET", "/notes/999"))

    def test_transition_tac_builds_both(self) -> None:
        """
        both.tac defines an application with the Klein site and the
        microservice (built, not started).
        """
        namespace: dict = {}
        cwd = os.getcwd()
        os.chdir(ROOT)
        self.addCleanup(os.chdir, cwd)
        with open(os.path.join(ROOT, "examples", "migration", "both.tac")) as f:
            exec(compile(f.read(), "both.tac", "exec"), namespace)
        services = list(IServiceCollection(namespace["application"]))
        self.assertEqual([type(s).__name__ for s in services],
                         ["StreamServerEndpointService", "MicroserviceService"])
