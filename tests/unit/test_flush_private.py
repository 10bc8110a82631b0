"""
Pins for the private names of C{twisted.internet.tcp.Connection} that
C{stellarouter/transports/flush.py} reads (L{PRIVATE_NAMES}): a Twisted
release that renames or drops one fails here, by name.  The connection is a
real one, over a socket pair whose other end does not read.
"""

import socket
from typing import Tuple

from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.transports.flush import PRIVATE_NAMES, discard_unsent, unsent_bytes


def stalled_connection(case: SynchronousTestCase) -> Tuple[Connection, socket.socket]:
    """
    A TCP transport over one end of a socket pair; the other end never
    reads.  The reactor is a L{MemoryReactor}: writes are done by calling
    C{doWrite}, as the reactor would.
    """
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    case.addCleanup(ours.close)
    case.addCleanup(theirs.close)
    connection = Connection(ours, Protocol(), MemoryReactor())  # type: ignore[arg-type]
    connection.connected = True
    return connection, theirs


def fill(connection: Connection, size: int) -> int:
    """
    Write C{size} bytes and let the socket take what it will.

    @return: the bytes the socket took.
    """
    connection.write(b"x" * size)
    before = unsent_bytes(connection)
    connection.doWrite()
    connection.doWrite()
    return before - unsent_bytes(connection)


class FlushPrivateNameTests(SynchronousTestCase):
    def test_names_exist(self) -> None:
        """
        Every private name flush.py relies on exists on a TCP connection.
        """
        connection, _ = stalled_connection(self)
        missing = [name for name in PRIVATE_NAMES if not hasattr(connection, name)]
        self.assertEqual(missing, [], f"twisted.internet.tcp.Connection no longer has "
                                      f"{missing}: see stellarouter/transports/flush.py")

    def test_unsent_bytes_counts_what_the_socket_did_not_take(self) -> None:
        """
        L{unsent_bytes} is what was written minus what the socket took,
        through both of Twisted's buffers; L{discard_unsent} drops it once
        the connection is gone.
        """
        connection, _ = stalled_connection(self)
        size = 8 * 1024 * 1024
        taken = fill(connection, size)
        self.assertGreater(taken, 0)
        self.assertEqual(unsent_bytes(connection), size - taken)
        connection.write(b"y" * 100)
        self.assertEqual(unsent_bytes(connection), size - taken + 100)
        connection.connected = False
        self.assertEqual(discard_unsent(connection), size - taken + 100)
        self.assertEqual(unsent_bytes(connection), 0)

    def test_other_transports_have_none(self) -> None:
        """
        Anything but a TCP connection counts as having nothing unsent.
        """
        self.assertEqual(unsent_bytes(object()), 0)
