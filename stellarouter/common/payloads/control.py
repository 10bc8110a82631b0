"""
HEARTBEAT (a microservice's report, or the gateway's ping) and CANCEL, with
the wire spellings of their enumerations read in any case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ..enums import CancelReason, InstanceHealthStatus
from ..errors import MalformedPayload
from ..untrusted import quoted
from ._json import decode_json, encode_json, json_optional
@dataclass(frozen=True)
class Heartbeat:
    """
    A microservice's periodic report, or (C{ping} set) a gateway ping that
    the microservice echoes unchanged.
    """

    instance_id: str = ""
    status: InstanceHealthStatus = InstanceHealthStatus.HEALTHY
    in_flight: int = 0
    error_rate: float = 0.0
    ping: Optional[float] = None
    #: A C{status} value no spelling of a known status matches (then
    #: C{status} is UNKNOWN: the HEARTBEAT still proves liveness).
    unknown_status: Optional[str] = None


def encode_heartbeat(beat: Heartbeat) -> bytes:
    """
    Encode a HEARTBEAT payload.
    """
    obj: Dict[str, object] = {
        "instance_id": beat.instance_id,
        "status": beat.status.value,
        "in_flight": beat.in_flight,
        "error_rate": beat.error_rate,
    }
    if beat.ping is not None:
        obj["ping"] = beat.ping
    return encode_json(obj)


def decode_heartbeat(payload: bytes) -> Heartbeat:
    """
    Decode a HEARTBEAT payload.

    A C{status} in no known spelling does not make the HEARTBEAT
    malformed: it is decoded as UNKNOWN with C{unknown_status} set.

    @raise MalformedPayload: wrong shape.
    """
    obj = decode_json(payload, "HEARTBEAT")
    raw = obj.get("status", "healthy")
    status = parse_status(raw)
    return Heartbeat(
        instance_id=json_optional(obj, "instance_id", str, "HEARTBEAT", ""),
        status=status if status is not None else InstanceHealthStatus.UNKNOWN,
        in_flight=json_optional(obj, "in_flight", int, "HEARTBEAT", 0),
        error_rate=json_optional(obj, "error_rate", float, "HEARTBEAT", 0.0),
        ping=json_optional(obj, "ping", float, "HEARTBEAT", None),
        unknown_status=None if status is not None else repr(raw)[:64],
    )


def _spelling(value: str) -> str:
    """
    A wire value with case and underscores taken out: C{HEALTHY},
    C{healthy}, C{CLIENT_DISCONNECTED} and C{ClientDisconnected} all match.
    """
    return value.replace("_", "").replace("-", "").lower()


_STATUSES = {_spelling(s.value): s for s in InstanceHealthStatus}
_REASONS = {_spelling(r.value): r for r in CancelReason}


def parse_status(value: object) -> Optional[InstanceHealthStatus]:
    """
    A HEARTBEAT status in any of its spellings (C{healthy} as sent,
    C{HEALTHY} as the spec writes it, any case), or L{None}.
    """
    return _STATUSES.get(_spelling(value)) if isinstance(value, str) else None


def parse_cancel_reason(value: object) -> Optional[CancelReason]:
    """
    A CANCEL reason in any of its spellings (C{ClientDisconnected} as sent,
    C{CLIENT_DISCONNECTED} as the spec writes it, any case), or L{None}.
    """
    return _REASONS.get(_spelling(value)) if isinstance(value, str) else None


@dataclass(frozen=True)
class Cancel:
    """
    A CANCEL: why the gateway stops a request.

    @ivar reason: the CANCEL's C{reason}.
    @ivar head_only: the request was a HEAD the gateway answered from the
        head of its GET endpoint's streamed response: the request is
        complete, only its body is not wanted (C{reason} is then
        C{ClientDisconnected}, what a peer that does not read this key
        understands: nobody reads that body).
    """

    reason: CancelReason
    head_only: bool = False


def encode_cancel(reason: CancelReason, head_only: bool = False) -> bytes:
    """
    Encode a CANCEL payload (C{head_only}: see L{Cancel}).
    """
    if head_only:
        return encode_json({"reason": reason.value, "head_only": True})
    return encode_json({"reason": reason.value})


def decode_cancel_message(payload: bytes) -> Cancel:
    """
    Decode a CANCEL payload.  A C{head_only} other than C{true} is read as
    absent (the CANCEL still stops the request).

    @raise MalformedPayload: wrong shape or unknown reason.
    """
    obj = decode_json(payload, "CANCEL")
    reason = parse_cancel_reason(obj.get("reason"))
    if reason is None:
        raise MalformedPayload(f"CANCEL.reason {quoted(obj.get('reason'))} is unknown")
    return Cancel(reason, obj.get("head_only") is True)


def decode_cancel(payload: bytes) -> CancelReason:
    """
    Decode a CANCEL payload's reason.

    @raise MalformedPayload: wrong shape or unknown reason.
    """
    return decode_cancel_message(payload).reason


# -- REQUEST / RESPONSE ---------------------------------------------------
