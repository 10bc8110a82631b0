"""
Correlation ids: unique and unpredictable per request, cheap to make on the
hot path.

A correlation id is a L{CorrelationId}: a C{bytes} of exactly the 16 bytes
the frames carry, in the .NET GUID byte order (what C{UUID.bytes_le}
gives).  Hashing and comparing it are those of C{bytes}, in C, and decoding
a frame builds one from a slice without any Python-level code; a
C{uuid.UUID} costs about a microsecond to build and hashes in Python, which
added up to about 5 us per proxied request.  Its text (C{str}) is the
canonical GUID text, the same as C{str(UUID(bytes_le=...))}.

A new id is random (version 4 layout) made from a pool of C{os.urandom}
bytes refilled 4 KiB at a time (version and variant bits set for the whole
pool at once), so the system call is paid once per 256 ids
instead of once per id.  Ids must not be guessable: over UDP the
correlation id is what ties a RESPONSE to its request.
"""

from __future__ import annotations

import os
from uuid import UUID

_POOL = 4096
_pool = b""
_offset = _POOL


class CorrelationId(bytes):
    """
    A correlation id: the 16 wire bytes of a GUID in the .NET byte order
    (the first three fields little-endian, the last 8 bytes as written; the
    layout of C{UUID.bytes_le}).

    Equality and hashing are those of C{bytes}, so an id is a cheap dict
    key and equals the plain C{bytes} it was made from.  C{CorrelationId(b)}
    does not check that C{b} has 16 bytes (it is the C{bytes} constructor,
    kept cheap for the frame decoder, whose length checks guarantee it);
    use L{parse} or L{from_uuid} for ids from elsewhere.
    """

    __slots__ = ()

    @classmethod
    def from_uuid(cls, value: UUID) -> CorrelationId:
        """
        The id of a UUID.

        @param value: any UUID.
        @return: the id whose L{uuid} is C{value}.
        """
        return cls(value.bytes_le)

    @classmethod
    def parse(cls, text: str) -> CorrelationId:
        """
        The id written as GUID text.

        @param text: the canonical form (C{"00112233-4455-6677-8899-aabbccddeeff"},
            either case), or any other form C{uuid.UUID(text)} accepts (no
            dashes, braces, C{urn:uuid:}).  Not on the hot path: only the
            RabbitMQ transport, which carries the id as text, parses ids.
        @return: the id whose C{str} is C{text} in canonical form.
        @raise ValueError: if C{text} is not a GUID.
        """
        return cls(UUID(text).bytes_le)

    @property
    def uuid(self) -> UUID:
        """
        This id as a C{uuid.UUID}.
        """
        return UUID(bytes_le=self)

    def __str__(self) -> str:
        """
        @return: the canonical GUID text, lower case, e.g.
            C{"00112233-4455-6677-8899-aabbccddeeff"}.
        """
        return (f"{self[3::-1].hex()}-{self[5:3:-1].hex()}-{self[7:5:-1].hex()}-"
                f"{self[8:10].hex()}-{self[10:].hex()}")

    def __repr__(self) -> str:
        return f"CorrelationId('{self}')"


# In the bytes_le order the version is the high nibble of byte 7 (the last
# byte of the little-endian third field) and the variant the top two bits of
# byte 8: these tables set them, for a whole pool at once with translate().
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))


def _fresh_pool() -> bytes:
    """
    C{_POOL} random bytes: C{_POOL // 16} ids with their version and variant
    bits already set.
    """
    raw = bytearray(os.urandom(_POOL))
    raw[7::16] = raw[7::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    return bytes(raw)


def new_correlation_id() -> CorrelationId:
    """
    A fresh random correlation id, with the version 4 and RFC 4122 variant
    bits of a random UUID set (so its L{CorrelationId.uuid} has
    C{version == 4}).
    """
    global _pool, _offset
    offset = _offset
    if offset >= len(_pool):
        _pool, offset = _fresh_pool(), 0
    _offset = offset + 16
    return CorrelationId(_pool[offset:offset + 16])


__all__ = ["CorrelationId", "new_correlation_id"]
