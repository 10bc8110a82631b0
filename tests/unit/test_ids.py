"""
Tests for correlation ids: L{CorrelationId} is the 16 wire bytes, reads and
writes the same GUID text as C{uuid.UUID}, and new ids are random version 4
ids.
"""

from uuid import RFC_4122, UUID

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.ids import CorrelationId, new_correlation_id
from stellarouter.testing.strategies import correlation_ids

TEXT = "00112233-4455-6677-8899-aabbccddeeff"
#: C{TEXT} in the .NET GUID byte order: the first three fields reversed.
WIRE = bytes.fromhex("33221100554477668899aabbccddeeff")


class TextTests(SynchronousTestCase):
    def test_known_id(self) -> None:
        """
        The GUID text reads the first three fields of the wire bytes
        little-endian and the last 8 bytes as written.
        """
        self.assertEqual(str(CorrelationId(WIRE)), TEXT)
        self.assertEqual(CorrelationId.parse(TEXT), WIRE)

    @given(correlation_ids())
    def test_str_is_the_uuid_text(self, cid: CorrelationId) -> None:
        """
        C{str} of any id is the text of the UUID with those C{bytes_le}.
        """
        self.assertEqual(str(cid), str(UUID(bytes_le=cid)))

    @given(correlation_ids())
    def test_parse_round_trip(self, cid: CorrelationId) -> None:
        """
        Parsing an id's text, in either case, gives the same id back.
        """
        self.assertEqual(CorrelationId.parse(str(cid)), cid)
        self.assertEqual(CorrelationId.parse(str(cid).upper()), cid)
        self.assertIsInstance(CorrelationId.parse(str(cid)), CorrelationId)

    def test_parse_other_uuid_forms(self) -> None:
        """
        The other spellings C{uuid.UUID} reads (no dashes, braces, URN) give
        the same id.
        """
        for text in (TEXT.replace("-", ""), "{" + TEXT + "}", "urn:uuid:" + TEXT):
            self.assertEqual(CorrelationId.parse(text), WIRE, text)

    def test_parse_refuses_bad_text(self) -> None:
        """
        Text that is not a GUID raises C{ValueError}.
        """
        for text in ("", "None", TEXT[:-1], TEXT + "0", TEXT.replace("a", "g"),
                     "0" * 31, "0" * 33):
            self.assertRaises(ValueError, CorrelationId.parse, text)

    def test_repr(self) -> None:
        """
        The representation names the type and shows the GUID text.
        """
        self.assertEqual(repr(CorrelationId(WIRE)), f"CorrelationId('{TEXT}')")

    def test_log_format(self) -> None:
        """
        PEP 3101 formatting (what log templates use) shows the GUID text.
        """
        self.assertEqual("request {cid}".format(cid=CorrelationId(WIRE)), f"request {TEXT}")
        self.assertEqual(f"{CorrelationId(WIRE)}", TEXT)


class UUIDTests(SynchronousTestCase):
    @given(st.uuids())
    def test_from_uuid(self, value: UUID) -> None:
        """
        The id of a UUID is its C{bytes_le}, and its L{CorrelationId.uuid} is
        that UUID again.
        """
        cid = CorrelationId.from_uuid(value)
        self.assertIsInstance(cid, CorrelationId)
        self.assertEqual(cid, value.bytes_le)
        self.assertEqual(cid.uuid, value)
        self.assertEqual(str(cid), str(value))


class BytesTests(SynchronousTestCase):
    @given(correlation_ids())
    def test_is_plain_bytes(self, cid: CorrelationId) -> None:
        """
        Equality and hashing are C{bytes}': an id equals, hashes like and
        finds in a dict the plain bytes it was made from, and differs from
        an id with one bit changed.
        """
        raw = bytes(cid)
        self.assertIs(type(raw), bytes)
        self.assertEqual(cid, raw)
        self.assertEqual(hash(cid), hash(raw))
        self.assertEqual({raw: 1}[cid], 1)
        self.assertEqual({cid: 1}[CorrelationId(raw)], 1)
        self.assertNotEqual(cid, CorrelationId(raw[:15] + bytes((raw[15] ^ 1,))))

    def test_bytes_comparison_not_overridden(self) -> None:
        """
        C{__eq__} and C{__hash__} are C{bytes}' own (C code), not Python
        overrides.
        """
        self.assertIs(CorrelationId.__eq__, bytes.__eq__)
        self.assertIs(CorrelationId.__hash__, bytes.__hash__)

    def test_no_instance_dict(self) -> None:
        """
        An id has no per-instance C{__dict__}.
        """
        self.assertFalse(hasattr(CorrelationId(WIRE), "__dict__"))

    def test_concatenates_as_bytes(self) -> None:
        """
        An id joins other bytes as its 16 wire bytes, as the encoders use it.
        """
        self.assertEqual(b"\x01" + CorrelationId(WIRE) + b"{}", b"\x01" + WIRE + b"{}")


class NewIdTests(SynchronousTestCase):
    def test_version_4(self) -> None:
        """
        New ids, across several refills of the random pool, are 16-byte
        L{CorrelationId}s with the version 4 and RFC 4122 variant bits of a
        random UUID.
        """
        kept_random = set(), set()
        for _ in range(1000):
            cid = new_correlation_id()
            self.assertIsInstance(cid, CorrelationId)
            self.assertEqual(len(cid), 16)
            self.assertEqual(cid.uuid.version, 4)
            self.assertEqual(cid.uuid.variant, RFC_4122)
            self.assertEqual(str(cid)[14], "4")
            kept_random[0].add(cid[7] & 0x0F)
            kept_random[1].add(cid[8] & 0x3F)
        # Only the version and variant bits are fixed: the other bits of
        # those two bytes stay random (all 16 and nearly all 64 values seen).
        self.assertEqual(len(kept_random[0]), 16)
        self.assertGreater(len(kept_random[1]), 50)

    def test_distinct(self) -> None:
        """
        New ids, across several refills of the random pool, are all
        different.
        """
        ids = [new_correlation_id() for _ in range(2000)]
        self.assertEqual(len(set(ids)), len(ids))
