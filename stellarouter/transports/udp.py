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
 - a frame other than HELLO from an address without a peer (this gateway
   restarted) is answered "send HELLO again", within L{HelloAgainLimit};
 - the microservice resends its HELLO until it is answered (its
   L{ClientSession}, with L{HelloRetry}),
   opens a new socket when an ICMP port unreachable closed its own, and
   starts a new session (a new HELLO) when it has heard nothing from the
   gateway for C{idle_timeout}.

Malformed datagrams (shorter than 17 bytes, unknown type) are dropped and
counted, never raised; drops are logged at most once per interval, with
their count (a flood must cost a counter per datagram, not a log line).
Received datagrams are read up to 65,535 bytes
(C{listenUDP} reads only 8,192 unless told).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Optional, Tuple, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from ..common.enums import FrameType, TransportType
from ..common.errors import ProtocolError
from ..common.frames import FRAME_OVERHEAD, decode_datagram, encode_datagram
from ..common.interfaces import IFrameReceiver, IFrameSender, ITransportClient, ITransportServer
from ..common.addresses import MAX_DATAGRAM_BYTES, describe_address, parse_udp_address
from ..common.models import Frame
from ..common.payloads import HelloAck, encode_hello_ack
from .datagram import Address, HelloAgainLimit, ReplyCache, grow_receive_buffer
from .hello import Backoff, HelloRetry
from .peers import DropCounting, Peer, PeerTable
from .session import ClientSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: The default UDP port of the gateway's transport listener.
DEFAULT_PORT = 5102
_HELLO_BYTE = bytes([FrameType.HELLO])
_TYPE_BYTES = frozenset(int(t) for t in FrameType)

ReceiverFactory = Callable[[], IFrameReceiver]


class FrameDatagrams(DropCounting, DatagramProtocol):
    """
    The UDP socket's protocol, both sides: one frame per datagram,
    decoding, counting drops (L{DropCounting}: a flood of junk costs a
    counter each, and one log line per interval), sending.
    """

    log = Logger()
    dropped_noun = "datagram(s)"

    def __init__(self, clock: IReactorTime, max_datagram_bytes: int) -> None:
        DropCounting.__init__(self)
        self.clock = clock
        self.max_datagram_bytes = max_datagram_bytes

    def decode(self, data: bytes, address: Address) -> Optional[Frame]:
        """
        The frame in a received datagram, or C{None} (dropped and counted).
        """
        if len(data) > self.max_datagram_bytes:
            self.drop("oversize", address, f"({len(data)} bytes)")
            return None
        try:
            return decode_datagram(data)
        except ProtocolError as e:
            self.drop("malformed", address, str(e))
            return None

    def send(self, frame: Frame, address: Optional[Address], replies: ReplyCache) -> None:
        """
        Send C{frame} in one datagram to C{address} (C{None}: the connected
        peer), remembering it in C{replies} if it is an answer.
        """
        datagram = encode_datagram(frame)
        if len(datagram) > self.max_datagram_bytes:
            self.log.error("a {kind} frame of {size} bytes does not fit in a datagram of at most "
                           "{limit}; not sent", kind=frame.type.name, size=len(datagram),
                           limit=self.max_datagram_bytes)
            return
        replies.remember_answer(frame, datagram)
        self.write(datagram, address)

    def write(self, datagram: bytes, address: Optional[Address]) -> None:
        """
        Write one datagram; a send the kernel refuses (its buffer full:
        C{EAGAIN}, C{ENOBUFS}) loses the datagram as the network could, and
        is counted (C{send_failed}), never raised into the caller.
        """
        if self.transport is None:
            return
        try:
            self.transport.write(datagram, address)
        except OSError:
            self.drop("send_failed", address)


@implementer(IFrameSender)
class UDPPeer(Peer[Address]):
    """
    The gateway's pseudo-connection to one microservice address.
    """

    transport_type = TransportType.UDP
    peer_identity: Tuple[str, ...] = ()

    def __init__(self, server: "UDPTransportServer", address: Address,
                 receiver: IFrameReceiver) -> None:
        super().__init__(address, receiver, server.clock.seconds())
        self.server = server
        self.peer = f"{address[0]}:{address[1]}"
        self.replies = ReplyCache((FrameType.HELLO,))

    def sendFrame(self, frame: Frame) -> None:
        if not self.closed:
            self.server.protocol.send(frame, self.address, self.replies)

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

    def __init__(self, reactor: IReactorTime, listen: str, receiver_factory: ReceiverFactory,
                 max_datagram_bytes: int = MAX_DATAGRAM_BYTES, idle_timeout: float = 90.0,
                 node_id: str = "gateway") -> None:
        """
        @param listen: C{udp:PORT:interface=HOST}.
        @param idle_timeout: a peer silent this long is closed.
        @param node_id: this gateway's node id, for its "send HELLO again"
            answers.
        @param reactor: provides C{IReactorUDP} and C{IReactorTime}.
        @raise ValueError: a bad address.
        """
        self.reactor = cast(IReactorUDP, reactor)
        self.clock: IReactorTime = reactor
        self.node_id = node_id
        self.hello_again = HelloAgainLimit(reactor)
        self._hello_again_payload = encode_hello_ack(HelloAck(
            False, f"gateway {node_id} has no session for this address; send HELLO again",
            node_id, hello_again=True))
        self.interface, self.port_number = parse_udp_address(listen, server=True)
        self.receiver_factory = receiver_factory
        self.idle_timeout = idle_timeout
        self.peers: PeerTable[Address, UDPPeer] = PeerTable(reactor, idle_timeout)
        self._refused: "OrderedDict[Address, float]" = OrderedDict()
        self.protocol = _GatewayDatagrams(self, reactor, max_datagram_bytes)
        self.port: Optional[IListeningPort] = None

    def start(self) -> Deferred[str]:
        try:
            self.port = self.reactor.listenUDP(self.port_number, self.protocol,
                                               interface=self.interface, maxPacketSize=65535)
        except Exception as e:
            from twisted.internet.defer import fail
            return fail(e)
        self.peers.start()
        host = cast(IPv4Address, self.port.getHost())
        where = f"udp:{describe_address(host)}"
        buffer = grow_receive_buffer(self.port, self.receive_buffer_bytes)
        self.log.info("udp transport listening on {where} (receive buffer {buffer} bytes)",
                      where=where, buffer=buffer)
        return succeed(where)

    def stop(self) -> Deferred[None]:
        self.protocol.report_drops()
        self.peers.stop("gateway transport stopping")
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
        self.peers.sweep()

    def forget(self, peer: UDPPeer, reason: str) -> None:
        """
        Close C{peer} (its receiver is told C{reason}).
        """
        self.peers.forget(peer, reason)

    def received(self, frame: Frame, address: Address) -> None:
        """
        A decoded frame from C{address}: to its peer, or opening one if it
        is a HELLO.
        """
        peer = self.peers.get(address)
        opening = peer is None
        if peer is None:
            if frame.type is not FrameType.HELLO:
                self.protocol.drop("unknown_peer", address, frame.type.name)
                if self.hello_again.allow(address):
                    self._ask_for_hello(frame, address)
                return
            if self._refused_recently(address):
                self.protocol.drop("refused_recently", address)
                return
            peer = UDPPeer(self, address, self.receiver_factory())
            self.peers.add(peer)
            peer.receiver.connectionOpened(peer)
            if peer.closed:
                # Refused on sight (too many connections from its host).
                self._hold_off(address)
                return
        peer.last_seen = self.clock.seconds()
        if peer.replies.duplicate(frame):
            answer = peer.replies.answer_to(frame)
            self.protocol.drop("duplicate", address, frame.type.name)
            if answer is not None:
                self.protocol.write(answer, address)
            return
        try:
            peer.receiver.frameReceived(frame)
        except Exception:
            self.log.failure("receiver failed on a {kind} datagram from {peer}; closing",
                             kind=frame.type.name, peer=peer.peer)
            self.forget(peer, "internal error while handling a frame")
        if opening and peer.closed:
            self._hold_off(address)

    def unknown_sender(self, data: bytes, address: Address) -> None:
        """
        A well-formed-looking frame other than HELLO from an address with no
        peer (this gateway restarted, or forgot it): counted as dropped and,
        within L{HelloAgainLimit}'s budget, answered with a HELLO answer
        C{accepted: false, hello_again: true} under its correlation id, so a
        registered microservice sends a new HELLO at once instead of after
        its idle timeout.
        """
        self.protocol.drop("unknown_peer", address)
        if not self.hello_again.allow(address):
            return
        try:
            frame = decode_datagram(data)
        except ProtocolError:
            return
        self._ask_for_hello(frame, address)

    def _ask_for_hello(self, frame: Frame, address: Address) -> None:
        answer = Frame(FrameType.HELLO, frame.correlation_id, self._hello_again_payload)
        self.protocol.write(encode_datagram(answer), address)

    def _hold_off(self, address: Address) -> None:
        """
        A HELLO from C{address} was refused: its further HELLOs are dropped
        unread for C{refusal_hold} (a flood of junk HELLOs costs a counter
        each, not a connection, a log line and an answer).
        """
        self._refused[address] = self.clock.seconds() + self.refusal_hold
        while len(self._refused) > self.max_refused:
            self._refused.popitem(last=False)

    def _refused_recently(self, address: Address) -> bool:
        until = self._refused.get(address)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._refused[address]
        return False


class _GatewayDatagrams(FrameDatagrams):
    """
    The gateway's socket: datagrams to the L{UDPTransportServer}.
    """

    def __init__(self, server: UDPTransportServer, clock: IReactorTime, limit: int) -> None:
        super().__init__(clock, limit)
        self.server = server

    def datagramReceived(self, data: bytes, addr: Address) -> None:
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
class UDPTransportClient(FrameDatagrams):
    """
    The microservice side: a connected UDP socket to one gateway, and a
    L{ClientSession} whose receiver is replaced whenever it has to start
    over.
    """

    transport_type = TransportType.UDP
    peer_identity: Tuple[str, ...] = ()
    log = Logger()

    def __init__(self, reactor: IReactorTime, address: str, receiver_factory: ReceiverFactory,
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
        self.reactor = cast(IReactorUDP, reactor)
        self.host, self.port_number = parse_udp_address(address, server=False)
        self.peer = f"{self.host}:{self.port_number}"
        self.idle_timeout = idle_timeout
        self.hello_retry = hello_retry
        self.replies = ReplyCache((FrameType.RESPONSE,))
        self.retry = HelloRetry(reactor, self._write, hello_retry, max_delay, peer=self.peer)
        self.session = ClientSession(
            reactor, receiver_factory, self, self._write, self.retry, idle_timeout, self.peer,
            can_reopen=lambda: self._running and self.transport is not None,
            on_open=self._forget_replies)
        self._port: Optional[IListeningPort] = None
        self._reopen_call: Optional[IDelayedCall] = None
        self._running = False

    @property
    def receiver(self) -> Optional[IFrameReceiver]:
        """
        The current session's receiver, if one is open.
        """
        return self.session.receiver

    # ITransportClient

    def start(self) -> None:
        self._running = True
        self._open()

    def stop(self) -> Deferred[None]:
        self._running = False
        if self._reopen_call is not None and self._reopen_call.active():
            self._reopen_call.cancel()
        self._reopen_call = None
        self.report_drops()
        self.session.close("stopped")
        port, self._port = self._port, None
        if port is not None:
            result = port.stopListening()
            if isinstance(result, Deferred):
                return result
        return succeed(None)

    def _open(self) -> None:
        self._reopen_call = None
        if self._running:
            self._port = self.reactor.listenUDP(0, self, interface="", maxPacketSize=65535)

    # DatagramProtocol

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.connect(self.host, self.port_number)
        self.session.open()

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
        self.session.close("the gateway is unreachable (port unreachable)")
        delay = self.retry.delay
        self.log.info("gateway {peer} unreachable; saying HELLO again in {delay:g}s",
                      peer=self.peer, delay=delay)
        self._reopen_call = self.clock.callLater(delay, self._open)

    def connectionRefused(self) -> None:
        self.log.debug("gateway {peer} not answering (port unreachable)", peer=self.peer)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        frame = self.decode(data, addr)
        if frame is None or not self.session.heard(frame):
            return
        if self.replies.duplicate(frame):
            answer = self.replies.answer_to(frame)
            self.drop("duplicate", addr, frame.type.name)
            if answer is not None:
                self.write(answer, None)
            return
        try:
            self.session.deliver(frame)
        except Exception:
            self.log.failure("receiver failed on a {kind} datagram; starting over",
                             kind=frame.type.name)
            self.session.restart("internal error while handling a frame")

    # IFrameSender (the session's view of the gateway)

    def sendFrame(self, frame: Frame) -> None:
        self.session.send(frame)

    def close(self, reason: str) -> None:
        self.session.restart(reason)

    def _write(self, frame: Frame) -> None:
        self.send(frame, None, self.replies)

    def _forget_replies(self) -> None:
        self.replies = ReplyCache((FrameType.RESPONSE,))


def udp_server(reactor: IReactorTime, listen: str, receiver_factory: ReceiverFactory,
               max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
               idle_timeout: float = 90.0, node_id: str = "gateway") -> UDPTransportServer:
    """
    A UDP L{ITransportServer}.
    """
    return UDPTransportServer(reactor, listen, receiver_factory, max_datagram_bytes, idle_timeout,
                              node_id)


def udp_client(reactor: IReactorTime, address: str, receiver_factory: ReceiverFactory,
               max_datagram_bytes: int = MAX_DATAGRAM_BYTES, idle_timeout: float = 90.0,
               hello_retry: Optional[float] = None,
               **backoff: Unpack[Backoff]) -> UDPTransportClient:
    """
    A UDP L{ITransportClient}.

    @param hello_retry: the first HELLO resend delay; C{initial_delay} when
        not given (there is no connection to back off from, and no jitter).
    """
    if hello_retry is None:
        hello_retry = backoff.get("initial_delay", 1.0)
    return UDPTransportClient(reactor, address, receiver_factory, max_datagram_bytes,
                              idle_timeout, hello_retry, backoff.get("max_delay", 30.0))
