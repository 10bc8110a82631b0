"""
The RabbitMQ transport against the real broker on 127.0.0.1:5672: frames
both ways between a gateway node and a microservice, messages from queues
without HELLO dropped, goodbye removes at once; and the Billing demo with
the microservice on RabbitMQ (same HTTP behaviour as TCP).
"""

import hashlib
import json
import uuid
from collections import Counter as Tally
from typing import Any

import treq
from twisted.web.client import ResponseNeverReceived
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from stellarouter.common.enums import FrameType, TransportType
from stellarouter.common.ids import new_correlation_id
from stellarouter.common.interfaces import IFrameSender, ITransportClient, ITransportServer
from stellarouter.common.models import Frame
from stellarouter.testing.contract import ReceiverLog, observe
from stellarouter.transports.amqp import amqp_client, amqp_server

from .test_processes import ProcessTestCase
from .test_streaming import BLOCK, Counter, PatternProducer

BROKER = "amqp:host=127.0.0.1:port=5672"


class AMQPTransportTests(TestCase):
    timeout = 30

    async def settle(self, d: Deferred) -> Any:
        waiter = observe(d)
        waiter.addTimeout(10, reactor)
        result = await waiter
        await deferLater(reactor, 0, lambda: None)
        return result

    async def pair(self) -> Any:
        node = f"it-{uuid.uuid4().hex[:8]}"
        servers, clients = ReceiverLog(), ReceiverLog()
        server = amqp_server(reactor, BROKER, servers, node, initial_delay=0.05,
                             jitter=lambda: 0)
        await self.settle(server.start())
        self.addCleanup(server.stop)
        client = amqp_client(reactor, f"{BROKER}:gateway={node}", clients, initial_delay=0.05,
                             jitter=lambda: 0)
        client.start()
        self.addCleanup(client.stop)
        session = await self.settle(clients.opened(1))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        await self.settle(servers.opened(1))
        return server, client, servers, clients

    async def test_frames_both_ways(self) -> None:
        """
        HELLO opens a peer; frames of every kind go both ways intact and in
        order (one queue per side), bodies up to a megabyte included.
        """
        server, client, servers, clients = await self.pair()
        verifyObject(ITransportServer, server)
        verifyObject(ITransportClient, client)
        verifyObject(IFrameSender, servers.receivers[0].connection)
        self.assertEqual(servers.receivers[0].connection.transport_type, TransportType.RABBITMQ)
        up = [Frame(kind, new_correlation_id(), bytes([i]) * (i * 100_000))
              for i, kind in enumerate([FrameType.HEARTBEAT, FrameType.RESPONSE,
                                        FrameType.RESPONSE_STREAM_DATA], start=1)]
        for frame in up:
            clients.receivers[0].connection.sendFrame(frame)
        received = await self.settle(servers.receivers[0].received(1 + len(up)))
        self.assertEqual(received[1:], up)
        down = [Frame(FrameType.CANCEL, new_correlation_id(), b'{"reason":"Timeout"}'),
                Frame(FrameType.REQUEST_STREAM_DATA, new_correlation_id(), b"\x01" + b"z" * 1000)]
        for frame in down:
            servers.receivers[0].connection.sendFrame(frame)
        self.assertEqual(await self.settle(clients.receivers[0].received(len(down))), down)

    async def test_goodbye_removes_at_once(self) -> None:
        """
        A microservice that stops says goodbye: the gateway closes its peer
        at once, without waiting for silence.
        """
        _, client, servers, _ = await self.pair()
        await client.stop()
        reason = await self.settle(servers.receivers[0].closed)
        self.assertEqual(reason, "the microservice said goodbye")


    async def test_hello_resent_until_the_gateway_is_there(self) -> None:
        """
        A microservice that starts before its gateway resends HELLO until
        the gateway's queue exists and answers.
        """
        node = f"late-{uuid.uuid4().hex[:8]}"
        servers, clients = ReceiverLog(), ReceiverLog()
        client = amqp_client(reactor, f"{BROKER}:gateway={node}", clients, initial_delay=0.05,
                             jitter=lambda: 0, hello_retry=0.2)
        client.start()
        self.addCleanup(client.stop)
        session = await self.settle(clients.opened(1))
        session.connection.sendFrame(Frame(FrameType.HELLO, new_correlation_id(), b"{}"))
        await deferLater(reactor, 0.3, lambda: None)   # the HELLO went nowhere
        server = amqp_server(reactor, BROKER, servers, node)
        await self.settle(server.start())
        self.addCleanup(server.stop)
        await self.settle(servers.opened(1))
        self.assertEqual(servers.receivers[0].frames[0].type, FrameType.HELLO)


class BillingOverRabbitMQTests(ProcessTestCase):
    async def test_billing_over_rabbitmq(self) -> None:
        """
        Billing connected through RabbitMQ serves the README's requests with
        the same HTTP behaviour as over TCP.
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        await self.deployment.start_gateway(
            node_id=node, transport=f'{{type: rabbitmq, listen: "{BROKER}"}}')
        config = self.deployment.write("billing-amqp.yaml", f"""
region: eu1
instance_id: billing-amqp
routers: [{{transport: rabbitmq, address: "{BROKER}:gateway={node}"}}]
""")
        self.deployment.spawn("billing-amqp", ["stella-micro", "--config", config,
                                               "--app", "examples.billing:service"])
        await self.deployment.gateway.wait_for(r"registered instance billing-amqp .* over "
                                               r"rabbitmq", reactor)
        await self.assertBillingAnswers(7)
        base = self.deployment.base_url

        # Streams both ways as stream-data messages, across several credit
        # windows: an upload hashed as it arrives, a download checked whole.
        size = 6 * 1024 * 1024
        producer = PatternProducer(size)
        response = await treq.post(base + "/invoices/7/attachments", data=producer,
                                   pool=self.pool)
        result = json.loads(await response.content())
        self.assertEqual(response.code, 201, result)
        self.assertEqual((result["bytes"], result["sha256"]),
                         (size, producer.digest.hexdigest()))
        response = await treq.get(base + f"/invoices/7/export?bytes={size}", pool=self.pool)
        self.assertEqual(response.code, 200)
        counter = Counter()
        response.deliverBody(counter)
        await counter.finished
        expected = hashlib.sha256(BLOCK * (size // len(BLOCK))).hexdigest()
        self.assertEqual((counter.size, counter.digest.hexdigest()), (size, expected))


class RabbitMQFailureTests(ProcessTestCase):
    """
    Failures with real processes and the real broker.
    """

    timeout = 90

    async def start(self, app: str, instance: str) -> Any:
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.deployment.start_gateway(
            node_id=node, transport=f'{{type: rabbitmq, listen: "{BROKER}"}}',
            extra="health: {degraded_after: 30, unhealthy_after: 60, sweep_interval: 5, "
                  "ping_interval: 60}")
        config = self.deployment.write(f"{instance}.yaml", f"""
region: eu1
instance_id: {instance}
routers: [{{transport: rabbitmq, address: "{BROKER}:gateway={node}"}}]
""")
        micro = self.deployment.spawn(instance, ["stella-micro", "--config", config,
                                                 "--app", app])
        await gateway.wait_for(rf"registered instance {instance} .* over rabbitmq", reactor)
        return gateway, micro

    async def test_expired_request_is_not_executed(self) -> None:
        """
        A request whose deadline passes while its microservice is frozen is
        never executed: the client gets 504, and when the microservice
        resumes the request has expired (in the broker, or, if it was
        already delivered, at the SDK's deadline check).
        """
        gateway, micro = await self.start("examples.slowpoke:service", "slow-amqp")
        micro.signal("STOP")
        response = await treq.get(self.deployment.base_url + "/slow/timeout", pool=self.pool)
        self.assertEqual(response.code, 504)
        cid = json.loads(await response.content())["correlation_id"]
        micro.signal("CONT")
        response = await treq.get(self.deployment.base_url + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200, "\n".join(gateway.lines[-15:] + micro.lines[-15:]))
        await response.content()
        self.assertFalse([line for line in micro.lines if f"slow request {cid} started" in line],
                         micro.lines[-20:])

    async def test_broker_drops_the_connections(self) -> None:
        """
        When the broker drops both sides' connections, both reconnect with
        backoff, the microservice announces itself again and requests
        succeed again; nothing hangs.
        """
        import subprocess

        gateway, micro = await self.start("examples.billing:service", "billing-drop")
        response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
        seen = len(gateway.lines)
        micro_seen = len(micro.lines)
        ours = {str(p.transport.pid) for p in (gateway, micro)}  # type: ignore[union-attr]
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
            capture_output=True, text=True, timeout=30).stdout
        closed = 0
        for line in listing.splitlines():
            if any(f" pid {pid}\"" in line or f" pid {pid}>>" in line for pid in ours):
                subprocess.run(["rabbitmqctl", "-q", "close_connection", line.split()[0],
                                "test: broker drops the connection"], timeout=30)
                closed += 1
        self.assertEqual(closed, 2, listing)
        await gateway.wait_for(r"AMQP link lost", reactor, since=seen)
        await gateway.wait_for(r"registered instance billing-drop ", reactor, since=seen)
        # The gateway may have its instance back (its "send HELLO again")
        # before the microservice's own connection was closed: wait for the
        # microservice's registration after its link was lost.
        await micro.wait_for(r"AMQP link lost", reactor, since=micro_seen)
        lost = next(i for i in range(micro_seen, len(micro.lines))
                    if "AMQP link lost" in micro.lines[i])
        await micro.wait_for(r"registered with gateway", reactor, since=lost)
        response = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_silent_instance_is_not_used(self) -> None:
        """
        Liveness without a connection between the two: an instance frozen
        with SIGSTOP stops heartbeating through the broker, the sweep marks
        it UNHEALTHY and its queue gets no requests while its twin serves
        them all; after SIGCONT it is routed to again.
        """
        node = f"gw-{uuid.uuid4().hex[:8]}"
        gateway = await self.deployment.start_gateway(
            node_id=node, transport=f'{{type: rabbitmq, listen: "{BROKER}"}}',
            extra="health: {degraded_after: 0.6, unhealthy_after: 1.2, sweep_interval: 0.1, "
                  "ping_interval: 60}")
        processes = {}
        for instance in ("w-amqp-frozen", "w-amqp-twin"):
            config = self.deployment.write(f"{instance}.yaml", f"""
region: eu1
instance_id: {instance}
heartbeat_interval: 0.1
routers: [{{transport: rabbitmq, address: "{BROKER}:gateway={node}"}}]
""")
            processes[instance] = self.deployment.spawn(
                instance, ["stella-micro", "--config", config, "--app", "examples.whoami:service"])
            await gateway.wait_for(rf"registered instance {instance} .* over rabbitmq", reactor)

        async def served_by(count: int) -> Tally:
            served: Tally = Tally()
            for _ in range(count):
                response = await treq.get(self.deployment.base_url + "/whoami", pool=self.pool)
                body = await response.content()
                self.assertEqual(response.code, 200, body)
                served[json.loads(body)["instance_id"]] += 1
            return served

        self.assertEqual(set(await served_by(8)), {"w-amqp-frozen", "w-amqp-twin"})
        seen = len(gateway.lines)
        processes["w-amqp-frozen"].signal("STOP")
        await gateway.wait_for(r"instance w-amqp-frozen .* -> unhealthy", reactor, since=seen)
        self.assertEqual(await served_by(10), Tally({"w-amqp-twin": 10}))
        seen = len(gateway.lines)
        processes["w-amqp-frozen"].signal("CONT")
        await gateway.wait_for(r"instance w-amqp-frozen .* -> healthy", reactor, since=seen)
        self.assertIn("w-amqp-frozen", await served_by(10))

    async def test_client_disconnect_cancels_over_rabbitmq(self) -> None:
        """
        A client that goes away mid-request gets its handler cancelled
        through the broker (CANCEL ClientDisconnected), as over TCP.
        """
        gateway, micro = await self.start("examples.slowpoke:service", "slow-cancel")
        request = treq.get(self.deployment.base_url + "/slow?seconds=30", pool=self.pool)
        match = await micro.wait_for(r"slow request ([0-9a-f-]{36}) started", reactor)
        cid = match.group(1)
        request.cancel()
        self.failureResultOf(request, ResponseNeverReceived)
        await gateway.wait_for(rf"client of request {cid} disconnected; CANCEL sent", reactor)
        await micro.wait_for(rf"slow request {cid} cancelled at [0-9.]+: ClientDisconnected",
                             reactor)
        response = await treq.get(self.deployment.base_url + "/slow?seconds=0", pool=self.pool)
        self.assertEqual(response.code, 200)
        await response.content()
