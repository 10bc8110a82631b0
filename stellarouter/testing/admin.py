"""
Fakes for the admin listener's seams (L{stellarouter.gateway.admin}).
"""

from __future__ import annotations

from typing import Tuple

from zope.interface import implementer

from ..gateway.admin import IMetricsExposition


@implementer(IMetricsExposition)
class FakeMetricsExposition:
    """
    Serves a fixed body, and counts the scrapes.

    @ivar scrapes: how many times L{exposition} was called.
    """

    def __init__(self, body: bytes = b"# fake\nstellarouter_up 1\n",
                 content_type: str = "text/plain; version=0.0.4; charset=utf-8") -> None:
        self.body = body
        self.content_type = content_type
        self.scrapes = 0

    def exposition(self) -> Tuple[bytes, str]:
        self.scrapes += 1
        return self.body, self.content_type


__all__ = ["FakeMetricsExposition"]
