"""
REQUEST_STREAM_DATA and RESPONSE_STREAM_DATA: C{flags: u8 | chunk}, or a
credit grant (C{0x04 | amount: u32 BE}) travelling against the stream
(C{docs/router/protocol.md}, "Streaming" and "Flow control").
"""

from __future__ import annotations

from typing import Optional, Tuple

from ..errors import MalformedPayload
from ._json import LENGTH

STREAM_END = 0x01
STREAM_ABORT = 0x02
STREAM_CREDIT = 0x04

#: Bytes a stream's sender may send before the receiver grants more
#: (per request, per direction; protocol.md "Flow control").
STREAM_WINDOW = 1024 * 1024


def encode_stream_data(chunk: bytes, end: bool = False, abort: bool = False) -> bytes:
    """
    Encode a REQUEST_STREAM_DATA / RESPONSE_STREAM_DATA payload.
    """
    flags = (STREAM_END if end else 0) | (STREAM_ABORT if abort else 0)
    return bytes((flags,)) + chunk


def decode_stream_data(payload: bytes) -> Tuple[bytes, bool, bool]:
    """
    Decode a stream-data payload.

    @return: C{(chunk, end, abort)}.
    @raise MalformedPayload: empty payload, unknown flag bits, or a credit
        frame (see L{stream_credit}).
    """
    if not payload:
        raise MalformedPayload("stream data payload has no flags byte")
    flags = payload[0]
    if flags & ~(STREAM_END | STREAM_ABORT):
        raise MalformedPayload(f"stream data flags {flags:#04x} has unknown bits")
    return payload[1:], bool(flags & STREAM_END), bool(flags & STREAM_ABORT)


def encode_credit(amount: int) -> bytes:
    """
    Encode a credit grant: C{flags = 0x04 | amount: u32 BE}.  It travels
    against the stream (a RESPONSE stream's credit in REQUEST_STREAM_DATA
    frames, a REQUEST stream's in RESPONSE_STREAM_DATA frames).
    """
    return bytes((STREAM_CREDIT,)) + LENGTH.pack(amount)


def stream_credit(payload: bytes) -> Optional[int]:
    """
    The amount of a credit grant, or C{None} if C{payload} is stream data.

    @raise MalformedPayload: a credit frame of the wrong size or amount 0.
    """
    if not payload or payload[0] != STREAM_CREDIT:
        return None
    if len(payload) != 5:
        raise MalformedPayload("a credit frame is flags 0x04 and a u32 amount")
    (amount,) = LENGTH.unpack_from(payload, 1)
    if amount == 0:
        raise MalformedPayload("a credit frame grants at least one byte")
    return int(amount)
