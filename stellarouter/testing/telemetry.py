"""
Fakes for the telemetry seams: an access log sink that keeps its lines in
memory, and helpers that read the gateway's metrics back.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families
from zope.interface import implementer

from ..accesslog import IAccessLogSink
from ..common.jsonvalue import JSONObject


@implementer(IAccessLogSink)
class MemoryAccessLogSink:
    """
    An L{IAccessLogSink} that keeps what it is given.

    @ivar batches: the text of every batch written, in order.
    @ivar closed: L{close} was called.
    @ivar fail_with: while set, what L{write} raises (a full disk ...).
    """

    def __init__(self) -> None:
        self.batches: List[str] = []
        self.closed = False
        self.fail_with: Optional[OSError] = None

    def write(self, lines: object) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(str(lines))

    def close(self) -> None:
        self.closed = True

    def lines(self) -> List[str]:
        """
        Every line written so far.
        """
        return [line for batch in self.batches for line in batch.split("\n")]

    def records(self) -> List[JSONObject]:
        """
        Every line written so far, parsed as JSON.
        """
        return [json.loads(line) for line in self.lines()]


def sample_values(exposition: bytes) -> Dict[str, Dict[Tuple[Tuple[str, str], ...], float]]:
    """
    The samples of a Prometheus text exposition: C{{sample name: {sorted
    label items: value}}}.
    """
    out: Dict[str, Dict[Tuple[Tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(exposition.decode("utf-8")):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def sample(exposition: bytes, name: str, **labels: str) -> Optional[float]:
    """
    One sample's value, or L{None} if it is not there.
    """
    return sample_values(exposition).get(name, {}).get(tuple(sorted(labels.items())))
