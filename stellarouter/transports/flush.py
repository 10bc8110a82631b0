"""
Sending what a TCP transport has buffered now, instead of on the reactor's
next turn.

A Twisted transport's C{write} only buffers: the bytes go out when the
reactor next finds the socket writable, one more pass of the event loop
(an C{epoll_wait}, the event's dispatch and its logging context) after the
code that wrote them returned.  At the end of a piece of work whose output
is complete (an HTTP response finished, a batch of frames answered), that
pass only adds latency: L{flush} does the write that pass would do, now, and
L{write_now} offers new bytes to the socket before buffering them;
L{unsent_bytes} says how much a connection still holds to send and
L{discard_unsent} drops it once the connection is gone.

This module is the only one of the transports that reads Twisted's private
names (those of C{twisted.internet.tcp.Connection}'s write buffer), listed in
L{PRIVATE_NAMES} and pinned by C{tests/unit/test_flush_private.py}.
"""

from __future__ import annotations

from twisted.internet.tcp import Connection

#: The private names of C{twisted.internet.tcp.Connection} used here.
PRIVATE_NAMES = ("_tempDataBuffer", "_tempDataLen", "_writeDisconnecting")


def flush(transport: object) -> None:
    """
    Write what C{transport} has buffered now, if it is a TCP connection
    with buffered bytes and nothing else to do first.

    This calls the transport's own C{doWrite}, the call the reactor makes
    when the socket is writable, so buffering and partial writes behave as
    usual: what the socket does not take stays buffered, and the transport
    stays registered for writing until it is all out.  Left alone for the
    reactor: a transport that is closing (C{doWrite}'s answer then closes
    the connection, which only the reactor acts on), one whose producer is
    paused (resuming it belongs to the reactor's turn), and any other kind
    of transport (TLS, in-memory, test transports).  A write that fails
    leaves the bytes buffered and the transport registered, so the
    reactor's own C{doWrite} meets the same error and closes the connection.
    """
    if (isinstance(transport, Connection) and _open(transport)
            and (transport._tempDataLen or transport.dataBuffer)):
        transport.doWrite()


def _open(transport: Connection) -> bool:
    """
    Whether writing now is ours to do: the connection is up, not closing
    (half or whole), and its producer is not paused.  Everything else is
    the reactor's part.
    """
    return bool(transport.connected and not transport.disconnecting
                and not transport._writeDisconnecting and not transport.producerPaused)

def write_now(transport: object, data: bytes) -> None:
    """
    C{transport.write(data)}, except that when C{transport} is a TCP
    connection with nothing buffered, the socket is offered C{data} at once
    (the transport's own C{writeSomeData}): what it takes is sent, only the
    rest is buffered.  This also spares the two C{epoll_ctl} calls of
    registering the socket for writing and unregistering it.  The same cases
    as L{flush} are left to the plain C{write}: a closing connection, a
    paused producer, other transports; and a failed send (the bytes are
    buffered, and the reactor's own write meets the error and closes).
    """
    if (isinstance(transport, Connection) and not transport._tempDataLen
            and not transport.dataBuffer and _open(transport)):
        sent = transport.writeSomeData(data)
        if type(sent) is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)  # type: ignore[attr-defined]


def unsent_bytes(transport: object) -> int:
    """
    The bytes a TCP connection has buffered and not yet handed to its
    socket (0 for anything else: TLS, in-memory and test transports).
    """
    if not isinstance(transport, Connection):
        return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def discard_unsent(transport: object) -> int:
    """
    Drop what a TCP connection that is gone still holds to send.

    A Twisted TCP transport keeps its write buffer after the connection is
    lost, and the transport lives as long as its protocol does: an HTTP
    channel is freed by the garbage collector (its requests and producers
    form reference cycles), which may not run for a long time on an idle
    process.  A client that left without reading its download would keep up
    to a window of it in memory until then (issue 17 item 6: the gateway's
    RSS ratcheted from 60 to 536 MB over nine rounds of stalled readers).

    @return: the bytes dropped (0 for anything but a closed TCP connection).
    """
    if not isinstance(transport, Connection) or transport.connected:
        return 0
    dropped = unsent_bytes(transport)
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return dropped


__all__ = ["PRIVATE_NAMES", "discard_unsent", "flush", "unsent_bytes", "write_now"]
