"""
Every twisted.web subclass of the gateway, and so every use it makes of a
twisted.web private name: the connection (L{EdgeChannel},
L{GatewayChannel}, L{ConnectionRefusal} in C{channel}) and the request and
site (L{GatewayRequest}, L{GatewaySite} in C{request}).  No other gateway
module reads or overrides a twisted.web private name: each one used here is
listed in L{PRIVATE_NAMES} and pinned by C{tests/unit/test_web_private.py},
which fails, naming it, when a Twisted release renames or drops it.
"""

from ..problems import RefusalLog
from ..writer import refusal
from .channel import (
    DEFAULT_MAX_HEADER_BYTES,
    LINGER_BYTES,
    LINGER_SECONDS,
    REFUSALS_IN_FLIGHT,
    ConnectionRefusal,
    EdgeChannel,
    GatewayChannel,
    HeadRefusals,
    client_connection_cap,
    transport_paused,
)
from .request import GatewayRequest, GatewaySite, request_hostname

#: The private names of twisted.web's L{http.HTTPChannel} relied on
#: (attributes of a connected channel).
#: C{_respondToBadRequestAndDisconnect} is how twisted.web answers every
#: malformed request (overridden); C{_send100Continue} writes
#: C{100 Continue} after C{gotLength} (silenced once a request is refused);
#: C{_receivedHeaderSize} and C{_receivedHeaderCount} tell a head that is
#: too large from one that is malformed; C{_networkProducer} is the
#: transport's producer registration, undone before the half-close;
#: C{_handlingRequest} (a request is complete and being handled) and
#: C{_transferDecoder} (a body is arriving) tell where a connection is
#: between heads; C{_waitingForTransport} tells that the client's
#: connection is paused (a producer registered then is not paused by
#: twisted.web); C{_command}, C{_path} and C{_version} are the request line
#: while the request's C{gotLength} runs (a streaming endpoint's REQUEST
#: goes out then, before the request is complete).
CHANNEL_PRIVATE_NAMES = (
    "_respondToBadRequestAndDisconnect",
    "_send100Continue",
    "_receivedHeaderSize",
    "_receivedHeaderCount",
    "_networkProducer",
    "_handlingRequest",
    "_transferDecoder",
    "_waitingForTransport",
    "_command",
    "_path",
    "_version",
)

#: The private (or "not intended for users") names of twisted.web's
#: L{http.Request} relied on: C{_disconnected} (the client left), and the
#: hooks the channel calls, overridden by L{GatewayRequest}:
#: C{gotLength} and C{handleContentChunk} (the body as it arrives) and
#: C{requestReceived} (the request is complete).
REQUEST_PRIVATE_NAMES = (
    "_disconnected",
    "gotLength",
    "handleContentChunk",
    "requestReceived",
)

PRIVATE_NAMES = CHANNEL_PRIVATE_NAMES + REQUEST_PRIVATE_NAMES

__all__ = [
    "CHANNEL_PRIVATE_NAMES", "ConnectionRefusal", "DEFAULT_MAX_HEADER_BYTES", "EdgeChannel",
    "GatewayChannel", "GatewayRequest", "GatewaySite", "HeadRefusals", "LINGER_BYTES", "LINGER_SECONDS",
    "PRIVATE_NAMES", "REFUSALS_IN_FLIGHT", "REQUEST_PRIVATE_NAMES", "RefusalLog",
    "client_connection_cap", "refusal", "request_hostname", "transport_paused",
]
