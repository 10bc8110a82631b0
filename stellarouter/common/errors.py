"""
Typed errors of the common layer: what the frame and payload codecs raise
on bytes that break the protocol (L{ProtocolError} and its kinds), and what
the model validators raise on a bad identity, version or path template
(L{InvalidDescriptor}).  The gateway and the SDK catch these at their edges
and turn them into a closed connection, a refused HELLO or a problem
response; nothing here knows about HTTP or Twisted.
"""


class StellaError(Exception):
    """
    Base class of every error raised by stellarouter code.
    """


class ProtocolError(StellaError):
    """
    The peer sent bytes or a frame that violate the protocol.  The connection
    that produced it is closed; the process carries on.
    """


class FrameTooShort(ProtocolError):
    """
    A length prefix announced fewer than 17 bytes (type + correlation id).
    """


class FrameTooLarge(ProtocolError):
    """
    A length prefix announced more than the configured C{max_frame_bytes}.
    """


class UnknownFrameType(ProtocolError):
    """
    A frame carried a type byte that is not a L{FrameType}.
    """


class MalformedPayload(ProtocolError):
    """
    A frame's payload could not be decoded for its frame type.
    """


class InvalidDescriptor(StellaError):
    """
    An identity or endpoint description is invalid (bad semver, bad path, bad
    service name, missing field).
    """
