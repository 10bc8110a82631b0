"""
A UDP microservice and its gateway as real processes, started in either
order and with the gateway restarted: the microservice keeps saying HELLO
(with backoff) until a gateway answers, even after the ICMP port unreachable
its first datagrams earn closes its socket.
"""

import socket

from twisted.internet import reactor

from stellarouter.testing.processes import WatchedProcess

from .test_processes import ProcessTestCase


def free_udp_port() -> int:
    """
    A loopback UDP port nobody listens on (bound once to learn it, then
    freed).
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


class UDPStartOrderTests(ProcessTestCase):
    def start_microservice(self, port: int) -> WatchedProcess:
        config = self.deployment.write("billing-udp.yaml", f"""
region: eu1
instance_id: billing-udp
heartbeat_interval: 0.2
routers: [{{transport: udp, address: "udp:host=127.0.0.1:port={port}"}}]
""")
        return self.deployment.spawn(
            "billing-udp",
            ["stella-micro", "--config", config, "--app", "examples.billing:service"])

    async def start_gateway(self, port: int, node_id: str) -> WatchedProcess:
        return await self.deployment.start_gateway(
            node_id=node_id, transport=f'{{type: udp, listen: "udp:{port}:interface=127.0.0.1"}}')

    async def test_microservice_started_before_its_gateway(self) -> None:
        """
        A microservice whose first HELLO meets a closed port (its socket
        closed by the ICMP error) registers once the gateway is started.
        """
        port = free_udp_port()
        micro = self.start_microservice(port)
        await micro.wait_for(r"UDP Port \d+ Closed", reactor)
        gateway = await self.start_gateway(port, "gw-late")
        await gateway.wait_for(r"registered instance billing-udp .* over udp", reactor)
        await self.assertBillingAnswers(1)

    async def test_gateway_restarted(self) -> None:
        """
        After its gateway is killed and started again on the same port, the
        microservice registers with the new one.
        """
        port = free_udp_port()
        first = await self.start_gateway(port, "gw-first")
        micro = self.start_microservice(port)
        await first.wait_for(r"registered instance billing-udp .* over udp", reactor)
        first.signal("KILL")
        await first.ended
        since = len(micro.lines)
        await micro.wait_for(r"UDP Port \d+ Closed", reactor, since=since)
        second = await self.start_gateway(port, "gw-second")
        await second.wait_for(r"registered instance billing-udp .* over udp", reactor)
        self.deployment.base_url = second.base_url
        await self.assertBillingAnswers(2)
