"""
Tests for the payload encodings of each frame type.
"""

import json
import struct
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.common.enums import CancelReason, InstanceHealthStatus
from stellarouter.common.errors import InvalidDescriptor, MalformedPayload
from stellarouter.common.models import (
    ClaimRequirement,
    EndpointDescriptor,
    InstanceDescriptor,
)
from stellarouter.common.payloads import (
    COMPACT_HEADERS,
    COMPACT_MARKER,
    Cancel,
    Heartbeat,
    Hello,
    HelloAck,
    RequestMessage,
    ResponseMessage,
    decode_cancel,
    decode_cancel_message,
    decode_endpoints_update,
    decode_heartbeat,
    decode_hello,
    decode_hello_ack,
    decode_request,
    decode_response,
    decode_stream_data,
    encode_cancel,
    encode_endpoints_update,
    encode_heartbeat,
    encode_hello,
    encode_hello_ack,
    encode_request,
    encode_response,
    encode_stream_data,
    header_problem,
    headers_problem,
    decode_headers,
)
from stellarouter.testing.strategies import (
    cancel_reasons,
    request_messages,
    response_messages,
)

INSTANCE = InstanceDescriptor("billing-7", "billing", "1.2.3", "eu1")


def hello_json(**changes: object) -> bytes:
    """
    A valid HELLO payload with some top-level or instance fields changed.
    """
    obj = json.loads(encode_hello(Hello(INSTANCE, (
        EndpointDescriptor("billing", "1.2.3", "GET", "/invoices/{id}"),))))
    for key, value in changes.items():
        if key in obj["instance"]:
            obj["instance"][key] = value
        else:
            obj[key] = value
    return json.dumps(obj).encode()


#: Any text UTF-8 can carry (no lone surrogates).
_utf8 = st.text(alphabet=st.characters(codec="utf-8"))


class HelloTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """
        A HELLO with every endpoint field set decodes to the same HELLO.
        """
        endpoints = (
            EndpointDescriptor("billing", "1.2.3", "POST", "/invoices", 2.5, True,
                               (ClaimRequirement("scope", "billing:write"),
                                ClaimRequirement("role", ("admin", "finance")),
                                ClaimRequirement("sub")), 1024, False),
            EndpointDescriptor("billing", "1.2.3", "GET", "/invoices/{id}"),
        )
        hello = Hello(INSTANCE, endpoints, 2.0, ("streaming",))
        self.assertEqual(decode_hello(encode_hello(hello)), hello)

    def test_service_name_lower_cased(self) -> None:
        """
        Service names match case-insensitively: they are lower-cased.
        """
        self.assertEqual(decode_hello(hello_json(service_name="Billing")).instance.service_name,
                         "billing")

    def test_invalid_versions(self) -> None:
        """
        Anything but strict MAJOR.MINOR.PATCH is rejected with a clear error.
        """
        for version in ["1.0", "1.0.0-beta", "01.0.0", "1.0.0.0", "v1.0.0", "", "1.0.0+b"]:
            error = self.assertRaises(InvalidDescriptor, decode_hello, hello_json(version=version))
            self.assertIn("is not MAJOR.MINOR.PATCH", str(error))

    def test_missing_fields(self) -> None:
        """
        Missing or empty identity fields are rejected, naming the field.
        """
        obj = json.loads(hello_json())
        del obj["instance"]["region"]
        error = self.assertRaises(MalformedPayload, decode_hello, json.dumps(obj).encode())
        self.assertIn("'region'", str(error))
        self.assertRaises(MalformedPayload, decode_hello, hello_json(instance_id=""))
        self.assertRaises(MalformedPayload, decode_hello, hello_json(endpoints="x"))

    def test_identity_characters(self) -> None:
        """
        An instance id or region with a control character, a space, a
        non-ASCII letter, or over 256 characters is refused (F2), the
        reason naming the field and showing the value escaped; printable
        ASCII up to 256 characters is accepted.
        """
        for field in ("instance_id", "region"):
            for bad in ("evil\x1b[2J\n{\"x\":1}", "a b", "eu\u2028", "r\u00e9gion", "x" * 257):
                error = self.assertRaises(MalformedPayload, decode_hello,
                                          hello_json(**{field: bad}))
                self.assertIn(f"HELLO.instance.{field} must be 1 to 256 printable ASCII", str(error))
                self.assertTrue(str(error).isprintable(), str(error))
            good = "billing-1_eu.west:3/~@" + "x" * 234
            self.assertEqual(getattr(decode_hello(hello_json(**{field: good})).instance, field),
                             good)
        error = self.assertRaises(MalformedPayload, decode_hello,
                                  hello_json(instance_id="evil\x1b[2J\n{"))
        self.assertIn("'evil\\x1b[2J\\n{'", str(error))

    def test_refusals_bounded(self) -> None:
        """
        A refusal that names a huge announced value (a 100,000-character
        service name, method or CANCEL reason) shows at most 64 characters
        of it, escaped: such reasons are logged and sent back.
        """
        error = self.assertRaises(InvalidDescriptor, decode_hello,
                                  hello_json(service_name="-" * 100_000))
        self.assertLess(len(str(error)), 200)
        obj = json.loads(hello_json())
        obj["endpoints"][0]["method"] = "G\nET" * 25_000
        error = self.assertRaises(InvalidDescriptor, decode_hello, json.dumps(obj).encode())
        self.assertLess(len(str(error)), 300)
        self.assertIn("'G\\nETG", str(error))
        error = self.assertRaises(MalformedPayload, decode_cancel,
                                  json.dumps({"reason": "\x1b" * 100_000}).encode())
        self.assertLess(len(str(error)), 400)
        self.assertTrue(str(error).isprintable())

    def test_bad_paths(self) -> None:
        """
        Malformed path templates are rejected, naming the endpoint.
        """
        for path in ["invoices", "/a//b", "/a/{b", "/a/{1x}", "/a/{x}/{x}", "/a b", ""]:
            obj = json.loads(hello_json())
            obj["endpoints"][0]["path"] = path
            self.assertRaises((InvalidDescriptor, MalformedPayload), decode_hello,
                              json.dumps(obj).encode())

    def test_duplicate_endpoint(self) -> None:
        """
        The same (method, path) twice is rejected; a trailing slash does not
        make it different.
        """
        obj = json.loads(hello_json())
        obj["endpoints"].append(dict(obj["endpoints"][0], path="/invoices/{id}/"))
        error = self.assertRaises(InvalidDescriptor, decode_hello, json.dumps(obj).encode())
        self.assertIn("announced twice", str(error))

    def test_unknown_protocol(self) -> None:
        """
        An unknown protocol version is rejected.
        """
        error = self.assertRaises(InvalidDescriptor, decode_hello, hello_json(protocol=2))
        self.assertIn("protocol version 2 is not supported", str(error))

    def test_not_json(self) -> None:
        """
        Non-JSON, non-object and non-UTF-8 payloads are MalformedPayload.
        """
        for payload in [b"", b"{", b"[]", b"\xff\xfe", b"null"]:
            self.assertRaises(MalformedPayload, decode_hello, payload)

    @given(st.binary(max_size=300))
    def test_fuzz(self, junk: bytes) -> None:
        """
        Any bytes give a HELLO or a typed error.
        """
        try:
            decode_hello(junk)
        except (MalformedPayload, InvalidDescriptor):
            pass

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=20))
    def test_fuzz_json(self, value: object) -> None:
        """
        Any JSON document gives a HELLO or a typed error.
        """
        try:
            decode_hello(json.dumps({"instance": value, "endpoints": value}).encode())
        except (MalformedPayload, InvalidDescriptor):
            pass


class OtherPayloadTests(SynchronousTestCase):
    def test_ack_round_trip(self) -> None:
        """
        The gateway's HELLO answer round-trips.
        """
        for ack in [HelloAck(True, None, "gw", "eu1"), HelloAck(False, "bad", "gw", "eu1")]:
            self.assertEqual(decode_hello_ack(encode_hello_ack(ack)), ack)
        self.assertRaises(MalformedPayload, decode_hello_ack, b'{"accepted": "yes"}')

    def test_heartbeat_round_trip(self) -> None:
        """
        Heartbeats and pings round-trip; an unknown status decodes as
        UNKNOWN, with the value kept for the log.
        """
        for beat in [Heartbeat("i", InstanceHealthStatus.DRAINING, 3, 0.25),
                     Heartbeat(ping=12.5)]:
            self.assertEqual(decode_heartbeat(encode_heartbeat(beat)), beat)
        sleepy = decode_heartbeat(b'{"status": "sleepy"}')
        self.assertEqual((sleepy.status, sleepy.unknown_status),
                         (InstanceHealthStatus.UNKNOWN, "'sleepy'"))

    @given(cancel_reasons())
    def test_cancel_round_trip(self, reason: CancelReason) -> None:
        """
        Every cancel reason round-trips by its wire name.
        """
        self.assertEqual(decode_cancel(encode_cancel(reason)), reason)

    def test_cancel_head_only(self) -> None:
        """
        A CANCEL marked C{head_only} (a HEAD answered from its head) keeps
        its reason, so a peer that does not read the mark still stops the
        request; only C{true} marks it.
        """
        payload = encode_cancel(CancelReason.CLIENT_DISCONNECTED, head_only=True)
        self.assertEqual(json.loads(payload),
                         {"reason": "ClientDisconnected", "head_only": True})
        self.assertEqual(decode_cancel(payload), CancelReason.CLIENT_DISCONNECTED)
        self.assertEqual(decode_cancel_message(payload),
                         Cancel(CancelReason.CLIENT_DISCONNECTED, head_only=True))
        self.assertEqual(decode_cancel_message(encode_cancel(CancelReason.TIMEOUT)),
                         Cancel(CancelReason.TIMEOUT))
        self.assertFalse(decode_cancel_message(
            b'{"reason": "Timeout", "head_only": "yes"}').head_only)

    def test_cancel_unknown_reason(self) -> None:
        """
        An unknown cancel reason is a typed error.
        """
        self.assertRaises(MalformedPayload, decode_cancel, b'{"reason": "Bored"}')

    def test_endpoints_update_round_trip(self) -> None:
        """
        ENDPOINTS_UPDATE carries a full endpoint set for the instance.
        """
        endpoints = (EndpointDescriptor("billing", "1.2.3", "GET", "/a"),)
        self.assertEqual(decode_endpoints_update(encode_endpoints_update(endpoints), INSTANCE),
                         endpoints)

    @given(request_messages())
    def test_request_round_trip(self, message: object) -> None:
        """
        REQUEST contents round-trip exactly, body included.
        """
        self.assertEqual(decode_request(encode_request(message)), message)

    @given(response_messages())
    def test_response_round_trip(self, message: object) -> None:
        """
        RESPONSE contents round-trip exactly, body included.
        """
        self.assertEqual(decode_response(encode_response(message)), message)

    @given(request_messages(), _utf8, _utf8, st.dictionaries(_utf8, _utf8),
           st.lists(st.tuples(_utf8, _utf8), max_size=4),
           st.one_of(st.none(), st.floats(allow_nan=False), st.integers()))
    def test_request_bytes_are_json_dumps(self, message: Any, path: str, query: str,
                                          params: Any, headers: Any, deadline: Any) -> None:
        """
        The hand-written REQUEST header encoding gives the same bytes as
        C{json.dumps} of the header object, for any text (escapes, non-ASCII,
        control characters), any params, headers and deadline (float, int,
        infinite, none).
        """
        for m in (message, message._replace(path=path, query=query,
                                               path_params=params, headers=headers,
                                               deadline=deadline)):
            header = {"method": m.method, "path": m.path, "template": m.template,
                      "params": m.path_params, "query": m.query, "headers": m.headers,
                      "claims": m.claims, "deadline": m.deadline, "streaming": m.streaming}
            self.assertEqual(encode_request(m), _reference(header, m.body))

    @given(response_messages(), st.lists(st.tuples(_utf8, _utf8), max_size=4))
    def test_response_bytes_are_json_dumps(self, message: Any, headers: Any) -> None:
        """
        The same for RESPONSE headers.
        """
        for m in (message, message._replace(headers=headers)):
            header = {"status": m.status, "headers": m.headers, "streaming": m.streaming}
            self.assertEqual(encode_response(m), _reference(header, m.body))

    def test_wrong_types_are_refused(self) -> None:
        """
        A message whose fields are not of the documented types (a pair of
        three, a non-string value, headers as a dict, params or claims that
        are not mappings, a bool status, a non-bool streaming flag) is a bug
        of the caller: C{TypeError} (C{ValueError} for a pair that is not
        two items), in either form, never a frame a peer would refuse.
        """
        for headers in ([("A", "b", "c")], [("A", 1)], {"ab": "x"}, [("A", b"b")]):
            for compact in (False, True):
                self.assertRaises((TypeError, ValueError), encode_request,
                                  RequestMessage("GET", "/", "/", headers=headers), compact)
                self.assertRaises((TypeError, ValueError), encode_response,
                                  ResponseMessage(200, headers), compact)  # type: ignore[arg-type]
        for params, claims in ((None, {}), ({}, None), ({}, 0)):
            m = RequestMessage("GET", "/", "/", path_params=params,  # type: ignore[arg-type]
                               claims=claims)  # type: ignore[arg-type]
            self.assertRaises(TypeError, encode_request, m)
        for bad in (dict(method=None), dict(streaming=1), dict(deadline="5"), dict(deadline=True),
                    dict(body="text")):
            for compact in (False, True):
                self.assertRaises(TypeError, encode_request,
                                  RequestMessage("GET", "/", "/")._replace(**bad), compact)
        for status in (True, "200", 200.0):
            self.assertRaises(TypeError, encode_response,
                              ResponseMessage(status))  # type: ignore[arg-type]
        self.assertRaises(TypeError, encode_response,
                          ResponseMessage(200, streaming=None))  # type: ignore[arg-type]

    def test_other_accepted_shapes(self) -> None:
        """
        Lists as header pairs, C{str} and C{int} subclasses, read-only
        mappings and an C{int} deadline are written as C{json.dumps} writes
        them.
        """
        class Text(str):
            pass

        class Status(int):
            pass

        headers = [["A", "b"], (Text("C"), Text("d"))]
        m = RequestMessage("GET", "/", "/", MappingProxyType({"x": "1"}), headers=headers,
                           claims=MappingProxyType({"c": [1]}), deadline=5)
        header = {"method": "GET", "path": "/", "template": "/", "params": {"x": "1"},
                  "query": "", "headers": headers, "claims": {"c": [1]}, "deadline": 5,
                  "streaming": False}
        self.assertEqual(encode_request(m), _reference(header, b""))
        self.assertEqual(encode_response(ResponseMessage(Status(201), headers)),
                         _reference({"status": 201, "headers": headers, "streaming": False},
                                    b""))

    def test_bad_header_length(self) -> None:
        """
        A header length past the payload, or a truncated length, is a typed
        error.
        """
        for payload in [b"", b"\x00\x00", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02[]"]:
            self.assertRaises(MalformedPayload, decode_request, payload)
            self.assertRaises(MalformedPayload, decode_response, payload)

    @given(st.lists(st.tuples(st.sampled_from(["X-A", "Bad Name", "", "\u00e9"]),
                              st.sampled_from(["v", "", "a\r\nb", "\u00e9", "\u20ac", "\x00"])),
                    max_size=3))
    def test_one_header_rule(self, pairs: Any) -> None:
        """
        L{headers_problem} (the SDK's check of a response) and
        L{decode_headers} (both decoders) accept exactly what
        L{header_problem} accepts pair by pair, as tuples or lists.
        """
        expected = all(header_problem(name, value) is None for name, value in pairs)
        self.assertEqual(headers_problem(pairs) is None, expected)
        self.assertEqual(headers_problem(tuple([list(p) for p in pairs])) is None, expected)
        as_json = [list(p) for p in pairs]
        if expected:
            self.assertEqual(decode_headers(as_json, "T"), [tuple(p) for p in pairs])
        else:
            self.assertRaises(MalformedPayload, decode_headers, as_json, "T")

    def test_headers_problem_other_shapes(self) -> None:
        """
        L{headers_problem} words what is wrong with a pair that is not a
        pair of two strings, and accepts C{str} subclasses.
        """
        class Name(str):
            pass

        for pair in (("A", 1), ("A", "b", "c"), ("A",), "ab", {"A": "b"}, (b"A", "b")):
            self.assertIsNotNone(headers_problem([pair]), pair)
        self.assertIsNone(headers_problem([(Name("A"), "b")]))
        self.assertIsNone(headers_problem([]))

    def test_request_field_shapes(self) -> None:
        """
        A REQUEST header field of the wrong type is refused with an error
        naming it; params, empty or not, map names to strings.
        """
        base = {"method": "GET", "path": "/a/b", "template": "/a/{x}"}
        for params in ({}, {"x": "b"}, {"x": "b", "y": ""}):
            message = decode_request(_reference(dict(base, params=params), b""))
            self.assertEqual(message.path_params, params)
        bad = {"params": {"x": 1}, "method": 1, "template": None, "query": 1, "claims": ["x"],
               "deadline": "soon", "streaming": 1}
        for name, value in bad.items():
            with self.assertRaises(MalformedPayload) as raised:
                decode_request(_reference(dict(base, **{name: value}), b""))
            self.assertIn(name, str(raised.exception))
        self.assertRaises(MalformedPayload, decode_request,
                          _reference(dict(base, params={"x": "b", "y": 2}), b""))

    def test_bad_status(self) -> None:
        """
        A status outside 100-599 is rejected.
        """
        body = json.dumps({"status": 700}).encode()
        self.assertRaises(MalformedPayload, decode_response, len(body).to_bytes(4, "big") + body)

    @given(st.binary(max_size=200))
    def test_fuzz_request_response(self, junk: bytes) -> None:
        """
        Any bytes give a message or MalformedPayload.
        """
        for decode in (decode_request, decode_response, decode_stream_data):
            try:
                decode(junk)
            except MalformedPayload:
                pass

    def test_stream_data(self) -> None:
        """
        Stream data flags: end, abort; unknown bits and empty payloads are
        rejected.
        """
        self.assertEqual(decode_stream_data(encode_stream_data(b"ab", end=True)), (b"ab", True, False))
        self.assertEqual(decode_stream_data(encode_stream_data(b"", abort=True)), (b"", False, True))
        self.assertRaises(MalformedPayload, decode_stream_data, b"")
        self.assertRaises(MalformedPayload, decode_stream_data, b"\x04x")


def _reference(header: Any, body: bytes) -> bytes:
    """
    A REQUEST/RESPONSE payload as C{json.dumps} writes its header.
    """
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return len(text).to_bytes(4, "big") + text + body


def _compact_request(flags: int = 0, deadline: float = 0.0, text: bytes = b"GET\0/\0/\0\0",
                     params: bytes = b"", claims: bytes = b"", body: bytes = b"",
                     length: Any = None) -> bytes:
    """
    A compact REQUEST payload built by hand from its parts (protocol.md,
    "Compact headers").
    """
    header = (struct.pack(">BBdII", COMPACT_MARKER, flags, deadline, len(params), len(claims))
              + text + params + claims)
    return struct.pack(">I", len(header) if length is None else length) + header + body


def _with_length(header: bytes) -> bytes:
    return struct.pack(">I", len(header)) + header


def _compact_response(status: int = 200, flags: int = 0, text: bytes = b"",
                      body: bytes = b"", length: Any = None) -> bytes:
    header = struct.pack(">BHB", COMPACT_MARKER, status, flags) + text
    return struct.pack(">I", len(header) if length is None else length) + header + body


class CompactHeaderTests(SynchronousTestCase):
    """
    The compact REQUEST/RESPONSE header: what C{compact=True} writes, and
    what both decoders read next to the JSON form.
    """

    @given(request_messages())
    def test_request_round_trip(self, message: Any) -> None:
        """
        Any REQUEST decodes from its compact form to the message it decodes
        to from JSON.
        """
        self.assertEqual(decode_request(encode_request(message, compact=True)),
                         decode_request(encode_request(message)))

    @given(response_messages())
    def test_response_round_trip(self, message: Any) -> None:
        """
        The same for RESPONSE.
        """
        self.assertEqual(decode_response(encode_response(message, compact=True)),
                         decode_response(encode_response(message)))

    def test_layout(self) -> None:
        """
        The bytes are the documented layout: marker, flags, deadline, the
        lengths of params and claims JSON, the NUL-terminated strings, then
        params, claims and body.
        """
        m = RequestMessage("GET", "/a/\u00e9", "/a/{x}", {"x": "\u00e9"}, "q=1",
                           [("Accept", "*/*"), ("X-E", "\u00e9")], {"sub": "u"}, 12.5,
                           True, b"body")
        self.assertEqual(
            encode_request(m, compact=True),
            _compact_request(0x03, 12.5, "GET\0/a/\u00e9\0/a/{x}\0q=1\0Accept\0*/*\0X-E\0\u00e9\0"
                             .encode("utf-8"), b'{"x":"\xc3\xa9"}', b'{"sub":"u"}', b"body"))
        self.assertEqual(
            encode_request(RequestMessage("GET", "/", "/"), compact=True), _compact_request())
        r = ResponseMessage(404, [("Content-Type", "text/plain")], b"no", True)
        self.assertEqual(encode_response(r, compact=True),
                         _compact_response(404, 0x01, b"Content-Type\0text/plain\0", b"no"))

    def test_unwritable_messages_are_json(self) -> None:
        """
        A message the compact form cannot hold (a NUL in a string, a status
        over 16 bits) is written as JSON, which the decoders also read; so is
        one not asked for in compact form.
        """
        plain = RequestMessage("GET", "/", "/", headers=[("A", "b")])
        self.assertEqual(encode_request(plain, compact=True)[4], COMPACT_MARKER)
        self.assertEqual(encode_request(plain)[4:5], b"{")
        for m in (plain._replace(query="a\0b"), plain._replace(headers=[("A", "b\0")]),
                  plain._replace(path_params={"a": "\0"})):
            if m.path_params:
                self.assertEqual(encode_request(m, compact=True)[4], COMPACT_MARKER)
                self.assertEqual(decode_request(encode_request(m, compact=True)), m)
            else:
                self.assertEqual(encode_request(m, compact=True), encode_request(m), m)
        for r in (ResponseMessage(200, [("A", "\0")]), ResponseMessage(70000)):
            self.assertEqual(encode_response(r, compact=True), encode_response(r), r)
        self.assertEqual(encode_response(ResponseMessage(200), compact=True)[4], COMPACT_MARKER)

    def test_int_deadline_compact(self) -> None:
        """
        An C{int} deadline travels in the compact form as the same number.
        """
        m = decode_request(encode_request(RequestMessage("GET", "/", "/", deadline=5), True))
        self.assertEqual(m.deadline, 5.0)

    def test_decoded_fields(self) -> None:
        """
        Flags, deadline, params and claims decode to their fields; without
        the deadline flag the deadline is C{None} whatever the bytes hold.
        """
        m = decode_request(_compact_request(0x02, 7.25, b"POST\0/p\0/{a}\0x\0", b'{"a":"p"}',
                                            b'{"r":["x"]}', b"data"))
        self.assertEqual(m, RequestMessage("POST", "/p", "/{a}", {"a": "p"}, "x", [],
                                           {"r": ["x"]}, 7.25, False, b"data"))
        self.assertIsNone(decode_request(_compact_request(0x01, 7.25)).deadline)
        self.assertTrue(decode_request(_compact_request(0x01)).streaming)
        self.assertEqual(decode_response(_compact_response(204, 0x01, b"A\0\0")),
                         ResponseMessage(204, [("A", "")], b"", True))

    def test_malformed_requests(self) -> None:
        """
        Each way a compact REQUEST can be broken is a L{MalformedPayload}
        that says which.
        """
        cases = {
            "shorter than": _compact_request(length=3)[:7],
            "exceeds the": _compact_request(length=400),
            "fixed bytes": _compact_request(length=10),
            "exceed the compact header": _with_length(struct.pack(
                ">BBdII", COMPACT_MARKER, 0, 0.0, 64, 0) + b"GET\0/\0/\0\0"),
            "not UTF-8": _compact_request(text=b"GET\0/\xff\0/\0\0"),
            "lacks method": _compact_request(text=b"GET\0/\0/\0"),
            "NUL-terminated": _compact_request(text=b"GET\0/\0/\0\0A\0b"),
            "'Bad Name'": _compact_request(text=b"GET\0/\0/\0\0Bad Name\0b\0"),
            "invalid header 'A'": _compact_request(text=b"GET\0/\0/\0\0A\0b\rc\0"),
            "finite": _compact_request(0x02, float("nan")),
            "params must map": _compact_request(params=b'{"x":1}'),
            "params payload is not": _compact_request(params=b"{x"),
            "claims payload is not a JSON object": _compact_request(claims=b"[1]"),
        }
        for words, payload in cases.items():
            with self.assertRaises(MalformedPayload, msg=words) as raised:
                decode_request(payload)
            self.assertIn(words, str(raised.exception))

    def test_malformed_responses(self) -> None:
        """
        The same for a compact RESPONSE, and a status outside 200-599.
        """
        cases = {
            "fixed bytes": _compact_response(length=3),
            "exceeds the": _compact_response(length=99),
            "not a final HTTP status": _compact_response(status=199),
            "not UTF-8": _compact_response(text=b"A\0\xc3\0"),
            "NUL-terminated": _compact_response(text=b"A\0"),
            "invalid header 'A'": _compact_response(text="A\0\u0100\0".encode("utf-8")),
        }
        for words, payload in cases.items():
            with self.assertRaises(MalformedPayload, msg=words) as raised:
                decode_response(payload)
            self.assertIn(words, str(raised.exception))
        self.assertRaises(MalformedPayload, decode_response, _compact_response(status=600))

    @given(st.binary(max_size=120))
    def test_fuzz(self, junk: bytes) -> None:
        """
        Any bytes after a compact header's marker give a message or
        L{MalformedPayload}.
        """
        for decode in (decode_request, decode_response):
            for payload in (junk[:4] + bytes([COMPACT_MARKER]) + junk[4:],
                            len(junk).to_bytes(4, "big") + bytes([COMPACT_MARKER]) + junk):
                try:
                    decode(payload)
                except MalformedPayload:
                    pass

    def test_hello_ack_features(self) -> None:
        """
        The HELLO answer carries C{features} only when it has some, and an
        answer without them decodes to none.
        """
        ack = HelloAck(True, None, "gw", "eu1", (COMPACT_HEADERS,))
        self.assertEqual(decode_hello_ack(encode_hello_ack(ack)), ack)
        self.assertNotIn(b"features", encode_hello_ack(HelloAck(True, None, "gw", "eu1")))
        self.assertEqual(decode_hello_ack(b'{"accepted":true}').features, ())
        self.assertRaises(MalformedPayload, decode_hello_ack,
                          b'{"accepted":true,"features":"compact-headers"}')


class JsonDecodingTests(SynchronousTestCase):
    """
    Payload JSON is read with the decoder's scanner directly when the
    document is exactly one value, and with C{json} otherwise: what is
    accepted is exactly what C{json.loads} accepts (NaN and Infinity aside).
    """

    DOCUMENTS = [
        '{"a":1}', ' {"a":1}', '{"a":1}\n', '\t{"a": [1, 2.5, "x", null, true]} ',
        '{"a":1}x', '{"a":1}{"b":2}', '{"a":', '', ' ', '[1]', '"x"', '1', '{"a":NaN}',
        '{"a":Infinity}', '{"a":-Infinity}', '{"\\u00e9":"\\ud83d\\ude00"}', '{"a":1,}',
    ]

    def test_deep_nesting_is_malformed(self) -> None:
        """
        JSON nested deeper than the interpreter recurses (a hostile HELLO
        over TCP found it: a RecursionError and a traceback per connection)
        is a L{MalformedPayload} like any other bad payload.
        """
        doc = b'{"service":' + b"[" * 100000 + b"]" * 100000 + b"}"
        self.assertRaises(MalformedPayload, decode_hello, doc)
        from stellarouter.common.payloads._json import decode_json as _decode_json
        self.assertRaises(MalformedPayload, _decode_json, doc, "T")

    def test_same_as_json(self) -> None:
        from stellarouter.common.payloads._json import decode_json as _decode_json

        for doc in self.DOCUMENTS:
            try:
                expected = json.loads(doc, parse_constant=lambda c: 1 / 0)
            except (ValueError, ZeroDivisionError):
                expected = None
            if not isinstance(expected, dict):
                self.assertRaises(MalformedPayload, _decode_json, doc.encode(), "T")
            else:
                self.assertEqual(_decode_json(doc.encode(), "T"), expected, doc)

    @given(st.dictionaries(st.text(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=10)), st.sampled_from(["", " ", "\n"]), st.sampled_from(["", " ", "\r\n"]))
    def test_round_trip(self, obj: Any, before: str, after: str) -> None:
        from stellarouter.common.payloads._json import decode_json as _decode_json

        doc = before + json.dumps(obj, ensure_ascii=False) + after
        self.assertEqual(_decode_json(doc.encode(), "T"), obj)
