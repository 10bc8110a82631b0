"""
The Protocol/Factory pair shared by every stream transport (TCP, in-memory,
TLS): length-prefixed frames over a byte stream.
"""

from __future__ import annotations

import random
from typing import Callable, List, Optional, Set, Tuple, cast

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.addresses import describe_address
from ..common.enums import TransportType
from ..common.errors import ProtocolError
from ..common.frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame
from ..common.interfaces import (
    IFrameReceiver,
    IFrameSender,
    ISendBacklog,
    ITransportClient,
    ITransportServer,
)
from ..common.models import Frame
from .flush import discard_unsent, flush
from .hello import HelloBackoff, HelloWatch

ReceiverFactory = Callable[[], IFrameReceiver]


@implementer(IPushProducer)
class _WriteBacklog:
    """
    How much of what a L{FrameStreamProtocol} wrote waits in its
    transport's write buffer: registered as the transport's streaming
    producer, it is paused when the buffer passes the transport's
    high-water mark and resumed when the buffer is empty.  It never stops
    the protocol from reading.

    @ivar unsent: bytes written while paused.
    """

    __slots__ = ("paused", "unsent", "limit", "on_over", "_over", "_drained", "transport")

    def __init__(self) -> None:
        #: The transport it is registered with (L{None} until then).
        self.transport: Optional[IConsumer] = None
        self.paused = False
        self.unsent = 0
        self.limit: Optional[int] = None
        self.on_over: Optional[Callable[[], None]] = None
        self._over = False
        self._drained: List[Callable[[], None]] = []

    def wrote(self, size: int) -> None:
        """
        C{size} bytes were just handed to the transport.
        """
        if self.paused:
            self.unsent += size
            limit = self.limit
            if limit is not None and self.unsent > limit and not self._over:
                self._over = True
                if self.on_over is not None:
                    self.on_over()

    def when_drained(self, callback: Callable[[], None]) -> None:
        if self.paused:
            self._drained.append(callback)
        else:
            callback()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.unsent = 0
        self._over = False
        transport = self.transport
        if transport is not None and getattr(transport, "disconnecting", False):
            # Someone called loseConnection while the buffer was full: a
            # transport whose paused producer was resumed waits for it to
            # unregister before it closes.
            self.transport = None
            transport.unregisterProducer()
        callbacks, self._drained = self._drained, []
        for callback in callbacks:
            callback()

    def stopProducing(self) -> None:
        # The connection is gone: nothing waits, nobody is told.
        self.transport = None
        self.paused = False
        self.unsent = 0
        self._drained = []


@implementer(IFrameSender, ISendBacklog)
class FrameStreamProtocol(Protocol):
    """
    Length-prefixed frames over one byte stream.  Decodes with
    L{FrameDecoder}, hands frames to its L{IFrameReceiver}, and closes the
    connection (with a logged reason) on any protocol error.
    """

    log = Logger()
    #: Send what the receiver wrote while handling the frames of one read
    #: (a batch of RESPONSEs, on the microservice side) at the end of that
    #: read, in the same reactor turn (L{flush}), rather than on the
    #: reactor's next turn.  Off on the gateway side: there REQUEST frames
    #: written by many HTTP requests during one turn go out together on the
    #: next, one write per turn, which keeps the microservice's batches large.
    flush_after_frames = False

    def __init__(
        self,
        receiver: IFrameReceiver,
        transport_type: TransportType,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        """
        @param receiver: gets the frames of this connection.
        @param transport_type: reported to the layers above.
        @param max_frame_bytes: the decoder's length cap.
        """
        self.receiver = receiver
        self.transport_type = transport_type
        self.peer = ""
        self.peer_identity: Tuple[str, ...] = ()
        self._decoder = FrameDecoder(max_frame_bytes)
        self._closing: Optional[str] = None
        self._open = False
        self._backlog = _WriteBacklog()

    def connectionMade(self) -> None:
        """
        Tell the receiver it may send.
        """
        assert self.transport is not None
        self.peer = describe_address(self.transport.getPeer())
        # Frames are small and answered one by one: no Nagle delay (a small
        # write held back until the previous one is acknowledged).
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        if isinstance(self.factory, FrameStreamFactory):
            self.factory.protocols.add(self)
        self.open()

    def open(self) -> None:
        """
        The connection is usable: hand it to the receiver.
        """
        # To learn when frames pile up in the write buffer (a peer that does
        # not read): see L{unsent}.  Under TLS, the TCP connection's buffer
        # (TLS closes only once no producer is registered with it).
        target: object = self.transport
        if isinstance(target, ProtocolWrapper):
            target = target.transport
        if getattr(target, "registerProducer", None) is not None:
            consumer = cast(IConsumer, target)
            consumer.registerProducer(self._backlog, True)
            self._backlog.transport = consumer
        self._open = True
        self.receiver.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Decode and deliver complete frames; close on a protocol error.
        """
        if self._closing is not None:
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as e:
            self.log.warn(
                "protocol error from {peer}, closing: {error}", peer=self.peer, error=e
            )
            self.close(f"protocol error: {e}")
            return
        receive = self.receiver.frameReceived
        for frame in frames:
            if self._closing is not None:
                return
            try:
                receive(frame)
            except Exception:
                self.log.failure(
                    "receiver failed on a {kind} frame from {peer}; closing",
                    kind=frame.type.name,
                    peer=self.peer,
                )
                self.close("internal error while handling a frame")
                return
        if self.flush_after_frames:
            flush(self.transport)

    def sendFrame(self, frame: Frame) -> None:
        """
        Write one frame; dropped silently once the connection is closing.
        """
        if self._open and self._closing is None:
            assert self.transport is not None
            data = encode_frame(frame)
            self.transport.write(data)
            if self._backlog.paused:
                self._backlog.wrote(len(data))

    # ISendBacklog

    @property
    def unsent(self) -> int:
        return self._backlog.unsent

    def notifyDrained(self, callback: Callable[[], None]) -> None:
        self._backlog.when_drained(callback)

    def limitUnsent(self, limit: int, callback: Callable[[], None]) -> None:
        self._backlog.limit, self._backlog.on_over = limit, callback

    def _unregister(self) -> None:
        """
        Stop being the transport's producer (a transport with a paused
        producer would not close once its buffer drained).
        """
        target, self._backlog.transport = self._backlog.transport, None
        if target is not None:
            target.unregisterProducer()

    def close(self, reason: str) -> None:
        """
        Close after the queued bytes are written.
        """
        if self._closing is None and self._open:
            self._closing = reason
            assert self.transport is not None
            self._unregister()
            self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """
        Close now, dropping the queued bytes (also after L{close}, which
        may be waiting for them to leave).
        """
        if self._open:
            self._closing = self._closing or reason
            assert self.transport is not None
            self._unregister()
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        """
        Tell the receiver, with our own close reason if we closed.
        """
        if isinstance(self.factory, FrameStreamFactory):
            self.factory.protocols.discard(self)
        self._backlog.stopProducing()
        # Frames a peer never read go now, not when the garbage collector
        # gets to this protocol's cycles (up to the unsent-bytes cap).
        discard_unsent(self.transport)
        if not self._open:
            return
        self._open = False
        why = self._closing or reason.getErrorMessage()
        self._closing = self._closing or why
        self.receiver.connectionClosed(why)


class FrameStreamFactory(Factory):
    """
    Builds a L{FrameStreamProtocol} with a fresh receiver per connection.
    """

    noisy = False

    def __init__(
        self,
        receiver_factory: ReceiverFactory,
        transport_type: TransportType,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        protocol_class: type = FrameStreamProtocol,
        clock: Optional[IReactorTime] = None,
        flush_after_frames: bool = False,
    ) -> None:
        self.clock = clock
        self.flush_after_frames = flush_after_frames
        self.receiver_factory = receiver_factory
        self.transport_type = transport_type
        self.max_frame_bytes = max_frame_bytes
        self.protocol_class = protocol_class
        self.protocols: Set[FrameStreamProtocol] = set()

    def buildProtocol(self, addr: object) -> FrameStreamProtocol:
        proto = self.protocol_class(
            self.receiver_factory(), self.transport_type, self.max_frame_bytes
        )
        proto.factory = self
        proto.flush_after_frames = self.flush_after_frames
        return proto


@implementer(ITransportServer)
class StreamTransportServer:
    """
    The gateway side of a stream transport: listens on a server endpoint.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        receiver_factory: ReceiverFactory,
        transport_type: TransportType,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        protocol_class: type = FrameStreamProtocol,
        wrap: Callable[[Factory], IProtocolFactory] = lambda factory: factory,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param endpoint: where to listen.
        @param receiver_factory: one receiver per accepted connection.
        @param protocol_class: the L{FrameStreamProtocol} (sub)class to use.
        @param wrap: wraps the protocol factory before listening (TLS).
        """
        self.transport_type = transport_type
        self._endpoint = endpoint
        self._factory = FrameStreamFactory(
            receiver_factory, transport_type, max_frame_bytes, protocol_class, clock
        )
        self._listening_factory = wrap(self._factory)
        self._port: Optional[IListeningPort] = None

    async def _start(self) -> str:
        port = await self._endpoint.listen(self._listening_factory)
        self._port = port
        where = f"{self.transport_type.value}:{describe_address(port.getHost())}"
        self.log.info("{transport} transport listening on {where}",
                      transport=self.transport_type.value, where=where)
        return where

    def start(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self._start())

    @property
    def port(self) -> Optional[IListeningPort]:
        """
        The listening port once started.
        """
        return self._port

    def stop(self) -> Deferred[None]:
        waits: List[Deferred[None]] = []
        if self._port is not None:
            waits.append(Deferred.fromCoroutine(_await(self._port.stopListening())))
            self._port = None
        for proto in list(self._factory.protocols):
            proto.close("gateway transport stopping")
        if not waits:
            return succeed(None)
        return DeferredList(waits).addCallback(lambda _: None)


async def _await(result: object) -> None:
    if isinstance(result, Deferred):
        await result


@implementer(ITransportClient)
class StreamTransportClient:
    """
    The microservice side of a stream transport: a L{ClientService} that
    keeps one connection open and reconnects with exponential backoff and
    jitter; each connection gets a fresh receiver (which sends HELLO).
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        receiver_factory: ReceiverFactory,
        clock: IReactorTime,
        transport_type: TransportType,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        jitter: Optional[Callable[[], float]] = None,
        protocol_class: type = FrameStreamProtocol,
    ) -> None:
        """
        @param endpoint: where the router listens.
        @param clock: drives the backoff timers.
        @param jitter: extra random delay per attempt; defaults to up to 0.5 s
            (pass C{lambda: 0} in tests for exact timings).
        """
        self.transport_type = transport_type
        # The backoff grows across connections until a HELLO is accepted
        # (ClientService alone forgets it whenever a TCP connect succeeds).
        self.backoff = HelloBackoff(
            initial_delay, max_delay, 2.0,
            jitter if jitter is not None else (lambda: random.uniform(0, 0.5)))

        def watched() -> IFrameReceiver:
            return HelloWatch(receiver_factory(), self.backoff.accepted)

        self.factory = FrameStreamFactory(watched, transport_type, max_frame_bytes,
                                          protocol_class, clock, flush_after_frames=True)
        self.service = ClientService(endpoint, self.factory, retryPolicy=self.backoff,
                                     clock=clock)

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred[None]:
        return self.service.stopService()
