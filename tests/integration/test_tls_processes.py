"""
The Billing demo over mutual TLS with real processes: requests go through,
the peer certificate shows in the gateway's log, and a certificate not
allowed to register a service is refused at HELLO (the microservice logs
why and keeps retrying).
"""

import os

import treq
from twisted.internet import reactor

from stellarouter import certs

from .test_processes import ProcessTestCase


class MutualTLSDemoTests(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.certs = os.path.join(self.deployment.directory, "certs")
        certs.init_dev_certs(self.certs, ["billing", "audit"])

    def path(self, name: str) -> str:
        return os.path.join(self.certs, name)

    async def start_gateway(self) -> object:
        return await self.deployment.start_gateway(transport=(
            f'{{type: tls, listen: "tcp:0:interface=127.0.0.1", '
            f'certificate: {self.path("gateway.pem")}, private_key: {self.path("gateway.key")}, '
            f'client_ca: {self.path("ca.pem")}, allowed_client_names: {{billing: [billing]}}}}'))

    def router(self, name: str) -> str:
        return (f'server_name: localhost, ca: {self.path("ca.pem")}, '
                f'certificate: {self.path(name + ".pem")}, private_key: {self.path(name + ".key")}')

    async def test_billing_over_mtls(self) -> None:
        """
        Billing registers over mutual TLS with its certificate identity
        logged, and serves requests through the gateway.
        """
        gateway = await self.start_gateway()
        await self.deployment.start_microservice("examples.billing:service", "billing-tls",
                                                 transport="tls", router_extra=self.router("billing"))
        await gateway.wait_for(r"registered instance billing-tls .* over tls .*\(certificate "
                               r"billing\)", reactor)
        response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
        self.assertEqual((response.code, await response.content()), (200, b"pong"))

    async def test_certificate_not_allowed_for_service(self) -> None:
        """
        A valid certificate of another service may not register billing: the
        gateway refuses the HELLO, both sides log it, the microservice keeps
        retrying, and the gateway keeps serving.
        """
        gateway = await self.start_gateway()
        impostor = await self.deployment.start_microservice(
            "examples.billing:service", "billing-impostor", transport="tls",
            router_extra=self.router("audit"), wait=False)
        await gateway.wait_for(r"certificate audit may not register service 'billing'", reactor)
        await impostor.wait_for(r"rejected HELLO of billing 1\.0\.0 \(rejection \d+\): HELLO refused: certificate "
                                r"audit may not register", reactor)
        seen = len(gateway.lines)
        await gateway.wait_for(r"certificate audit may not register", reactor, since=seen)
        await self.deployment.start_microservice("examples.billing:service", "billing-real",
                                                 transport="tls", router_extra=self.router("billing"))
        response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
