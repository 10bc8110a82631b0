"""
The one rule for showing text that a client or a peer chose (a token's
header, a path, a microservice's error message) in a log line, a problem
detail or a table: L{shown} escapes every character that is not printable
(newlines, ESC, U+2028, bidirectional overrides) and the backslash, the
way Python's C{repr} does, and cuts the text to a bounded length.  The
result is one line that cannot forge another log line, move a terminal's
cursor or fill a log with kilobytes.
"""

from __future__ import annotations

#: How many characters of an untrusted text are shown by default.
MAX_SHOWN_CHARS = 200
#: The characters with a short escape, as C{repr} writes them.
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(character: str) -> str:
    if character in _SHORT:
        return _SHORT[character]
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """
    C{value} (its C{str}) as it may appear in one log line: characters that
    are not printable and the backslash escaped (C{\\n}, C{\\x1b},
    C{\\u2028}, C{\\\\}), and at most C{limit} characters of the original
    text, followed by C{...(N more)} when it was longer.

    @param value: untrusted text (or any object, shown by its C{str}).
    @param limit: the most characters of C{value} kept.
    @return: a printable, single-line string.
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not (text.isprintable() and "\\" not in text):
        text = "".join(c if c.isprintable() and c != "\\" else _escaped(c) for c in text)
    return f"{text}...({cut} more)" if cut > 0 else text


def shown_if_needed(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """
    C{text} unchanged when it is printable and at most C{limit} characters
    (a backslash in it stays one backslash), else L{shown}C{(text, limit)}.
    For text that is usually well-formed and may already hold escapes: a
    gateway's HELLO refusal as the microservice logs it, a certificate name.
    """
    if text.isprintable() and len(text) <= limit:
        return text
    return shown(text, limit)


def quoted(value: object, limit: int = 64) -> str:
    """
    A value named in an error message, like C{{value!r}} but bounded: a
    string in single quotes, L{shown}; anything else its C{repr}, shown.
    """
    if isinstance(value, str):
        return f"'{shown(value, limit)}'"
    return shown(repr(value), limit)


__all__ = ["MAX_SHOWN_CHARS", "quoted", "shown", "shown_if_needed"]
