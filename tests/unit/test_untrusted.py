"""
Tests for L{stellarouter.common.untrusted.shown}, the rule for showing
client- or peer-chosen text in a log line, a problem detail or a table.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.untrusted import MAX_SHOWN_CHARS, quoted, shown, shown_if_needed


class ShownTests(SynchronousTestCase):
    def test_escapes(self) -> None:
        """
        Newlines, ESC, U+2028, bidirectional overrides, NUL and the
        backslash are escaped; printable text, non-ASCII letters included,
        is kept as it is.
        """
        self.assertEqual(shown("a\nb\r\tc"), "a\\nb\\r\\tc")
        self.assertEqual(shown("\x1b[2J\x00"), "\\x1b[2J\\x00")
        self.assertEqual(shown("x\u2028y\u202ez"), "x\\u2028y\\u202ez")
        self.assertEqual(shown("a\\nb"), "a\\\\nb")
        self.assertEqual(shown("billing-1 é ü"), "billing-1 é ü")
        self.assertEqual(shown(ValueError("bad\nthing")), "bad\\nthing")

    def test_bounded(self) -> None:
        """
        Text over the limit is cut and says how much was left out.
        """
        self.assertEqual(shown("x" * 10, 4), "xxxx...(6 more)")
        self.assertEqual(shown("x" * 4, 4), "xxxx")
        self.assertEqual(len(shown("y" * 100_000)), MAX_SHOWN_CHARS + len("...(99800 more)"))

    def test_quoted(self) -> None:
        """
        L{quoted} is a bounded C{repr}: strings in single quotes, escaped
        and cut at 64 characters; other values by their C{repr}.
        """
        self.assertEqual(quoted("a\nb"), "'a\\nb'")
        self.assertEqual(quoted("x" * 100), "'" + "x" * 64 + "...(36 more)'")
        self.assertEqual(quoted(None), "None")
        self.assertEqual(quoted(["a"]), "['a']")

    def test_shown_if_needed(self) -> None:
        """
        Printable text within the limit is kept as it is (its escapes not
        doubled); anything else is L{shown}.
        """
        already = "not 'evil\\x1b[2J'"
        self.assertEqual(shown_if_needed(already), already)
        self.assertEqual(shown_if_needed("a\nb"), "a\\nb")
        self.assertEqual(shown_if_needed("x" * 10, 4), "xxxx...(6 more)")

    @given(st.text(), st.integers(min_value=0, max_value=50))
    def test_always_one_printable_line(self, text: str, limit: int) -> None:
        """
        Whatever the text, the result is printable (no line break of any
        kind) and at most ten characters per kept one plus the note.
        """
        result = shown(text, limit)
        self.assertTrue(result.isprintable(), repr(result))
        self.assertEqual(result.splitlines() or [""], [result])
        self.assertLessEqual(len(result), 10 * limit + len("...(99999 more)"))
