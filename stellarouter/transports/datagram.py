"""
The parts of the UDP transport that hold no socket: the memory of frames
received and answers sent (L{ReplyCache}, which turns a lost answer into a
repeat instead of a second run), the budget of "send HELLO again" answers to
unknown addresses (L{HelloAgainLimit}), and growing a socket's receive
buffer.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from typing import Optional, Tuple

from twisted.internet.interfaces import IReactorTime

from ..common.enums import FrameType
from ..common.ids import CorrelationId
from ..common.models import Frame

Address = Tuple[str, int]
#: What a received frame answers, by the received frame's type.
_REPLY_TYPE = {FrameType.HELLO: FrameType.HELLO, FrameType.REQUEST: FrameType.RESPONSE}


class ReplyCache:
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
        """
        Whether C{frame} (its type and correlation id) was received before
        (it is remembered if not).
        """
        key = (frame.type, frame.correlation_id)
        if key in self._received:
            return True
        self._received[key] = None
        if len(self._received) > self.size:
            self._received.popitem(last=False)
        return False

    def remember_answer(self, frame: Frame, datagram: bytes) -> None:
        """
        Keep C{datagram}, the encoding of C{frame} this side sent, when it
        is an answer worth repeating.
        """
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
        """
        The answer this side sent to an earlier copy of C{frame}, if kept.
        """
        reply = _REPLY_TYPE.get(frame.type)
        if reply is None:
            return None
        return self._answers.get((reply, frame.correlation_id))


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
        self._last: "OrderedDict[Address, float]" = OrderedDict()
        self._window_end = 0.0
        self._in_window = 0

    def allow(self, address: Address) -> bool:
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


def grow_receive_buffer(port: object, size: int) -> int:
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


__all__ = ["HelloAgainLimit", "ReplyCache", "grow_receive_buffer"]
