"""
The sans-IO frame codec for stream transports (spec section 5.2).

Wire layout of one frame::

    length: u32 big-endian | type: u8 | correlation_id: 16 bytes | data

C{length} counts type + id + data, so it is at least 17.  The id bytes use
the .NET GUID byte order (C{UUID.bytes_le}); a frame's id is a
L{CorrelationId}, which is those bytes.  The decoder checks the length
prefix against C{max_frame_bytes} before it buffers the frame.
"""

from __future__ import annotations

from struct import Struct
from typing import Iterator, List

from .enums import FrameType
from .errors import FrameTooLarge, FrameTooShort, ProtocolError, UnknownFrameType
from .ids import CorrelationId
from .models import Frame

#: Bytes of type + correlation id: the smallest legal length value.
FRAME_OVERHEAD = 17

#: Bytes of the length prefix.
PREFIX_SIZE = 4

#: The default cap on a frame's length value (type + id + data).
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

_PREFIX = Struct(">IB")
_LENGTH = Struct(">I")
_TYPES = {int(t): t for t in FrameType}


def encode_frame(frame: Frame) -> bytes:
    """
    Encode one frame for a stream transport.

    @param frame: the frame to encode.
    @return: the frame's bytes, length prefix included.
    @raise ValueError: the correlation id is not 16 bytes (it would shift
        every later frame of the stream).
    """
    payload = frame.payload
    if len(frame.correlation_id) != 16:
        raise ValueError(f"a correlation id is 16 bytes, not {len(frame.correlation_id)}")
    return (
        _PREFIX.pack(FRAME_OVERHEAD + len(payload), frame.type)
        + frame.correlation_id
        + payload
    )


def encode_datagram(frame: Frame) -> bytes:
    """
    Encode one frame without a length prefix (one datagram = one frame).

    @param frame: the frame to encode.
    @return: C{type | id | data}.
    @raise ValueError: the correlation id is not 16 bytes.
    """
    if len(frame.correlation_id) != 16:
        raise ValueError(f"a correlation id is 16 bytes, not {len(frame.correlation_id)}")
    return bytes((frame.type,)) + frame.correlation_id + frame.payload


def decode_datagram(data: bytes) -> Frame:
    """
    Decode one frame that fills a whole datagram.

    @param data: C{type | id | data}.
    @return: the frame.
    @raise FrameTooShort: if fewer than 17 bytes.
    @raise UnknownFrameType: if the type byte is not a L{FrameType}.
    """
    if len(data) < FRAME_OVERHEAD:
        raise FrameTooShort(f"datagram of {len(data)} bytes is shorter than 17")
    kind = _TYPES.get(data[0])
    if kind is None:
        raise UnknownFrameType(f"unknown frame type {data[0]}")
    return Frame(kind, CorrelationId(data[1:17]), bytes(data[17:]))


_new_tuple = tuple.__new__


def stream_data_step(max_frame_bytes: int) -> int:
    """
    The most body bytes one stream-data frame of at most C{max_frame_bytes}
    carries (the frame's type and id, and the payload's flags byte, take the
    rest).
    """
    return max_frame_bytes - FRAME_OVERHEAD - 1


def stream_data_frames(kind: FrameType, cid: CorrelationId, data: bytes,
                       max_frame_bytes: int, end: bool = True) -> Iterator[Frame]:
    """
    Split C{data} into C{kind} stream-data frames (REQUEST_STREAM_DATA or
    RESPONSE_STREAM_DATA) of at most C{max_frame_bytes} each: the one
    place a body is cut into frames.  Empty C{data} is one empty frame (so
    an end is always sent).

    @param end: whether the last frame ends the stream.
    """
    from .payloads import encode_stream_data
    step = stream_data_step(max_frame_bytes)
    last = max(len(data) - 1, 0) // step * step
    for offset in range(0, last + 1, step):
        yield Frame(kind, cid, encode_stream_data(data[offset:offset + step],
                                                  end=end and offset == last))


class FrameDecoder:
    """
    Turns a byte stream into frames.  Feed it whatever arrived; it returns
    the frames completed so far and keeps the rest.

    After it has raised a L{ProtocolError} the stream is out of sync, so
    every later L{feed} raises the same error.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        """
        @param max_frame_bytes: the largest length value accepted.
        """
        if max_frame_bytes < FRAME_OVERHEAD:
            raise ValueError("max_frame_bytes must be at least 17")
        self.max_frame_bytes = max_frame_bytes
        # Bytes received and not yet decoded, kept as a list of chunks so a
        # large frame arriving in many reads is joined once, not per read.
        self._chunks: List[bytes] = []
        self._size = 0
        # How many buffered bytes the next frame needs (0: unknown yet).
        self._needed = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """
        Bytes received but not yet part of a complete frame.
        """
        return self._size

    def feed(self, data: bytes) -> List[Frame]:
        """
        Add received bytes.

        @param data: the bytes, in any split.
        @return: the frames completed by them, in order.
        @raise FrameTooShort: a length value below 17.
        @raise FrameTooLarge: a length value above C{max_frame_bytes}; raised
            as soon as the prefix is seen, before the frame is buffered.
        @raise UnknownFrameType: an unknown type byte.
        """
        if self._error is not None:
            raise self._error
        if self._needed and self._size + len(data) < self._needed:
            self._chunks.append(data)
            self._size += len(data)
            return []
        if self._chunks:
            self._chunks.append(data)
            buffer = b"".join(self._chunks)
            self._chunks = []
        else:
            buffer = data
        frames: List[Frame] = []
        offset = 0
        end = len(buffer)
        unpack = _LENGTH.unpack_from
        needed = 0
        while end - offset >= PREFIX_SIZE:
            (length,) = unpack(buffer, offset)
            if length < FRAME_OVERHEAD:
                self._fail(FrameTooShort(f"frame length {length} is below 17"))
            if length > self.max_frame_bytes:
                self._fail(
                    FrameTooLarge(
                        f"frame length {length} exceeds max_frame_bytes "
                        f"{self.max_frame_bytes}"
                    )
                )
            start = offset + PREFIX_SIZE
            if start == end:
                break
            kind = _TYPES.get(buffer[start])
            if kind is None:
                self._fail(UnknownFrameType(f"unknown frame type {buffer[start]}"))
            stop = start + length
            if stop > end:
                needed = PREFIX_SIZE + length
                break
            # tuple.__new__ directly: what Frame(...) does, without the
            # named tuple's Python-level __new__ (one call less per frame).
            frames.append(_new_tuple(Frame, (
                kind, CorrelationId(buffer[start + 1 : start + 17]),
                bytes(buffer[start + 17 : stop]))))
            offset = stop
        if offset < end:
            rest = buffer[offset:] if offset else buffer
            self._chunks = [rest]
            self._size = len(rest)
        else:
            self._size = 0
        self._needed = needed
        return frames

    def _fail(self, error: ProtocolError) -> None:
        """
        Remember C{error} for every later call, drop the buffer, and raise it.
        """
        self._error = error
        self._chunks = []
        self._size = 0
        raise error


__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FRAME_OVERHEAD",
    "FrameDecoder",
    "ProtocolError",
    "decode_datagram",
    "encode_datagram",
    "encode_frame",
    "stream_data_frames",
    "stream_data_step",
]
