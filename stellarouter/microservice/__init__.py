"""
The microservice SDK: declare endpoints on a L{Microservice}, and
L{stellarouter.microservice.service.MicroserviceService} connects it to
every configured router.  Everything a handler needs is importable from
here.
"""

from ..common.enums import CancelReason
from ..common.models import ClaimRequirement
from .context import (
    BodyStream,
    HeaderMap,
    JsonResponse,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)
from .endpoints import Microservice
from .errors import BadRequest, Problem

__all__ = [
    "BadRequest",
    "BodyStream",
    "CancelReason",
    "ClaimRequirement",
    "HeaderMap",
    "JsonResponse",
    "Microservice",
    "Problem",
    "RawRequestContext",
    "RawResponse",
    "StreamingResponse",
]
