"""
Endpoint registration: a L{Microservice} collects raw and typed (JSON)
handlers into L{EndpointDescriptor}s and finds them again by
C{(method, path template)}.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING, Awaitable, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple,
    TypeVar,
)

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from ..common.interfaces import IRawStellaEndpoint
from ..common.models import (
    DEFAULT_TIMEOUT,
    ClaimRequirement,
    EndpointDescriptor,
    InstanceDescriptor,
    normalize_method,
    normalize_path_template,
    normalize_service_name,
    parse_version,
)
from ..common.payloads import MAX_TIMEOUT, endpoint_from_json, endpoint_to_json
from ..config.errors import ConfigError
from ..config.microservice import EndpointOverrideConfig
from .context import RawRequestContext, RawResponse, StreamingResponse
from .descriptions import DescriptionsKey, EndpointDoc, HelloDescriptions, endpoint_doc
from .errors import BadRequest
from .typed import body_reader, encode_result

if TYPE_CHECKING:
    from klein import Klein
    from twisted.internet.interfaces import IReactorTime

    from .klein_bridge import KleinBridge

Handler = Callable[[RawRequestContext], object]
F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class RegisteredEndpoint:
    """
    One endpoint: what HELLO announces and the callable that serves it.
    """

    descriptor: EndpointDescriptor
    handler: Handler


#: The exception a hand-written C{from_json} raised for a body that does not
#: fit, before L{BadRequest} was public; the same class now.
BadRequestBody = BadRequest


def typed_handler(
    handler: Callable[..., object],
    status: int,
    request_type: object,
) -> Handler:
    """
    Wrap a typed handler C{handler(ctx, payload)} into a raw one: the JSON
    body is read into C{request_type} (L{body_reader}; a body that does not
    fit raises L{BadRequest}, answered 400), the result is encoded as JSON
    with C{status} (or a L{JsonResponse}'s) by L{encode_result}.

    @raise ValueError: C{request_type} is neither a decodable type nor a
        callable.
    """
    read = body_reader(request_type)

    def raw(ctx: RawRequestContext) -> object:
        result = handler(ctx, read(ctx.body))
        if isinstance(result, Deferred):
            return result.addCallback(encode_result, status)
        if hasattr(result, "__await__"):
            return _encode_later(result, status)
        return encode_result(result, status)

    raw.__name__ = getattr(handler, "__name__", "typed_handler")
    raw.__doc__ = handler.__doc__
    return raw


async def _encode_later(awaitable: Awaitable[object],
                        status: int) -> "RawResponse | StreamingResponse":
    return encode_result(await awaitable, status)


def _claim_requirements(claims: Iterable[ClaimRequirement],
                        where: str) -> Tuple[ClaimRequirement, ...]:
    """
    Check an endpoint's C{claims} argument: an iterable of
    L{ClaimRequirement}s whose type is a non-empty string and whose value is
    C{None}, a string or a tuple of strings.

    @raise ValueError: naming C{where} and what is wrong.
    """
    hint = 'e.g. claims=[ClaimRequirement("scope", "billing:write")]'
    if isinstance(claims, (str, bytes, Mapping)) or not isinstance(claims, Iterable):
        raise ValueError(f"{where}: claims must be a list of ClaimRequirement, not "
                         f"{type(claims).__name__} {claims!r} ({hint})")
    result = tuple(claims)
    for claim in result:
        if not isinstance(claim, ClaimRequirement):
            raise ValueError(f"{where}: claims: {claim!r} is not a ClaimRequirement ({hint})")
        if not isinstance(claim.type, str) or not claim.type:
            raise ValueError(f"{where}: claims: {claim!r}: the claim type must be a "
                             "non-empty string")
        value = claim.value
        if not (value is None or isinstance(value, str) or (
                isinstance(value, tuple) and value and all(isinstance(v, str) for v in value))):
            raise ValueError(f"{where}: claims: {claim!r}: the value must be None, a string "
                             "or a non-empty tuple of strings (any of them)")
    return result


def merge_overrides(
    descriptors: Sequence[EndpointDescriptor],
    overrides: Sequence[EndpointOverrideConfig],
    source: str = "<config>",
) -> Tuple[EndpointDescriptor, ...]:
    """
    Apply YAML endpoint overrides to the endpoints the code defines: code
    says which endpoints exist, YAML may change their timeout, add claim
    requirements (or replace them with C{replace_claims: true}) and change
    C{supports_streaming} (how the gateway moves the bodies; the dispatcher
    hands the handler the body shape its code declared either way).

    @return: the merged descriptors, in the code's order (what HELLO sends).
    @raise ConfigError: an override names an endpoint the code does not
        define.
    """
    by_key = {(o.method, o.path): o for o in overrides}
    known = {d.key for d in descriptors}
    unknown = [f"endpoints: {m} {p} is not an endpoint of this service (it has: "
               f"{', '.join(f'{a} {b}' for a, b in sorted(known)) or 'none'})"
               for (m, p) in by_key if (m, p) not in known]
    if unknown:
        raise ConfigError(source, unknown)
    merged = []
    for descriptor in descriptors:
        override = by_key.get(descriptor.key)
        if override is not None:
            if override.replace_claims:
                claims = override.requiring_claims
            else:
                claims = descriptor.requiring_claims + tuple(
                    c for c in override.requiring_claims
                    if c not in descriptor.requiring_claims)
            descriptor = dataclasses.replace(
                descriptor,
                default_timeout=override.timeout or descriptor.default_timeout,
                requiring_claims=claims,
                supports_streaming=(descriptor.supports_streaming
                                    if override.supports_streaming is None
                                    else override.supports_streaming),
            )
        merged.append(descriptor)
    return tuple(merged)


class Microservice:
    """
    A microservice application: its identity and its endpoints.

    Usage::

        service = Microservice("billing", "1.0.0")

        @service.endpoint("GET", "/ping")
        def ping(ctx):
            return RawResponse.text("pong")

        @service.json("POST", "/invoices", status=201)
        async def create(ctx, payload):
            return {"id": "..."}
    """

    def __init__(self, name: str, version: str) -> None:
        """
        @param name: the service name, C{[a-z0-9][a-z0-9._-]*}.
        @param version: strict C{MAJOR.MINOR.PATCH}.
        @raise ValueError: an invalid name or version.
        """
        try:
            self.name = normalize_service_name(name)
            parse_version(version)
        except Exception as e:
            raise ValueError(str(e)) from None
        self.version = version
        self._endpoints: Dict[Tuple[str, str], RegisteredEndpoint] = {}
        #: Each endpoint's documentation (HELLO feature C{endpoint-schemas}).
        self.docs: Dict[Tuple[str, str], EndpointDoc] = {}
        #: The last HELLO descriptions built and what from
        #: (L{stellarouter.microservice.descriptions.schemas_for}).
        self.described: Optional[Tuple[DescriptionsKey, HelloDescriptions]] = None

    def _register(
        self,
        method: str,
        path: str,
        handler: Handler,
        timeout: float,
        streaming: bool,
        claims: Iterable[ClaimRequirement],
        max_request_bytes: Optional[int],
        idempotent: Optional[bool],
        doc: Optional[Callable[[str], EndpointDoc]] = None,
    ) -> None:
        """
        Check every argument and add the endpoint.

        @param doc: makes its documentation, given the endpoint's name for
            messages (L{endpoint_doc}).

        @raise ValueError: naming the endpoint and the argument at fault;
            an endpoint that passes can always be announced in HELLO.
        """
        where = f"{self.name} endpoint {method!r} {path!r}"
        try:
            method = normalize_method(method)
        except Exception as e:
            raise ValueError(f"{where}: method: {e}") from None
        where = f"{self.name} endpoint {method} {path!r}"
        try:
            path = normalize_path_template(path)
        except Exception as e:
            raise ValueError(f"{where}: path: {e}") from None
        where = f"{self.name} endpoint {method} {path}"
        if not callable(handler):
            raise ValueError(f"{where}: the handler {handler!r} is not callable")
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT):
            raise ValueError(f"{where}: timeout must be a number of seconds above 0 and at "
                             f"most {MAX_TIMEOUT:g}, not {timeout!r}")
        if not isinstance(streaming, bool):
            raise ValueError(f"{where}: streaming must be True or False, not {streaming!r}")
        requirements = _claim_requirements(claims, where)
        if max_request_bytes is not None and (
                isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int)
                or max_request_bytes < 0):
            raise ValueError(f"{where}: max_request_bytes must be None or an int >= 0, "
                             f"not {max_request_bytes!r}")
        if idempotent is not None and not isinstance(idempotent, bool):
            raise ValueError(f"{where}: idempotent must be None, True or False, "
                             f"not {idempotent!r}")
        if (method, path) in self._endpoints:
            raise ValueError(f"{where} is registered twice")
        descriptor = EndpointDescriptor(
            service_name=self.name,
            version=self.version,
            method=method,
            path=path,
            default_timeout=float(timeout),
            supports_streaming=streaming,
            requiring_claims=requirements,
            max_request_bytes=max_request_bytes,
            idempotent=idempotent,
        )
        # What HELLO will carry, read back as the gateway reads it: whatever
        # the checks above missed fails here, not at connect time.
        try:
            endpoint_from_json(json.loads(json.dumps(endpoint_to_json(descriptor))),
                               InstanceDescriptor("check", self.name, self.version, "check"),
                               where)
        except Exception as e:
            raise ValueError(f"{where}: cannot be announced in HELLO: {e}") from None
        self.docs[(method, path)] = (doc or (lambda _: endpoint_doc(handler)))(where)
        self._endpoints[(method, path)] = RegisteredEndpoint(descriptor, handler)

    def endpoint(
        self,
        method: str,
        path: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        streaming: bool = False,
        claims: Iterable[ClaimRequirement] = (),
        max_request_bytes: Optional[int] = None,
        idempotent: Optional[bool] = None,
        summary: Optional[str] = None,
        description: Optional[str] = None,
        tags: Iterable[str] = (),
        deprecated: bool = False,
        request_type: object = None,
        response_type: object = None,
        status: int = 200,
        parameters: Optional[Mapping[str, str]] = None,
    ) -> Callable[[F], F]:
        """
        Register a raw handler C{handler(ctx) -> RawResponse} (or a Deferred
        or coroutine resolving to one).

        @param timeout: the endpoint's default timeout, seconds (at most a day).
        @param streaming: the handler reads C{ctx.body} as a L{BodyStream}.
        @param claims: L{ClaimRequirement}s the gateway enforces.
        @param max_request_bytes: a tighter request-size limit, or C{None}.
        @param idempotent: C{None}: by method.
        @param summary: for the gateway's OpenAPI document (default: the
            docstring's first paragraph); C{description} (default: the rest
            of the docstring), C{tags}, C{deprecated}, C{parameters} (path
            parameter descriptions) likewise.
        @param request_type: documentation only (a raw handler reads
            C{ctx.body} itself): the JSON body it expects.
        @param response_type: documentation only: the JSON body of a
            success, answered with C{status}.
        @raise ValueError: a bad argument (method, path, timeout, claims,
            ...) or a duplicate endpoint, naming the endpoint and the
            argument.
        """

        def register(handler: F) -> F:
            self._register(
                method, path, handler, timeout, streaming, claims,
                max_request_bytes, idempotent,
                lambda where: endpoint_doc(
                    handler, summary=summary, description=description, tags=tags,
                    deprecated=deprecated, request_type=request_type,
                    response_type=response_type, status=status, parameters=parameters,
                    where=where),
            )
            return handler

        return register

    def json(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        request_type: object = None,
        timeout: float = DEFAULT_TIMEOUT,
        claims: Iterable[ClaimRequirement] = (),
        max_request_bytes: Optional[int] = None,
        idempotent: Optional[bool] = None,
        summary: Optional[str] = None,
        description: Optional[str] = None,
        tags: Iterable[str] = (),
        deprecated: bool = False,
        response_type: object = None,
        parameters: Optional[Mapping[str, str]] = None,
    ) -> Callable[[F], F]:
        """
        Register a typed handler C{handler(ctx, payload) -> object}.

        The SDK reads the JSON body into C{request_type}: a dataclass, an
        attrs class, a C{TypedDict}, a C{msgspec.Struct} or a container of
        them (C{list[Item]}), decoded and validated by msgspec; or a
        callable C{from_json(obj)} given the parsed JSON; or, without
        C{request_type}, the parsed JSON itself (C{None} for an empty body).
        A body that does not fit is answered 400 naming the field
        (C{$.amount_cents: expected int, got str}).  The result (a
        dataclass, attrs, Struct, dict, list, ...) is encoded as JSON with
        C{status}; return a L{JsonResponse} for another status or extra
        headers, raise a L{Problem} for an error.  A tuple result is
        refused (500, logged): C{({...}, 404)} is not a status.

        @param status: the status of a plain result, 200-599.
        @param response_type: the result's type, for the gateway's OpenAPI
            document (default: the handler's return annotation when it is a
            type msgspec describes); C{summary}, C{description}, C{tags},
            C{deprecated}, C{parameters}: as L{endpoint}.
        @raise ValueError: a bad argument (method, path, status,
            request_type, timeout, claims, ...) or a duplicate endpoint,
            naming the endpoint and the argument.
        """
        where = f"{self.name} endpoint {method} {path}"
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"{where}: status must be an int from 200 to 599, not {status!r}")
        try:
            body_reader(request_type)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

        def register(handler: F) -> F:
            if not callable(handler):
                raise ValueError(f"{where}: the handler {handler!r} is not callable")
            self._register(
                method, path, typed_handler(handler, status, request_type), timeout,
                False, claims, max_request_bytes, idempotent,
                lambda where: endpoint_doc(
                    handler, summary=summary, description=description, tags=tags,
                    deprecated=deprecated, request_type=request_type,
                    response_type=response_type, status=status, parameters=parameters,
                    where=where),
            )
            return handler

        return register

    def add(self, endpoint: IRawStellaEndpoint) -> None:
        """
        Register a class-based endpoint providing L{IRawStellaEndpoint}.

        @raise ValueError: a bad or duplicate endpoint.
        """
        try:
            verifyObject(IRawStellaEndpoint, endpoint)
        except Exception as e:
            raise ValueError(f"{self.name}: {endpoint!r} does not provide "
                             f"IRawStellaEndpoint: {e}") from None
        d = endpoint.descriptor
        self._register(
            d.method, d.path, endpoint.handle, d.default_timeout, d.supports_streaming,
            d.requiring_claims, d.max_request_bytes, d.idempotent,
            lambda where: endpoint_doc(endpoint, where=where),
        )

    def mount_klein(
        self,
        app: Klein,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        claims: Iterable[ClaimRequirement] = (),
        max_request_bytes: Optional[int] = None,
        reactor: Optional[IReactorTime] = None,
    ) -> KleinBridge:
        """
        Serve an unmodified Klein app through this service: each of its
        routes becomes an endpoint per method (C{<x>} → C{{x}},
        C{<path:x>} and C{branch=True} → a catch-all C{{*x}}), and each
        request runs the app's own code on a real twisted.web request
        (L{stellarouter.microservice.klein_bridge}; docs/router/migration.md).

        @param app: a L{klein.Klein} app.
        @param timeout: the endpoints' timeout (YAML may override one).
        @param claims: claim requirements of every endpoint (YAML may add
            per endpoint).
        @param max_request_bytes: a tighter body limit (bodies are buffered
            into C{request.content}).
        @param reactor: provides C{IReactorTime} (default: the global
            reactor, at the first request).
        @return: the L{KleinBridge<stellarouter.microservice.klein_bridge.KleinBridge>}.
        @raise ValueError: a route that cannot be an endpoint, or one taken
            already, naming it.
        """
        from .klein_bridge import KleinBridge, route_templates

        bridge = KleinBridge(app, reactor)
        for method, template in route_templates(app):
            self._register(method, template, bridge.handle, timeout, False, claims,
                           max_request_bytes, None)
        return bridge

    def descriptors(self) -> Tuple[EndpointDescriptor, ...]:
        """
        Every endpoint, in registration order (what HELLO announces).
        """
        return tuple(e.descriptor for e in self._endpoints.values())

    def lookup(self, method: str, template: str) -> Optional[RegisteredEndpoint]:
        """
        The endpoint registered for C{(method, template)}, or C{None}.
        """
        return self._endpoints.get((method, template))
