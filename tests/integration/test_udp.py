"""
The UDP transport over real loopback sockets: the Billing demo with the
microservice on UDP (same HTTP behaviour as TCP), and garbage datagrams
sent to the gateway's real socket.
"""

import socket

from twisted.internet import reactor

from .test_processes import ProcessTestCase


class UDPProcessTests(ProcessTestCase):
    async def test_billing_over_udp(self) -> None:
        """
        Billing registers over UDP and the README's requests behave as over
        TCP; garbage datagrams on the gateway's UDP port change nothing.
        """
        gateway = await self.deployment.start_gateway(
            transport='{type: udp, listen: "udp:0:interface=127.0.0.1"}')
        await self.deployment.start_microservice("examples.billing:service", "billing-udp",
                                                 transport="udp")
        await gateway.wait_for(r"registered instance billing-udp .* over udp", reactor)
        garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for datagram in (b"", b"\x01" * 5, b"\x63" + b"\x00" * 30, b"\x02" + b"\x00" * 16 + b"{}"):
            garbage.sendto(datagram, ("127.0.0.1", self.deployment.transport_port))
        garbage.close()
        await self.assertBillingAnswers(1)
