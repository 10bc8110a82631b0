"""
Correlation ids: unique and unpredictable per request, cheap to make on the
hot path.

An id is a random UUID (version 4 layout) made from a pool of
C{os.urandom} bytes refilled 4 KiB at a time, so the system call is paid
once per 256 ids instead of once per id.  Ids must not be guessable: over
UDP the correlation id is what ties a RESPONSE to its request.
"""

from __future__ import annotations

import os
from uuid import UUID

_POOL = 4096
_pool = b""
_offset = _POOL


def new_correlation_id() -> UUID:
    """
    A fresh random correlation id.
    """
    global _pool, _offset
    if _offset >= len(_pool):
        _pool, _offset = os.urandom(_POOL), 0
    raw = _pool[_offset:_offset + 16]
    _offset += 16
    return UUID(bytes=raw, version=4)
