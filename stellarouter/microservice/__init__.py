"""
The microservice SDK: declare endpoints on a L{Microservice}, and
L{stellarouter.microservice.service.MicroserviceService} connects it to
every configured router.
"""

from .context import (
    HeaderMap,
    JsonResponse,
    RawRequestContext,
    RawResponse,
    StreamingResponse,
)
from .endpoints import Microservice

__all__ = [
    "HeaderMap",
    "JsonResponse",
    "Microservice",
    "RawRequestContext",
    "RawResponse",
    "StreamingResponse",
]
