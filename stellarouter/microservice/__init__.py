"""
The microservice SDK: declare endpoints on a L{Microservice}, and
L{stellarouter.microservice.service.MicroserviceService} connects it to
every configured router.
"""

from .context import (
    BodyStream,
    HeaderMap,
    JsonResponse,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)
from .endpoints import Microservice

__all__ = [
    "BodyStream",
    "HeaderMap",
    "JsonResponse",
    "Microservice",
    "RawRequestContext",
    "RawResponse",
    "StreamingResponse",
]
