"""
The checks behind the AMQP client library choice (docs/router/decisions.md),
against the real RabbitMQ broker on 127.0.0.1:5672: pika's Twisted adapter
carries a non-ASCII UTF-8 body, a 300 KiB binary body (several AMQP body
frames) and 10,000 request/reply round trips intact.  Queues are exclusive
and auto-deleted, named per test run.
"""

import os
import time
import uuid
from typing import Any, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientCreator
from twisted.trial.unittest import TestCase

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection

HOST, PORT = os.environ.get("STELLA_AMQP_HOST", "127.0.0.1"), 5672


class PikaChecks(TestCase):
    timeout = 120

    async def connect(self) -> Any:
        parameters = pika.ConnectionParameters(
            host=HOST, port=PORT, credentials=pika.PlainCredentials("guest", "guest"))
        creator = ClientCreator(reactor, TwistedProtocolConnection, parameters)
        protocol = await creator.connectTCP(HOST, PORT)
        await protocol.ready
        self.addCleanup(self.close, protocol)
        return protocol

    async def close(self, protocol: Any) -> None:
        if protocol.is_open:
            protocol.close()
            await protocol.closed

    async def queue(self, channel: Any) -> Tuple[str, Any]:
        name = f"stella-test-{uuid.uuid4().hex}"
        await channel.queue_declare(queue=name, exclusive=True, auto_delete=True)
        queue, _ = await channel.basic_consume(queue=name, auto_ack=True)
        return name, queue

    async def echo(self, body: bytes) -> Tuple[bytes, Any]:
        connection = await self.connect()
        channel = await connection.channel()
        name, queue = await self.queue(channel)
        cid = str(uuid.uuid4())
        await channel.basic_publish(exchange="", routing_key=name, body=body,
                                    properties=pika.BasicProperties(type="4", correlation_id=cid,
                                                                    reply_to=name))
        _, _, properties, received = await queue.get()
        self.assertEqual((properties.type, properties.correlation_id, properties.reply_to),
                         ("4", cid, name))
        return received, properties

    async def test_utf8_body(self) -> None:
        """
        A non-ASCII UTF-8 body arrives byte for byte.
        """
        body = "façade — 請求書 — счёт — 💶".encode("utf-8")
        received, _ = await self.echo(body)
        self.assertEqual(received, body)

    async def test_binary_300_kib(self) -> None:
        """
        A 300 KiB binary body (several body frames) arrives intact.
        """
        body = bytes(range(256)) * 1200
        received, _ = await self.echo(body)
        self.assertEqual(received, body)

    async def test_10000_round_trips(self) -> None:
        """
        10,000 request/reply round trips between two channels, each matched
        by correlation id; prints the rate.
        """
        connection = await self.connect()
        client, server = await connection.channel(), await connection.channel()
        request_queue, requests = await self.queue(server)
        reply_queue, replies = await self.queue(client)

        async def serve() -> None:
            for _ in range(10_000):
                channel, _, properties, body = await requests.get()
                await server.basic_publish(
                    exchange="", routing_key=properties.reply_to, body=body,
                    properties=pika.BasicProperties(correlation_id=properties.correlation_id))

        serving = Deferred.fromCoroutine(serve())
        start = time.perf_counter()
        for i in range(10_000):
            cid = f"{i}"
            await client.basic_publish(
                exchange="", routing_key=request_queue, body=cid.encode(),
                properties=pika.BasicProperties(correlation_id=cid, reply_to=reply_queue))
            _, _, properties, body = await replies.get()
            self.assertEqual((properties.correlation_id, body), (cid, cid.encode()))
        elapsed = time.perf_counter() - start
        await serving
        print(f"pika: 10,000 round trips in {elapsed:.2f}s ({10_000 / elapsed:.0f}/s)")
