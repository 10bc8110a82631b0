"""
Tests for the sans-IO frame codec.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import FrameType
from stellarouter.common.errors import (
    FrameTooLarge,
    FrameTooShort,
    ProtocolError,
    UnknownFrameType,
)
from stellarouter.common.frames import (
    FrameDecoder,
    decode_datagram,
    encode_datagram,
    encode_frame,
)
from stellarouter.common.ids import CorrelationId, new_correlation_id
from stellarouter.common.models import Frame
from stellarouter.testing.strategies import frames, splits

CID = CorrelationId.parse("00112233-4455-6677-8899-aabbccddeeff")


class EncodeTests(SynchronousTestCase):
    def test_layout(self) -> None:
        """
        A frame is length (u32 BE, counting type + id + data), type, the id in
        .NET GUID byte order, then the data.
        """
        data = encode_frame(Frame(FrameType.CANCEL, CID, b"xy"))
        self.assertEqual(data[:4], (19).to_bytes(4, "big"))
        self.assertEqual(data[4], 8)
        self.assertEqual(data[5:21], bytes.fromhex("33221100554477668899aabbccddeeff"))
        self.assertEqual(data[21:], b"xy")

    def test_datagram_layout(self) -> None:
        """
        A datagram frame has no length prefix.
        """
        data = encode_datagram(Frame(FrameType.HELLO, CID, b"{}"))
        self.assertEqual(data, b"\x01" + bytes.fromhex("33221100554477668899aabbccddeeff") + b"{}")
        self.assertEqual(decode_datagram(data), Frame(FrameType.HELLO, CID, b"{}"))

    def test_wrong_length_id_refused(self) -> None:
        """
        A correlation id that is not 16 bytes (the GUID text, say) is refused
        when encoding, instead of shifting every later frame of the stream.
        """
        for cid in (b"", b"x" * 15, b"x" * 17, str(new_correlation_id()).encode()):
            frame = Frame(FrameType.CANCEL, cid, b"{}")  # type: ignore[arg-type]
            self.assertRaises(ValueError, encode_frame, frame)
            self.assertRaises(ValueError, encode_datagram, frame)

    def test_decoded_id_is_a_correlation_id(self) -> None:
        """
        Both decoders give the frame's id as a L{CorrelationId} of the 16
        wire bytes, which prints as the GUID text.
        """
        frame = Frame(FrameType.REQUEST, CID, b"x")
        (streamed,) = FrameDecoder().feed(encode_frame(frame))
        for decoded in (streamed, decode_datagram(encode_datagram(frame))):
            self.assertIs(type(decoded.correlation_id), CorrelationId)
            self.assertEqual(decoded.correlation_id, CID)
            self.assertEqual(str(decoded.correlation_id), "00112233-4455-6677-8899-aabbccddeeff")


class DecoderTests(SynchronousTestCase):
    @given(st.lists(frames(), max_size=8))
    def test_round_trip_all_at_once(self, sent: list) -> None:
        """
        Frames encoded back to back decode to the same frames in one feed.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"".join(map(encode_frame, sent))), sent)
        self.assertEqual(decoder.buffered, 0)

    @given(st.lists(frames(max_payload=64), min_size=1, max_size=4))
    def test_byte_at_a_time(self, sent: list) -> None:
        """
        Fed one byte at a time, the decoder yields each frame exactly when its
        last byte arrives.
        """
        decoder = FrameDecoder()
        received = []
        for byte in b"".join(map(encode_frame, sent)):
            received.extend(decoder.feed(bytes([byte])))
        self.assertEqual(received, sent)

    @given(st.data())
    def test_random_splits(self, data: st.DataObject) -> None:
        """
        Any split of the byte stream gives the same frames.
        """
        sent = data.draw(st.lists(frames(max_payload=300), max_size=6))
        stream = b"".join(map(encode_frame, sent))
        cuts = data.draw(splits(len(stream)))
        decoder = FrameDecoder()
        received = []
        start = 0
        for cut in cuts + [len(stream)]:
            received.extend(decoder.feed(stream[start:cut]))
            start = cut
        self.assertEqual(received, sent)

    def test_oversize_rejected_from_prefix(self) -> None:
        """
        A length over the cap is rejected as soon as the 4 prefix bytes
        arrive, before any of the frame is buffered.
        """
        decoder = FrameDecoder(max_frame_bytes=100)
        self.assertEqual(decoder.feed(b"\x00\x00"), [])
        error = self.assertRaises(FrameTooLarge, decoder.feed, b"\x00\x65")
        self.assertIn("101 exceeds max_frame_bytes 100", str(error))
        self.assertEqual(decoder.buffered, 0)

    def test_exact_cap_accepted(self) -> None:
        """
        A frame whose length equals the cap is accepted.
        """
        frame = Frame(FrameType.REQUEST, new_correlation_id(), b"a" * 83)
        self.assertEqual(FrameDecoder(max_frame_bytes=100).feed(encode_frame(frame)), [frame])

    def test_too_short(self) -> None:
        """
        A length below 17 is a typed error.
        """
        self.assertRaises(FrameTooShort, FrameDecoder().feed, b"\x00\x00\x00\x10" + b"\x01" * 16)

    def test_short_prefix_waits(self) -> None:
        """
        Fewer than 4 bytes is not an error: the decoder waits for more.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"\x00\x00\x00"), [])
        self.assertEqual(decoder.buffered, 3)

    def test_truncated_frame_waits(self) -> None:
        """
        A frame whose data has not all arrived yields nothing yet.
        """
        frame = encode_frame(Frame(FrameType.RESPONSE, CID, b"hello"))
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(frame[:-1]), [])
        self.assertEqual(decoder.feed(frame[-1:]), [Frame(FrameType.RESPONSE, CID, b"hello")])

    def test_unknown_type_detected_early(self) -> None:
        """
        An unknown type byte is an error as soon as it arrives.
        """
        decoder = FrameDecoder()
        error = self.assertRaises(UnknownFrameType, decoder.feed, b"\x00\x00\x00\x20\x09")
        self.assertIn("unknown frame type 9", str(error))

    def test_errors_are_sticky(self) -> None:
        """
        After an error the stream is out of sync; every later feed raises.
        """
        decoder = FrameDecoder()
        self.assertRaises(ProtocolError, decoder.feed, b"\x00\x00\x00\x00")
        self.assertRaises(ProtocolError, decoder.feed, encode_frame(Frame(FrameType.HELLO, CID, b"")))

    @given(st.binary(max_size=200))
    def test_garbage_never_raises_untyped(self, junk: bytes) -> None:
        """
        Arbitrary bytes give frames or a ProtocolError, never another
        exception.
        """
        try:
            FrameDecoder(max_frame_bytes=1024).feed(junk)
        except ProtocolError:
            pass

    def test_datagram_errors(self) -> None:
        """
        Short datagrams and unknown types are typed errors.
        """
        self.assertRaises(FrameTooShort, decode_datagram, b"\x01" * 16)
        self.assertRaises(UnknownFrameType, decode_datagram, b"\x00" * 17)

    def test_cap_minimum(self) -> None:
        """
        A cap that cannot hold a frame header is refused.
        """
        self.assertRaises(ValueError, FrameDecoder, 16)


class StreamDataFramesTests(SynchronousTestCase):
    """
    L{stream_data_frames}: the one place a body is cut into stream-data
    frames (the gateway's streamed REQUEST bodies, the SDK's large
    responses).
    """

    def test_split_to_fit(self) -> None:
        """
        Each frame fits C{max_frame_bytes}; the pieces put together are the
        body; only the last one ends the stream.
        """
        from stellarouter.common.frames import encode_frame, stream_data_frames
        from stellarouter.common.payloads import decode_stream_data
        cid = new_correlation_id()
        limit = 17 + 1 + 10
        for size in (0, 1, 9, 10, 11, 20, 21, 95):
            body = bytes(range(size))
            frames = list(stream_data_frames(FrameType.RESPONSE_STREAM_DATA, cid, body, limit))
            self.assertEqual(len(frames), max(1, -(-size // 10)))
            pieces = [decode_stream_data(f.payload) for f in frames]
            self.assertEqual(b"".join(chunk for chunk, _, _ in pieces), body)
            self.assertEqual([end for _, end, _ in pieces], [False] * (len(frames) - 1) + [True])
            self.assertTrue(all(len(encode_frame(f)) - 4 <= limit for f in frames))
            self.assertTrue(all(f.type is FrameType.RESPONSE_STREAM_DATA
                                and f.correlation_id == cid for f in frames))

    def test_without_end(self) -> None:
        """
        C{end=False}: no frame ends the stream (more of the body follows).
        """
        from stellarouter.common.frames import stream_data_frames
        from stellarouter.common.payloads import decode_stream_data
        frames = stream_data_frames(FrameType.REQUEST_STREAM_DATA, new_correlation_id(),
                                    b"x" * 25, 28, end=False)
        self.assertEqual([decode_stream_data(f.payload)[1] for f in frames], [False] * 3)
