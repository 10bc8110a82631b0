"""
Enumerations shared by every layer (spec section 3): the transports a
microservice can dial in over, the frame types of the wire protocol, an
instance's health status and why a request was cancelled.  Their values are
the wire and configuration spellings, so the payload codecs and the
configuration reader map them both ways without tables of their own.
"""

from enum import Enum, IntEnum


class TransportType(Enum):
    """
    The kinds of binary transport a microservice can use to reach a gateway.
    """

    INMEMORY = "inmemory"
    TCP = "tcp"
    TLS = "tls"
    UDP = "udp"
    RABBITMQ = "rabbitmq"


class FrameType(IntEnum):
    """
    Frame kinds, one byte on the wire (spec section 5.1).
    """

    HELLO = 1
    HEARTBEAT = 2
    ENDPOINTS_UPDATE = 3
    REQUEST = 4
    REQUEST_STREAM_DATA = 5
    RESPONSE = 6
    RESPONSE_STREAM_DATA = 7
    CANCEL = 8


class InstanceHealthStatus(Enum):
    """
    Health of one microservice connection as the gateway sees it.
    """

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"


class CancelReason(Enum):
    """
    Why the gateway cancelled a request.  The values are the names used on
    the wire in a CANCEL payload.
    """

    CLIENT_DISCONNECTED = "ClientDisconnected"
    TIMEOUT = "Timeout"
    PAYLOAD_LIMIT_EXCEEDED = "PayloadLimitExceeded"
    SHUTDOWN = "Shutdown"
