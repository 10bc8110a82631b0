"""
Endpoint registration: a L{Microservice} collects raw and typed (JSON)
handlers into L{EndpointDescriptor}s and finds them again by
C{(method, path template)}.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, TypeVar

from zope.interface.verify import verifyObject

from ..common.interfaces import IRawStellaEndpoint
from ..common.models import (
    DEFAULT_TIMEOUT,
    ClaimRequirement,
    EndpointDescriptor,
    normalize_method,
    normalize_path_template,
    normalize_service_name,
    parse_version,
)
from ..common.problems import PROBLEM_CONTENT_TYPE, problem_body
from ..config.errors import ConfigError
from ..config.microservice import EndpointOverrideConfig
from .context import JsonResponse, RawRequestContext, RawResponse

Handler = Callable[[RawRequestContext], Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegisteredEndpoint:
    """
    One endpoint: what HELLO announces and the callable that serves it.
    """

    descriptor: EndpointDescriptor
    handler: Handler


class BadRequestBody(Exception):
    """
    A typed endpoint could not turn the request body into its input; the
    SDK answers 400 with the message.
    """


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def typed_handler(
    handler: Callable[[RawRequestContext, Any], Any],
    status: int,
    request_type: Optional[Callable[[Any], Any]],
) -> Handler:
    """
    Wrap a typed handler C{handler(ctx, payload)} into a raw one: the JSON
    body is parsed (and passed through C{request_type} when given), the
    result is encoded as JSON with C{status} (or a L{JsonResponse}'s).
    """

    def encode(result: Any) -> RawResponse:
        if isinstance(result, RawResponse):
            return result
        if isinstance(result, JsonResponse):
            extra = result.headers
            headers = (("Content-Type", "application/json"),) + tuple(
                extra.items() if isinstance(extra, Mapping) else extra)
            return RawResponse(
                result.status,
                headers,
                json.dumps(_to_jsonable(result.body), separators=(",", ":")).encode(),
            )
        return RawResponse.json(_to_jsonable(result), status)

    def raw(ctx: RawRequestContext) -> Any:
        payload: Any = None
        if ctx.body:
            try:
                payload = json.loads(ctx.body)
            except ValueError as e:
                return _bad_request(ctx, f"request body is not valid JSON: {e}")
            except RecursionError:
                # Nested deeper than the interpreter recurses: the client's
                # fault, not ours.
                return _bad_request(ctx, "request body is JSON nested too deeply")
        if request_type is not None:
            try:
                payload = request_type(payload)
            except (TypeError, ValueError, KeyError, BadRequestBody) as e:
                return _bad_request(ctx, f"request body does not fit: {e}")
        result = handler(ctx, payload)
        if hasattr(result, "addCallback"):
            return result.addCallback(encode)
        if hasattr(result, "__await__"):
            return _encode_later(result, encode)
        return encode(result)

    raw.__name__ = getattr(handler, "__name__", "typed_handler")
    raw.__doc__ = handler.__doc__
    return raw


async def _encode_later(awaitable: Any, encode: Callable[[Any], RawResponse]) -> RawResponse:
    return encode(await awaitable)


def _bad_request(ctx: RawRequestContext, detail: str) -> RawResponse:
    return RawResponse(
        400,
        (("Content-Type", PROBLEM_CONTENT_TYPE),),
        problem_body(400, "bad-request", "Bad request", detail, ctx.correlation_id),
    )


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
    ) -> None:
        try:
            method = normalize_method(method)
            path = normalize_path_template(path)
        except Exception as e:
            raise ValueError(str(e)) from None
        if timeout <= 0:
            raise ValueError(f"{method} {path}: timeout must be positive")
        if (method, path) in self._endpoints:
            raise ValueError(f"{method} {path} is registered twice")
        descriptor = EndpointDescriptor(
            service_name=self.name,
            version=self.version,
            method=method,
            path=path,
            default_timeout=timeout,
            supports_streaming=streaming,
            requiring_claims=tuple(claims),
            max_request_bytes=max_request_bytes,
            idempotent=idempotent,
        )
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
    ) -> Callable[[F], F]:
        """
        Register a raw handler C{handler(ctx) -> RawResponse} (or a Deferred
        or coroutine resolving to one).

        @param timeout: the endpoint's default timeout, seconds.
        @raise ValueError: a bad method or path, or a duplicate endpoint.
        """

        def register(handler: F) -> F:
            self._register(
                method, path, handler, timeout, streaming, claims,
                max_request_bytes, idempotent,
            )
            return handler

        return register

    def json(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        request_type: Optional[Callable[[Any], Any]] = None,
        timeout: float = DEFAULT_TIMEOUT,
        claims: Iterable[ClaimRequirement] = (),
        max_request_bytes: Optional[int] = None,
        idempotent: Optional[bool] = None,
    ) -> Callable[[F], F]:
        """
        Register a typed handler C{handler(ctx, payload) -> object}: the SDK
        parses the JSON body (through C{request_type} when given; a failure
        there is a 400) and encodes the result as JSON with C{status}.  A
        dataclass result is encoded with C{dataclasses.asdict}; return a
        L{JsonResponse} for another status or extra headers.

        @raise ValueError: a bad method or path, or a duplicate endpoint.
        """

        def register(handler: F) -> F:
            self._register(
                method, path, typed_handler(handler, status, request_type), timeout,
                False, claims, max_request_bytes, idempotent,
            )
            return handler

        return register

    def add(self, endpoint: IRawStellaEndpoint) -> None:
        """
        Register a class-based endpoint providing L{IRawStellaEndpoint}.

        @raise ValueError: a bad or duplicate endpoint.
        """
        verifyObject(IRawStellaEndpoint, endpoint)
        d = endpoint.descriptor
        self._register(
            d.method, d.path, endpoint.handle, d.default_timeout, d.supports_streaming,
            d.requiring_claims, d.max_request_bytes, d.idempotent,
        )

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
