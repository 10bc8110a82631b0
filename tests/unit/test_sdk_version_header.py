"""
Tests that every response names the version that served it
(C{X-Stella-Version}), through a real gateway in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.microservice import Microservice, RawResponse, StreamingResponse
from stellarouter.testing.harness import InMemoryDeployment


def versioned_app(version: str) -> Microservice:
    app = Microservice("billing", version)

    @app.endpoint("GET", "/ping")
    def ping(ctx: Any) -> RawResponse:
        return RawResponse.text("pong")

    @app.endpoint("GET", "/missing")
    def missing(ctx: Any) -> RawResponse:
        from stellarouter.microservice import Problem
        raise Problem(404, "invoice-not-found")

    @app.endpoint("GET", "/stream")
    def stream(ctx: Any) -> StreamingResponse:
        return StreamingResponse(200, (), [b"a", b"b"])

    return app


class VersionHeaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment()
        self.deployment.add(versioned_app("1.0.0"))
        self.deployment.add(versioned_app("2.0.0"))

    def test_versions_side_by_side(self) -> None:
        """
        With two versions running, the response says which one served: the
        one asked for, or the one the gateway chose for an unversioned
        request.
        """
        unversioned = self.deployment.request("GET", "/ping")
        self.assertEqual(unversioned.header("X-Stella-Version"), "2.0.0")
        pinned = self.deployment.request("GET", "/ping", headers=[("X-Stella-Version", "1.0.0")])
        self.assertEqual(pinned.header("X-Stella-Version"), "1.0.0")

    def test_every_kind_of_response(self) -> None:
        """
        Problems and streamed responses carry the header too, once.
        """
        for path in ("/missing", "/stream"):
            response = self.deployment.request("GET", path,
                                               headers=[("X-Stella-Version", "1.0.0")])
            values = [v for k, v in response.headers if k.lower() == "x-stella-version"]
            self.assertEqual(values, ["1.0.0"], path)
