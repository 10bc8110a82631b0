"""
The frames the gateway sends a microservice for one request: the REQUEST
(its body split into REQUEST_STREAM_DATA frames when it does not fit one
frame; L{request_frames}), a streamed body's pieces (L{body_frames}), and
the REQUEST_STREAM_DATA that grants credit for a streamed response
(L{credit_frame}).  Pure: no connection, no I/O.
"""

from __future__ import annotations

from typing import List

from ..common.enums import FrameType, TransportType
from ..common.frames import FRAME_OVERHEAD, stream_data_frames
from ..common.ids import CorrelationId
from ..common.models import Frame
from ..common.payloads import RequestMessage, encode_credit, encode_request, encode_stream_data
from .errors import PayloadTooLarge, RequestHeadersTooLarge


def request_frames(message: RequestMessage, cid: CorrelationId, compact_headers: bool,
                   max_frame_bytes: int, transport_type: TransportType) -> List[Frame]:
    """
    The frames of one REQUEST.

    @param compact_headers: the headers go in the compact form.
    @param transport_type: the connection's; over UDP (one frame, one
        datagram) a REQUEST must fit one frame.
    @raise PayloadTooLarge: it does not fit one datagram.
    @raise RequestHeadersTooLarge: the request's headers alone do not fit
        in one frame.
    """
    payload = encode_request(message, compact_headers)
    if len(payload) + FRAME_OVERHEAD <= max_frame_bytes:
        return [Frame(FrameType.REQUEST, cid, payload)]
    if transport_type is TransportType.UDP:
        raise PayloadTooLarge(
            f"the request ({len(payload) + FRAME_OVERHEAD} bytes as a frame) does not fit in "
            f"one UDP datagram of at most {max_frame_bytes} bytes")
    header = encode_request(message._replace(streaming=True, body=b""), compact_headers)
    if len(header) + FRAME_OVERHEAD > max_frame_bytes:
        raise RequestHeadersTooLarge(
            f"the request's headers take {len(header)} bytes; a frame holds {max_frame_bytes}")
    frames = [Frame(FrameType.REQUEST, cid, header)]
    frames.extend(stream_data_frames(FrameType.REQUEST_STREAM_DATA, cid, message.body,
                                     max_frame_bytes))
    return frames


def body_frames(cid: CorrelationId, data: bytes, max_frame_bytes: int, end: bool = False,
                abort: bool = False) -> List[Frame]:
    """
    The frames of a piece of a streamed request body (split to fit frames),
    or of its end or abort (C{data} is then ignored).
    """
    if abort:
        return [Frame(FrameType.REQUEST_STREAM_DATA, cid, encode_stream_data(b"", abort=True))]
    return list(stream_data_frames(FrameType.REQUEST_STREAM_DATA, cid, data, max_frame_bytes,
                                   end))


def credit_frame(cid: CorrelationId, amount: int) -> Frame:
    """
    The frame granting room for C{amount} more bytes of a streamed response.
    """
    return Frame(FrameType.REQUEST_STREAM_DATA, cid, encode_credit(amount))
