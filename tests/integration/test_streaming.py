"""
Streaming through real processes: a 64 MiB upload hashed as it arrives
and a 64 MiB download, each with the gateway's resident memory growing by
less than 32 MiB; a stalled download does not hold up other requests on
the same microservice connection.
"""

import hashlib
from typing import Any, List

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .test_processes import ProcessTestCase

SIZE = 64 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError("no VmRSS")


@implementer(IBodyProducer)
class PatternProducer:
    """
    Produces SIZE bytes of BLOCK, pausing when the transport asks.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, size: int) -> None:
        self.left = size
        self.paused = False
        self.digest = hashlib.sha256()
        self.done: Deferred = Deferred()
        self.consumer: Any = None

    def startProducing(self, consumer: Any) -> Deferred:
        self.consumer = consumer
        self._produce()
        return self.done

    def _produce(self) -> None:
        while self.left > 0 and not self.paused:
            piece = BLOCK[: min(len(BLOCK), self.left)]
            self.left -= len(piece)
            self.digest.update(piece)
            self.consumer.write(piece)
            if self.left % (4 * 1024 * 1024) == 0:
                # Yield to the reactor now and then so pauses can arrive.
                reactor.callLater(0, self._produce)
                return
        if self.left == 0 and not self.done.called:
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._produce()

    def stopProducing(self) -> None:
        self.left = 0


class Counter(Protocol):
    def __init__(self) -> None:
        self.size = 0
        self.digest = hashlib.sha256()
        self.finished: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        self.digest.update(data)

    def connectionLost(self, reason: Any) -> None:
        self.finished.callback(None)


class StreamingProcessTests(ProcessTestCase):
    timeout = 120

    async def start(self) -> int:
        gateway = await self.deployment.start_gateway()
        await self.deployment.start_microservice("examples.billing:service", "billing-stream")
        assert gateway.transport is not None
        return gateway.transport.pid  # type: ignore[attr-defined]

    async def test_upload_64_mib(self) -> None:
        """
        A 64 MiB upload (chunked) reaches the handler as it arrives: its
        sha256 matches; the gateway's RSS grows by less than 32 MiB.
        """
        pid = await self.start()
        before = rss_kib(pid)
        producer = PatternProducer(SIZE)
        response = await treq.post(self.deployment.base_url + "/invoices/9/attachments",
                                   data=producer, pool=self.pool)
        result = await response.json()
        self.assertEqual(response.code, 201)
        self.assertEqual(result["bytes"], SIZE)
        self.assertEqual(result["sha256"], producer.digest.hexdigest())
        growth = rss_kib(pid) - before
        self.assertLess(growth, 32 * 1024, f"gateway RSS grew by {growth} KiB")
        print(f"upload 64 MiB: gateway RSS growth {growth} KiB")

    async def test_download_64_mib_and_a_stalled_reader(self) -> None:
        """
        A 64 MiB download arrives whole with the gateway's RSS growing by
        less than 32 MiB; while another download is stalled (its client
        reads nothing), pings on the same microservice connection answer.
        """
        pid = await self.start()
        before = rss_kib(pid)
        response = await treq.get(self.deployment.base_url + f"/invoices/9/export?bytes={SIZE}",
                                  pool=self.pool)
        counter = Counter()
        response.deliverBody(counter)
        await counter.finished
        self.assertEqual(counter.size, SIZE)
        expected = hashlib.sha256()
        for _ in range(SIZE // len(BLOCK)):
            expected.update(BLOCK)
        self.assertEqual(counter.digest.hexdigest(), expected.hexdigest())
        growth = rss_kib(pid) - before
        self.assertLess(growth, 32 * 1024, f"gateway RSS grew by {growth} KiB")
        print(f"download 64 MiB: gateway RSS growth {growth} KiB")

        stalled = await treq.get(self.deployment.base_url + f"/invoices/9/export?bytes={SIZE}",
                                 pool=self.pool)
        holder = Counter()
        stalled.deliverBody(holder)
        holder.transport.pauseProducing()
        answers: List[int] = []
        for _ in range(20):
            ping = await treq.get(self.deployment.base_url + "/ping", pool=self.pool)
            answers.append(ping.code)
            await ping.content()
        self.assertEqual(answers, [200] * 20)
        self.assertLess(holder.size, SIZE // 4)
        holder.transport.stopProducing()
