"""
The UDP transport: one frame per datagram (C{type | id | data}, no length
prefix), for small, non-streaming calls.

UDP has no connection, so this module keeps a small one per peer:

 - the gateway opens a peer for an address on its first valid HELLO
   datagram; datagrams from an address without one are dropped and
   counted; a peer silent for C{idle_timeout} is closed (its requests get
   502, its routes go);
 - a duplicated datagram (same frame type and correlation id) is dropped,
   and if this side already answered it (HELLO answer, RESPONSE), the
   answer is sent again, so a lost answer is repaired by the sender's
   retry instead of re-running the request;
 - the microservice resends its HELLO until it is answered (L{HelloRetry}),
   opens a new socket when an ICMP port unreachable closed its own, and
   starts a new session (a new HELLO) when it has heard nothing from the
   gateway for C{idle_timeout}.

Malformed datagrams (shorter than 17 bytes, unknown type) are dropped and
counted, never raised; drops are logged at most once per interval, with
their count (a flood must cost a counter per datagram, not a log line).  Received datagrams are read up to 65,535 bytes
(C{listenUDP} reads only 8,192 unless told).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import FrameType, TransportType
from ..common.errors import ProtocolError
from ..common.frames import FRAME_OVERHEAD, decode_datagram, encode_datagram
from ..common.ids import CorrelationId
from ..common.interfaces import IFrameReceiver, IFrameSender, ITransportClient, ITransportServer
from ..common.addresses import MAX_DATAGRAM_BYTES, parse_udp_address
from ..common.models import Frame
from ..common.payloads import HelloAck, encode_hello_ack
from .hello import HelloRetry

#: The default UDP port of the gateway's transport listener.
DEFAULT_PORT = 5102
#: What a received frame answers, by the received frame's type.
_REPLY_TYPE = {FrameType.HELLO: FrameType.HELLO, FrameType.REQUEST: FrameType.RESPONSE}
_HELLO_BYTE = bytes([FrameType.HELLO])
_TYPE_BYTES = frozenset(int(t) for t in FrameType)

ReceiverFactory = Callable[[], IFrameReceiver]


class _Seen:
    """
    A bounded memory of the frames received (for duplicates) and of the
    answers this side sent (to repeat them): HELLO answers on the gateway,
    RESPONSEs on the microservice.  Answers are kept up to C{max_bytes}.
    """

    def __init__(self, answer_types: Tuple[FrameType, ...], size: int = 4096,
                 max_bytes: int = 16 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.answer_types = answer_types
        self._received: "OrderedDict[Tuple[int, CorrelationId], None]" = OrderedDict()
        self._answers: "OrderedDict[Tuple[int, CorrelationId], bytes]" = OrderedDict()
        self._answer_bytes = 0

    def duplicate(self, frame: Frame) -> bool:
        key = (frame.type, frame.correlation_id)
        if key in self._received:
            return True
        self._received[key] = None
        if len(self._received) > self.size:
            self._received.popitem(last=False)
        return False

    def remember_answer(self, frame: Frame, datagram: bytes) -> None:
        if frame.type not in self.answer_types:
            return
        key = (frame.type, frame.correlation_id)
        previous = self._answers.pop(key, None)
        if previous is not None:
            self._answer_bytes -= len(previous)
        self._answers[key] = datagram
        self._answer_bytes += len(datagram)
        while self._answers and (len(self._answers) > self.size
                                 or self._answer_bytes > self.max_bytes):
            _, dropped = self._answers.popitem(last=False)
            self._answer_bytes -= len(dropped)

    def answer_to(self, frame: Frame) -> Optional[bytes]:
        reply = _REPLY_TYPE.get(frame.type)
        if reply is None:
            return None
        return self._answers.get((reply, frame.correlation_id))


class _Endpoint(DatagramProtocol):
    """
    What both sides share: decoding, counting drops, duplicates, answers.

    A dropped datagram costs a counter increment: a flood of junk must not
    cost a log line each (a debug line per datagram once took the gateway
    down).  At most one line per C{drop_log_interval} says how many were
    dropped, why, and the last sender.

    @ivar drops: dropped datagrams by reason since start (C{malformed},
        C{oversize}, C{duplicate}, C{unknown_peer}).
    """

    log = Logger()
    #: Seconds between two log lines about dropped datagrams.
    drop_log_interval = 10.0

    def __init__(self, clock: IReactorTime, max_datagram_bytes: int) -> None:
        self.clock = clock
        self.max_datagram_bytes = max_datagram_bytes
        self.drops: Dict[str, int] = {}
        self._drops_logged: Dict[str, int] = {}
        self._last_dropped: Any = None
        self._drop_report: Optional[IDelayedCall] = None

    def drop(self, reason: str, address: Any, detail: str = "") -> None:
        drops = self.drops
        drops[reason] = drops.get(reason, 0) + 1
        self._last_dropped = address
        if self._drop_report is None:
            self._drop_report = self.clock.callLater(self.drop_log_interval, self.report_drops)

    def report_drops(self) -> None:
        """
        Log the datagrams dropped since the last report, by reason (called
        by the timer the first drop of an interval arms, and on stop).
        """
        if self._drop_report is not None and self._drop_report.active():
            self._drop_report.cancel()
        self._drop_report = None
        new = {reason: count - self._drops_logged.get(reason, 0)
               for reason, count in self.drops.items()}
        total = sum(new.values())
        if not total:
            return
        self._drops_logged = dict(self.drops)
        self.log.warn(
            "dropped {count} datagram(s) in the last {interval:g}s ({reasons}); last from "
            "{address}", count=total, interval=self.drop_log_interval,
            reasons=", ".join(f"{r} {n}" for r, n in sorted(new.items()) if n),
            address=self._last_dropped)

    def decode(self, data: bytes, address: Any) -> Optional[Frame]:
        if len(data) > self.max_datagram_bytes:
            self.drop("oversize", address, f"({len(data)} bytes)")
            return None
        try:
            return decode_datagram(data)
        except ProtocolError as e:
            self.drop("malformed", address, str(e))
            return None

    def send(self, frame: Frame, address: Any, seen: _Seen) -> None:
        datagram = encode_datagram(frame)
        if len(datagram) > self.max_datagram_bytes:
            self.log.error("a {kind} frame of {size} bytes does not fit in a datagram of at most "
                           "{limit}; not sent", kind=frame.type.name, size=len(datagram),
                           limit=self.max_datagram_bytes)
            return
        seen.remember_answer(frame, datagram)
        if self.transport is not None:
            self.transport.write(datagram, address)


@implementer(IFrameSender)
class UDPPeer:
    """
    The gateway's pseudo-connection to one microservice address.
    """

    transport_type = TransportType.UDP
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, server: "UDPTransportServer", address: Tuple[str, int],
                 receiver: IFrameReceiver) -> None:
        self.server = server
        self.address = address
        self.peer = f"{address[0]}:{address[1]}"
        self.receiver = receiver
        self.seen = _Seen((FrameType.HELLO,))
        self.last_seen = server.clock.seconds()
        self.closed = False

    def sendFrame(self, frame: Frame) -> None:
        if not self.closed:
            self.server.protocol.send(frame, self.address, self.seen)

    def close(self, reason: str) -> None:
        self.server.forget(self, reason)


@implementer(ITransportServer)
class UDPTransportServer:
    """
    The gateway side: one UDP socket, one L{UDPPeer} per microservice.
    """

    transport_type = TransportType.UDP
    log = Logger()
    #: Seconds during which an address whose HELLO was refused is not heard.
    refusal_hold = 2.0
    #: How many such addresses are remembered (the oldest are forgotten).
    max_refused = 4096
    #: The socket's receive buffer asked of the kernel (which caps it at
    #: C{net.core.rmem_max}): room for the registered peers' datagrams while
    #: a flood of junk fills it faster than it is read.
    receive_buffer_bytes = 4 * 1024 * 1024

    def __init__(self, reactor: Any, listen: str, receiver_factory: ReceiverFactory,
                 max_datagram_bytes: int = MAX_DATAGRAM_BYTES, idle_timeout: float = 90.0,
                 node_id: str = "gateway") -> None:
        """
        @param listen: C{udp:PORT:interface=HOST}.
        @param idle_timeout: a peer silent this long is closed.
        @param node_id: this gateway's node id, for its "send HELLO again"
            answers.
        @raise ValueError: a bad address.
        """
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.node_id = node_id
        self.hello_again = HelloAgainLimit(reactor)
        self._hello_again_payload = encode_hello_ack(HelloAck(
            False, f"gateway {node_id} has no session for this address; send HELLO again",
            node_id, hello_again=True))
        self.interface, self.port_number = parse_udp_address(listen, server=True)
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.peers: Dict[Tuple[str, int], UDPPeer] = {}
        self._refused: "OrderedDict[Tuple[str, int], float]" = OrderedDict()
        self.protocol = _ServerProtocol(self, reactor, max_datagram_bytes)
        self.port: Optional[IListeningPort] = None
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = reactor

    def start(self) -> Deferred:
        try:
            self.port = self.reactor.listenUDP(self.port_number, self.protocol,
                                               interface=self.interface, maxPacketSize=65535)
        except Exception as e:
            from twisted.internet.defer import fail
            return fail(e)
        self._sweeper.start(max(self.idle_timeout / 4, 0.05), now=False)
        host: Any = self.port.getHost()
        where = f"udp:{host.host}:{host.port}"
        buffer = _grow_receive_buffer(self.port, self.receive_buffer_bytes)
        self.log.info("udp transport listening on {where} (receive buffer {buffer} bytes)",
                      where=where, buffer=buffer)
        return succeed(where)

    def stop(self) -> Deferred:
        if self._sweeper.running:
            self._sweeper.stop()
        self.protocol.report_drops()
        for peer in list(self.peers.values()):
            self.forget(peer, "gateway transport stopping")
        if self.port is not None:
            result = self.port.stopListening()
            self.port = None
            if isinstance(result, Deferred):
                return result
        return succeed(None)

    def sweep(self) -> None:
        """
        Close peers silent for C{idle_timeout}.
        """
        now = self.clock.seconds()
        for peer in list(self.peers.values()):
            silence = now - peer.last_seen
            if silence >= self.idle_timeout:
                self.forget(peer, f"silent for {silence:.1f}s")

    def forget(self, peer: UDPPeer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.address, None)
        peer.receiver.connectionClosed(reason)

    def received(self, frame: Frame, address: Tuple[str, int]) -> None:
        peer = self.peers.get(address)
        opening = peer is None
        if peer is None:
            if frame.type is not FrameType.HELLO:
                self.protocol.drop("unknown_peer", address, frame.type.name)
                return
            if self._refused_recently(address):
                self.protocol.drop("refused_recently", address)
                return
            peer = UDPPeer(self, address, self.receiver_factory())
            self.peers[address] = peer
            peer.receiver.connectionOpened(peer)
            if peer.closed:
                # Refused on sight (too many connections from its host).
                self._hold_off(address)
                return
        peer.last_seen = self.clock.seconds()
        if peer.seen.duplicate(frame):
            answer = peer.seen.answer_to(frame)
            self.protocol.drop("duplicate", address, frame.type.name)
            if answer is not None and self.protocol.transport is not None:
                self.protocol.transport.write(answer, address)
            return
        try:
            peer.receiver.frameReceived(frame)
        except Exception:
            self.log.failure("receiver failed on a {kind} datagram from {peer}; closing",
                             kind=frame.type.name, peer=peer.peer)
            self.forget(peer, "internal error while handling a frame")
        if opening and peer.closed:
            self._hold_off(address)

    def unknown_sender(self, data: bytes, address: Tuple[str, int]) -> None:
        """
        A well-formed-looking frame other than HELLO from an address with no
        peer (this gateway restarted, or forgot it): counted as dropped and,
        within L{HelloAgainLimit}'s budget, answered with a HELLO answer
        C{accepted: false, hello_again: true} under its correlation id, so a
        registered microservice sends a new HELLO at once instead of after
        its idle timeout.
        """
        self.protocol.drop("unknown_peer", address)
        if self.protocol.transport is None or not self.hello_again.allow(address):
            return
        try:
            frame = decode_datagram(data)
        except ProtocolError:
            return
        answer = Frame(FrameType.HELLO, frame.correlation_id, self._hello_again_payload)
        self.protocol.transport.write(encode_datagram(answer), address)

    def _hold_off(self, address: Tuple[str, int]) -> None:
        """
        A HELLO from C{address} was refused: its further HELLOs are dropped
        unread for C{refusal_hold} (a flood of junk HELLOs costs a counter
        each, not a connection, a log line and an answer).
        """
        self._refused[address] = self.clock.seconds() + self.refusal_hold
        while len(self._refused) > self.max_refused:
            self._refused.popitem(last=False)

    def _refused_recently(self, address: Tuple[str, int]) -> bool:
        until = self._refused.get(address)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._refused[address]
        return False


class HelloAgainLimit:
    """
    How often the gateway may answer "send HELLO again" to an unknown
    sender: at most once per C{interval} per address, and at most
    C{per_second} answers a second in all.  A flood of frames from unknown
    (or spoofed) addresses thus costs a clock read and a counter per
    datagram, and the gateway never reflects more than C{per_second}
    small answers a second, whatever the flood (the answer, ~150 bytes,
    may be larger than the frame it answers: the rate is the bound).

    @ivar answered: answers allowed since start.
    """

    def __init__(self, clock: IReactorTime, interval: float = 1.0, per_second: int = 50,
                 max_addresses: int = 4096) -> None:
        """
        @param interval: the least time between two answers to one address.
        @param per_second: the most answers in any one-second window.
        @param max_addresses: the most addresses remembered (the oldest are
            forgotten first).
        """
        self.clock = clock
        self.interval = interval
        self.per_second = per_second
        self.max_addresses = max_addresses
        self.answered = 0
        self._last: "OrderedDict[Tuple[str, int], float]" = OrderedDict()
        self._window_end = 0.0
        self._in_window = 0

    def allow(self, address: Tuple[str, int]) -> bool:
        """
        Whether an answer to C{address} may be sent now (if so, it counts).
        """
        now = self.clock.seconds()
        if now >= self._window_end:
            self._window_end = now + 1.0
            self._in_window = 0
        if self._in_window >= self.per_second:
            return False
        last = self._last.get(address)
        if last is not None and now - last < self.interval:
            return False
        self._last[address] = now
        self._last.move_to_end(address)
        while len(self._last) > self.max_addresses:
            self._last.popitem(last=False)
        self._in_window += 1
        self.answered += 1
        return True


def _grow_receive_buffer(port: Any, size: int) -> int:
    """
    Ask for a receive buffer of C{size} bytes on a listening UDP port's
    socket (never shrinking it).

    @return: the size the kernel reports afterwards (Linux reports twice
        what it grants, bookkeeping included), or 0 without a socket.
    """
    handle = getattr(port, "getHandle", None)
    if handle is None:
        return 0
    sock = handle()
    current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if current < size:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


class _ServerProtocol(_Endpoint):
    def __init__(self, server: UDPTransportServer, clock: IReactorTime, limit: int) -> None:
        super().__init__(clock, limit)
        self.server = server

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if addr not in self.server.peers and data[:1] != _HELLO_BYTE:
            # An unknown sender's datagram that cannot open a peer: counted,
            # not decoded (a flood of these must stay cheap).
            size = len(data)
            if size > self.max_datagram_bytes:
                self.drop("oversize", addr)
            elif size >= FRAME_OVERHEAD and data[0] in _TYPE_BYTES:
                self.server.unknown_sender(data, addr)
            else:
                self.drop("malformed", addr)
            return
        frame = self.decode(data, addr)
        if frame is not None:
            self.server.received(frame, addr)


@implementer(ITransportClient, IFrameSender)
class UDPTransportClient(_Endpoint):
    """
    The microservice side: a connected UDP socket to one gateway, with a
    fresh receiver (session) whenever it has to start over.
    """

    transport_type = TransportType.UDP
    peer_identity: Tuple[str, ...] = ()
    log = Logger()

    def __init__(self, reactor: Any, address: str, receiver_factory: ReceiverFactory,
                 max_datagram_bytes: int = MAX_DATAGRAM_BYTES, idle_timeout: float = 90.0,
                 hello_retry: float = 1.0, max_delay: float = 30.0) -> None:
        """
        @param address: C{udp:host=HOST:port=PORT}.
        @param idle_timeout: start a new session after this long without a
            datagram from the gateway.
        @param hello_retry: resend an unanswered HELLO after this long
            (doubling up to C{max_delay}, back to C{hello_retry} only once
            a HELLO was accepted).
        @param max_delay: the longest wait between two HELLOs.
        @raise ValueError: a bad address.
        """
        super().__init__(reactor, max_datagram_bytes)
        self.reactor = reactor
        self.host, self.port_number = parse_udp_address(address, server=False)
        self.peer = f"{self.host}:{self.port_number}"
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.hello_retry = hello_retry
        self.receiver: Optional[IFrameReceiver] = None
        self.seen = _Seen((FrameType.RESPONSE,))
        self.retry = HelloRetry(reactor, self._write_hello, hello_retry, max_delay,
                                peer=self.peer)
        self._port: Optional[IListeningPort] = None
        self._reopen_call: Optional[IDelayedCall] = None
        self._idle_call: Optional[IDelayedCall] = None
        self._running = False

    # ITransportClient

    def start(self) -> None:
        self._running = True
        self._open()

    def stop(self) -> Deferred:
        self._running = False
        self._cancel(self._reopen_call)
        self._reopen_call = None
        self.report_drops()
        self._end_session("stopped")
        port, self._port = self._port, None
        if port is not None:
            result = port.stopListening()
            if isinstance(result, Deferred):
                return result
        return succeed(None)

    def _open(self) -> None:
        self._reopen_call = None
        if self._running:
            self._port = self.reactor.listenUDP(0, self, maxPacketSize=65535)

    # DatagramProtocol

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.connect(self.host, self.port_number)
        self._new_session()

    def stopProtocol(self) -> None:
        """
        The socket closed.  Unless L{stop} closed it, the reactor did: on
        Linux an ICMP port unreachable (no gateway listening yet, or any
        more) is an error on the connected socket, which the reactor treats
        as the end of it.  The session ends and a new socket says HELLO
        again after the retry delay, which grows until a gateway accepts.
        """
        if not self._running or self._port is None:
            return
        self._port = None
        self._end_session("the gateway is unreachable (port unreachable)")
        delay = self.retry.delay
        self.log.info("gateway {peer} unreachable; saying HELLO again in {delay:g}s",
                      peer=self.peer, delay=delay)
        self._reopen_call = self.clock.callLater(delay, self._open)

    def connectionRefused(self) -> None:
        self.log.debug("gateway {peer} not answering (port unreachable)", peer=self.peer)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        frame = self.decode(data, addr)
        if frame is None or self.receiver is None:
            return
        self._touch()
        self.retry.received(frame)
        if self.seen.duplicate(frame):
            answer = self.seen.answer_to(frame)
            self.drop("duplicate", addr, frame.type.name)
            if answer is not None and self.transport is not None:
                self.transport.write(answer, None)
            return
        try:
            self.receiver.frameReceived(frame)
        except Exception:
            self.log.failure("receiver failed on a {kind} datagram; starting over",
                             kind=frame.type.name)
            self._restart("internal error while handling a frame")

    # IFrameSender (the session's view of the gateway)

    def sendFrame(self, frame: Frame) -> None:
        if self.receiver is None:
            return
        if frame.type is FrameType.HELLO and not self.retry.pending:
            self.retry.sent(frame)
        self.send(frame, None, self.seen)

    def close(self, reason: str) -> None:
        self._restart(reason)

    def send(self, frame: Frame, address: Any, seen: _Seen) -> None:
        datagram = encode_datagram(frame)
        if len(datagram) > self.max_datagram_bytes:
            self.log.error("a {kind} frame of {size} bytes does not fit in a datagram; not sent",
                           kind=frame.type.name, size=len(datagram))
            return
        seen.remember_answer(frame, datagram)
        if self.transport is not None:
            self.transport.write(datagram, None)

    # sessions

    def _new_session(self) -> None:
        self.seen = _Seen((FrameType.RESPONSE,))
        self.receiver = self.receiver_factory()
        self._touch()
        self.receiver.connectionOpened(self)

    def _end_session(self, reason: str) -> None:
        self.retry.stop()
        self._cancel(self._idle_call)
        self._idle_call = None
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.connectionClosed(reason)

    def _restart(self, reason: str) -> None:
        self._end_session(reason)
        if self._running and self.transport is not None:
            self._new_session()

    def _touch(self) -> None:
        self._cancel(self._idle_call)
        self._idle_call = self.clock.callLater(self.idle_timeout, self._idle)

    def _idle(self) -> None:
        self._idle_call = None
        self.log.warn("nothing heard from gateway {peer} for {timeout:g}s; starting over",
                      peer=self.peer, timeout=self.idle_timeout)
        self._restart(f"nothing heard from the gateway for {self.idle_timeout:g}s")

    def _write_hello(self, hello: Frame) -> None:
        if self.transport is not None:
            self.transport.write(encode_datagram(hello), None)

    @staticmethod
    def _cancel(call: Optional[IDelayedCall]) -> None:
        if call is not None and call.active():
            call.cancel()


def udp_server(reactor: Any, listen: str, receiver_factory: ReceiverFactory,
               max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
               idle_timeout: float = 90.0, node_id: str = "gateway") -> UDPTransportServer:
    """
    A UDP L{ITransportServer}.
    """
    return UDPTransportServer(reactor, listen, receiver_factory, max_datagram_bytes, idle_timeout,
                              node_id)


def udp_client(reactor: Any, address: str, receiver_factory: ReceiverFactory,
               max_datagram_bytes: int = MAX_DATAGRAM_BYTES, idle_timeout: float = 90.0,
               **options: Any) -> UDPTransportClient:
    """
    A UDP L{ITransportClient}.
    """
    options.pop("jitter", None)
    initial = options.pop("initial_delay", None)
    if initial is not None:
        options.setdefault("hello_retry", initial)
    return UDPTransportClient(reactor, address, receiver_factory, max_datagram_bytes,
                              idle_timeout, **options)
