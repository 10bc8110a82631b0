"""
The one rule for an HTTP header carried in a REQUEST or RESPONSE: the name
an RFC 9110 token, the value Latin-1 without CR, LF or NUL.  Both header
forms (JSON and compact) and the SDK's check of a handler's response use it.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from ..errors import MalformedPayload
from ..untrusted import quoted

#: RFC 9110 token characters (header names), as a regular expression class body.
TOKEN_CHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
#: Characters a header value may hold, as a class body: Latin-1 but NUL, CR and LF.
VALUE_CHARS = r"\x01-\x09\x0b\x0c\x0e-\xff"

_is_token = re.compile(rf"[{TOKEN_CHARS}]+\Z").match
_bad_value = re.compile(f"[^{VALUE_CHARS}]").search


def header_problem(name: object, value: object) -> Optional[str]:
    """
    Why C{(name, value)} cannot be sent as an HTTP header, or C{None}.
    """
    if not isinstance(name, str) or not _is_token(name):
        return f"header name {quoted(name)} is not an RFC 9110 token"
    if not isinstance(value, str) or _bad_value(value):
        return (f"value of header {quoted(name)} must be a Latin-1 string without CR, LF or "
                f"NUL, not {quoted(value)}")
    return None


def headers_problem(pairs: Sequence[object]) -> Optional[str]:
    """
    Why C{pairs} is not a sequence of C{(name, value)} pairs that
    L{header_problem} accepts, or C{None}.
    """
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            return f"header {pair!r} is not a (name, value) pair"
        problem = header_problem(pair[0], pair[1])
        if problem is not None:
            return problem
    return None


def decode_headers(raw: object, what: str) -> List[Tuple[str, str]]:
    """
    The header pairs of a decoded JSON REQUEST/RESPONSE header (a list of
    two-string lists), checked.

    @param what: the frame, for the error (C{"REQUEST"}).
    @raise MalformedPayload: not such a list, or a pair L{header_problem}
        refuses.
    """
    if type(raw) is not list:
        raise MalformedPayload(f"{what}.headers must be a list of [name, value]")
    headers = []
    for pair in raw:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedPayload(f"{what}.headers must be a list of [name, value]")
        name, value = pair
        if type(name) is not str or type(value) is not str:
            raise MalformedPayload(f"{what}.headers must be a list of [name, value]")
        if not _is_token(name) or _bad_value(value):
            raise MalformedPayload(
                f"{what}.headers has an invalid header {name!r}: names are RFC 9110 "
                "tokens, values Latin-1 without CR, LF or NUL")
        headers.append((name, value))
    return headers
