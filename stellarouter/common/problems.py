"""
RFC 9457 problem details, shared by the gateway and the SDK so that every
error a client sees has the same shape.
"""

from __future__ import annotations

import json
from typing import Dict, Optional

#: The media type of every error body.
PROBLEM_CONTENT_TYPE = "application/problem+json"

#: The base of our stable problem type URIs.
PROBLEM_BASE = "https://stellarouter.dev/problems/"


def problem_body(
    status: int,
    kind: str,
    title: str,
    detail: Optional[str] = None,
    correlation_id: Optional[str] = None,
    **extra: object,
) -> bytes:
    """
    Build a problem+json body.

    @param status: the HTTP status.
    @param kind: the stable last segment of the C{type} URI, e.g.
        C{"not-found"}.
    @param title: a short, stable summary of the problem kind.
    @param detail: what happened this time.
    @param correlation_id: echoed as C{correlation_id} when given.
    @return: UTF-8 JSON bytes.
    """
    body: Dict[str, object] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
