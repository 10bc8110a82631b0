"""
A flood of junk datagrams at a real gateway process (issue 18, item 1):
the gateway logs the drops in a line or two, not one per datagram, and a
microservice registered over UDP keeps answering through it.
"""

import os
import socket

import treq

from .test_processes import ProcessTestCase

#: Junk datagrams sent in all (in bursts, between requests).
FLOOD = 20000
BURSTS = 20


class UDPFloodTests(ProcessTestCase):
    async def test_flood_from_unknown_socket(self) -> None:
        """
        20,000 junk datagrams from one socket that never registered (random
        bytes, HEARTBEATs, HELLOs that are not JSON) leave at most a few
        log lines about them, and every request to the UDP instance sent
        between the bursts is answered.
        """
        gateway = await self.deployment.start_gateway(
            transport='{type: udp, listen: "udp:0:interface=127.0.0.1"}')
        await self.deployment.start_microservice("examples.billing:service", "billing-udp",
                                                 transport="udp")
        target = ("127.0.0.1", self.deployment.transport_port)
        junk = [os.urandom(40), b"\x02" + os.urandom(16) + b'{"status": "healthy"}',
                b"\x01" + os.urandom(16) + b"not a hello", b"\x63" * 20]
        flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(flooder.close)
        flooder.setblocking(False)
        since = len(gateway.lines)
        statuses = []
        for burst in range(BURSTS):
            for i in range(FLOOD // BURSTS):
                try:
                    flooder.sendto(junk[i % len(junk)], target)
                except BlockingIOError:
                    pass
            response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
            await response.content()
            statuses.append(response.code)
        self.assertEqual(statuses, [200] * BURSTS)
        about_junk = [line for line in gateway.lines[since:]
                      if "dropped" in line or "closing connection" in line]
        self.assertLessEqual(len(about_junk), 3, "\n".join(about_junk[:10]))
        # Stopping the gateway reports what was dropped since the last line.
        gateway.signal("TERM")
        await gateway.ended
        reports = [line for line in gateway.lines[since:] if "datagram(s) in the last" in line]
        self.assertTrue(reports, "\n".join(gateway.lines[-20:]))
