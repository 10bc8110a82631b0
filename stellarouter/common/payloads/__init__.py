"""
Payload encodings of each frame type (spec section 5.2, exact bytes in
C{docs/router/protocol.md}), one module per concern:

 - L{hello}: HELLO, its answer and ENDPOINTS_UPDATE (JSON objects);
 - L{control}: HEARTBEAT and CANCEL (JSON objects);
 - L{messages}: what a REQUEST and a RESPONSE carry;
 - L{codec}: REQUEST and RESPONSE as C{header_length: u32 BE | header |
   body}, the header in L{json_form} or, between peers that agreed on
   L{COMPACT_HEADERS}, in L{compact} form;
 - L{headers}: the one rule for a carried HTTP header;
 - L{stream}: REQUEST_STREAM_DATA and RESPONSE_STREAM_DATA, credit grants.

Every decoder raises L{MalformedPayload} (or L{InvalidDescriptor} for a
well-formed but invalid identity) and nothing else.  The names below are the
package's public ones; import them from here.
"""

from .codec import decode_request, decode_response, encode_request, encode_response
from .compact import COMPACT_MARKER
from .control import (
    Cancel,
    Heartbeat,
    decode_cancel,
    decode_cancel_message,
    decode_heartbeat,
    encode_cancel,
    encode_heartbeat,
    parse_cancel_reason,
    parse_status,
)
from .headers import decode_headers, header_problem, headers_problem
from .hello import (
    COMPACT_HEADERS,
    MAX_TIMEOUT,
    PROTOCOL_VERSION,
    RESPONSE_CREDIT,
    Hello,
    HelloAck,
    decode_endpoint_list,
    decode_endpoints_update,
    decode_hello,
    decode_hello_ack,
    encode_endpoints_update,
    encode_hello,
    encode_hello_ack,
    endpoint_from_json,
    endpoint_to_json,
)
from .messages import EMPTY, HeaderList, RequestMessage, ResponseMessage
from .stream import (
    STREAM_ABORT,
    STREAM_CREDIT,
    STREAM_END,
    STREAM_WINDOW,
    decode_stream_data,
    encode_credit,
    encode_stream_data,
    stream_credit,
)

__all__ = [
    "COMPACT_HEADERS", "COMPACT_MARKER", "Cancel", "EMPTY", "HeaderList", "Heartbeat", "Hello",
    "HelloAck", "MAX_TIMEOUT", "PROTOCOL_VERSION", "RESPONSE_CREDIT", "RequestMessage",
    "ResponseMessage", "STREAM_ABORT", "STREAM_CREDIT", "STREAM_END", "STREAM_WINDOW",
    "decode_cancel", "decode_cancel_message", "decode_endpoint_list",
    "decode_endpoints_update", "decode_headers", "decode_heartbeat", "decode_hello",
    "decode_hello_ack", "decode_request",
    "decode_response", "decode_stream_data", "encode_cancel", "encode_credit",
    "encode_endpoints_update", "encode_heartbeat", "encode_hello", "encode_hello_ack",
    "encode_request", "encode_response", "encode_stream_data", "endpoint_from_json",
    "endpoint_to_json", "header_problem", "headers_problem", "parse_cancel_reason",
    "parse_status", "stream_credit",
]
