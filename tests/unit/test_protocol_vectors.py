"""
The test vectors of docs/router/protocol.md are exactly what the code
encodes and decodes.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, FrameType, InstanceHealthStatus
from stellarouter.common.frames import FrameDecoder, encode_frame
from stellarouter.common.ids import CorrelationId
from stellarouter.common.models import EndpointDescriptor, Frame, InstanceDescriptor
from stellarouter.common.payloads import (
    COMPACT_HEADERS,
    Heartbeat,
    Hello,
    HelloAck,
    RequestMessage,
    ResponseMessage,
    encode_cancel,
    encode_credit,
    encode_endpoints_update,
    encode_heartbeat,
    encode_hello,
    encode_hello_ack,
    encode_request,
    encode_response,
    encode_stream_data,
)

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "router", "protocol.md")
CID = CorrelationId.parse("00112233-4455-6677-8899-aabbccddeeff")
INSTANCE = InstanceDescriptor("billing-1", "billing", "1.0.0", "eu1")
PING = EndpointDescriptor("billing", "1.0.0", "GET", "/ping", 5.0)

EXPECTED = {
    "hello": Frame(FrameType.HELLO, CID, encode_hello(Hello(INSTANCE, (PING,), 5.0))),
    "hello-ack": Frame(FrameType.HELLO, CID, encode_hello_ack(HelloAck(True, None, "gw-1", "eu1"))),
    "hello-reject": Frame(FrameType.HELLO, CID, encode_hello_ack(HelloAck(
        False, "invalid HELLO: HELLO.instance.version: '1.0' is not MAJOR.MINOR.PATCH",
        "gw-1", "eu1"))),
    "heartbeat": Frame(FrameType.HEARTBEAT, CID, encode_heartbeat(
        Heartbeat("billing-1", InstanceHealthStatus.HEALTHY, 2, 0.0))),
    "endpoints-update": Frame(FrameType.ENDPOINTS_UPDATE, CID, encode_endpoints_update((PING,))),
    "request": Frame(FrameType.REQUEST, CID, encode_request(RequestMessage(
        "GET", "/invoices/42", "/invoices/{id}", {"id": "42"}, "",
        [("Accept", "application/json")], {}, None, False, b""))),
    "request-stream-data": Frame(FrameType.REQUEST_STREAM_DATA, CID,
                                 encode_stream_data(b"abc", end=True)),
    "response": Frame(FrameType.RESPONSE, CID, encode_response(ResponseMessage(
        200, [("Content-Type", "text/plain")], b"pong"))),
    "response-stream-data": Frame(FrameType.RESPONSE_STREAM_DATA, CID,
                                  encode_stream_data(b"", abort=True)),
    "cancel": Frame(FrameType.CANCEL, CID, encode_cancel(CancelReason.TIMEOUT)),
    "response-credit": Frame(FrameType.REQUEST_STREAM_DATA, CID, encode_credit(131072)),
    "request-compact": Frame(FrameType.REQUEST, CID, encode_request(RequestMessage(
        "GET", "/invoices/42", "/invoices/{id}", {"id": "42"}, "",
        [("Accept", "application/json")], {}, None, False, b""), compact=True)),
    "response-compact": Frame(FrameType.RESPONSE, CID, encode_response(ResponseMessage(
        200, [("Content-Type", "text/plain")], b"pong"), compact=True)),
    "hello-ack-compact": Frame(FrameType.HELLO, CID, encode_hello_ack(
        HelloAck(True, None, "gw-1", "eu1", (COMPACT_HEADERS,)))),
    "ping": Frame(FrameType.HEARTBEAT, CID, encode_heartbeat(Heartbeat(ping=1700000000.25))),
}


def doc_vectors() -> dict:
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    vectors = {}
    for name, body in re.findall(r"```text\nvector ([\w-]+)\n(.*?)```", text, re.S):
        vectors[name] = bytes.fromhex(body.replace("\n", " "))
    return vectors


class ProtocolVectorTests(SynchronousTestCase):
    def test_every_frame_kind_has_a_vector(self) -> None:
        """
        The document has a vector for every frame type, and no vector this
        test does not check.
        """
        vectors = doc_vectors()
        self.assertEqual(set(vectors), set(EXPECTED))
        self.assertEqual({f.type for f in EXPECTED.values()}, set(FrameType))

    def test_vectors_match_the_code(self) -> None:
        """
        Each vector is the encoding of its frame, and decodes back to it.
        """
        for name, data in doc_vectors().items():
            self.assertEqual(encode_frame(EXPECTED[name]), data, name)
            self.assertEqual(FrameDecoder().feed(data), [EXPECTED[name]], name)
