"""
The microservice's configuration: which app, its instance identity and the
routers it dials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.models import ClaimRequirement, identity_problem
from ..common.payloads import STREAM_WINDOW
from ..common.addresses import parse_amqp_address, parse_udp_address
from .endpoints import check_client_endpoint
from .env import MICRO_PREFIX, apply_env_overrides
from ..common.redaction import redact_text
from .errors import ConfigError
from .observability import AccessLogConfig, read_access_log
from .reader import (
    Reader,
    non_empty,
    positive,
    read_claims,
    read_endpoint_key,
    read_path,
    quote,
    read_yaml,
)

#: Transports a microservice can dial today.
SUPPORTED_ROUTERS = (TransportType.TCP, TransportType.TLS, TransportType.UDP,
                     TransportType.RABBITMQ, TransportType.INMEMORY)

_APP = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


@dataclass(frozen=True)
class RouterEndpointConfig:
    """
    One router to connect to.

    @ivar address: a client endpoint string (TCP) or a name (in-memory).
    @ivar compact_headers: offer compact REQUEST/RESPONSE headers (C{False}:
        JSON headers, readable in a packet capture).
    """

    transport: TransportType
    address: str
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    tls: Optional["TLSRouterConfig"] = None
    compact_headers: bool = True


@dataclass(frozen=True)
class TLSRouterConfig:
    """
    TLS settings for dialling a C{tls} router.

    @ivar server_name: the name the gateway's certificate must carry.
    @ivar ca: the CA that signed the gateway's certificate.
    @ivar certificate: this microservice's client certificate (mutual TLS).
    """

    server_name: str
    ca: str
    certificate: Optional[str] = None
    private_key: Optional[str] = None


@dataclass(frozen=True)
class EndpointOverrideConfig:
    """
    A YAML override of one endpoint the code defines.

    @ivar requiring_claims: added to the code's claims, or replacing them
        when C{replace_claims} is set.
    @ivar supports_streaming: if set, what HELLO announces instead of the
        code's choice (how the gateway moves the bodies); the handler keeps
        the body shape it was written for.
    """

    method: str
    path: str
    timeout: Optional[float] = None
    requiring_claims: Tuple[ClaimRequirement, ...] = ()
    replace_claims: bool = False
    supports_streaming: Optional[bool] = None


@dataclass(frozen=True)
class MicroserviceConfig:
    """
    Everything C{twistd stella-micro} needs besides the app's code.

    @ivar app: C{"module:attribute"} naming the L{Microservice}.
    @ivar instance_id: C{None} means generated at start.
    @ivar drain_grace_period: on stop, how long requests in flight may take
        to finish (seconds) before they are cancelled.
    @ivar reactor: C{"asyncio"}: the app needs Twisted's asyncio reactor
        (its handlers await asyncio libraries); C{None}: any reactor.
    """

    region: str
    routers: Tuple[RouterEndpointConfig, ...]
    app: Optional[str] = None
    instance_id: Optional[str] = None
    heartbeat_interval: float = 5.0
    drain_grace_period: float = 30.0
    endpoints: Tuple[EndpointOverrideConfig, ...] = ()
    #: Streamed response bytes sent and not yet credited back by a gateway,
    #: across all streams and routers; beyond it streams wait.
    max_response_buffer_bytes: int = 32 * 1024 * 1024
    #: Stop the process (exit status 1) after this many HELLO rejections in
    #: a row from one router; C{None}: keep trying (with a backoff that
    #: grows to a minute).
    max_hello_rejections: Optional[int] = None
    reactor: Optional[str] = None
    #: One line per request served (same correlation id as the gateway's).
    access_log: AccessLogConfig = AccessLogConfig()
    #: Requests in flight at most per gateway connection; more are answered
    #: 503 "not started" and the gateway sends them to another instance
    #: (issue 24).  C{None}: no limit.
    max_concurrent_requests: Optional[int] = None


#: The values of the microservice's C{reactor} key.
REACTORS = ("asyncio",)


def check_app_reference(value: str) -> Optional[str]:
    """
    @return: why C{value} is not C{module:attribute}, or C{None}.
    """
    return None if _APP.match(value) else f"{quote(value)} is not 'module:attribute'"


def parse_microservice_config(document: object, source: str = "<config>") -> MicroserviceConfig:
    """
    Validate a parsed YAML document.

    @raise ConfigError: listing every problem found.
    """
    r = Reader(source)
    if document is None:
        r.problem("", "the file is empty; at least 'region' and 'routers' are needed")
    top = r.mapping(document, "", ["app", "instance_id", "region", "heartbeat_interval",
                                   "drain_grace_period", "routers", "endpoints",
                                   "max_response_buffer_bytes", "max_hello_rejections",
                                   "reactor", "access_log",
                                   "max_concurrent_requests"])
    app = r.get(top, "app", "", str, None, check_app_reference)
    instance_id = r.get(top, "instance_id", "", str, None, identity_problem)
    region = r.get(top, "region", "", str, check=identity_problem)
    interval = r.get(top, "heartbeat_interval", "", float, 5.0, positive)
    grace = r.get(top, "drain_grace_period", "", float, 30.0,
                  lambda v: None if v >= 0 else "must not be negative")
    reactor = r.get(top, "reactor", "", str, None,
                    lambda v: None if v in REACTORS else
                    f"{v!r} is not 'asyncio' (leave the key out to run on whichever reactor "
                    "twistd installs)")
    routers = []
    raw_routers = r.items(top, "routers", "", required=False)
    if not raw_routers and "routers" not in top:
        r.problem("routers", "is required: a microservice needs at least one router to connect to "
                  "(e.g. routers: [{transport: tcp, address: 'tcp:host=127.0.0.1:port=5100'}])")
    elif not raw_routers:
        r.problem("routers", "must list at least one router")
    for i, item in enumerate(raw_routers):
        where = f"routers[{i}]"
        raw = r.mapping(item, where, ["transport", "address", "max_frame_bytes", "server_name",
                                      "ca", "certificate", "private_key", "compact_headers"])
        kind = _router_type(r, raw, where)
        tls = None
        if kind is TransportType.TLS:
            server_name = r.get(raw, "server_name", where, str, check=non_empty)
            ca = read_path(r, raw, "ca", where, source, required=True)
            certificate = read_path(r, raw, "certificate", where, source)
            private_key = read_path(r, raw, "private_key", where, source)
            if (certificate is None) != (private_key is None) and not r.problems:
                r.problem(where, "certificate and private_key go together")
            if server_name is not None and ca is not None:
                tls = TLSRouterConfig(server_name, ca, certificate, private_key)
        else:
            for setting in ("server_name", "ca", "certificate", "private_key"):
                if setting in raw:
                    r.problem(f"{where}.{setting}", "only a tls router takes TLS settings")
        check = (non_empty if kind is TransportType.INMEMORY else
                 _udp_address_problem if kind is TransportType.UDP else
                 _amqp_address_problem if kind is TransportType.RABBITMQ else
                 check_client_endpoint)
        address = r.get(raw, "address", where, str, check=check)
        max_frame = r.get(raw, "max_frame_bytes", where, int, DEFAULT_MAX_FRAME_BYTES,
                          lambda v: None if v >= 65536 else "must be at least 65536")
        compact = r.get(raw, "compact_headers", where, bool, True)
        if kind is not None and address is not None:
            routers.append(RouterEndpointConfig(kind, address, max_frame, tls, compact))
    overrides = []
    keys = set()
    for i, entry in enumerate(r.items(top, "endpoints", "")):
        at = f"endpoints[{i}]"
        obj = r.mapping(entry, at, ["method", "path", "timeout", "requiring_claims",
                                    "replace_claims", "supports_streaming"])
        key = read_endpoint_key(r, obj, at)
        timeout = r.get(obj, "timeout", at, float, None,
                        lambda v: None if 0 < v <= 86400 else "must be in (0, 86400]")
        claims = read_claims(r, obj.get("requiring_claims"), f"{at}.requiring_claims")
        replace = r.get(obj, "replace_claims", at, bool, False)
        streaming = r.get(obj, "supports_streaming", at, bool, None)
        if key is None:
            continue
        if key in keys:
            r.problem(at, f"{key[0]} {key[1]} is overridden twice")
        keys.add(key)
        overrides.append(EndpointOverrideConfig(key[0], key[1], timeout, claims, replace,
                                                streaming))
    rejections = r.get(top, "max_hello_rejections", "", int, None,
                       lambda v: None if v >= 1 else "must be at least 1")
    access_log = read_access_log(r, top.get("access_log"))
    concurrency = r.get(top, "max_concurrent_requests", "", int, None,
                        lambda v: None if v >= 1 else "must be at least 1")
    r.finish()
    response_buffer = r.get(top, "max_response_buffer_bytes", "", int,
                            MicroserviceConfig.max_response_buffer_bytes,
                            lambda v: None if v >= STREAM_WINDOW
                            else f"must be at least {STREAM_WINDOW} (one stream window)")
    return MicroserviceConfig(region, tuple(routers), app, instance_id, interval, grace,
                              tuple(overrides), max_response_buffer_bytes=response_buffer,
                              max_hello_rejections=rejections, reactor=reactor,
                              access_log=access_log,
                              max_concurrent_requests=concurrency)


def _amqp_address_problem(value: str) -> Optional[str]:
    try:
        parse_amqp_address(value, gateway_required=True)
    except ValueError as e:
        return redact_text(str(e))
    return None


def _udp_address_problem(value: str) -> Optional[str]:
    try:
        parse_udp_address(value, server=False)
    except ValueError as e:
        return redact_text(str(e))
    return None


def _router_type(r: Reader, raw: Mapping[str, object], where: str) -> Optional[TransportType]:
    name = r.get(raw, "transport", where, str)
    if name is None:
        return None
    try:
        kind = TransportType(name)
    except ValueError:
        names = ", ".join(t.value for t in TransportType)
        r.problem(f"{where}.transport", f"{quote(name)} is not one of {names}")
        return None
    if kind not in SUPPORTED_ROUTERS:
        supported = ", ".join(t.value for t in SUPPORTED_ROUTERS)
        r.problem(f"{where}.transport", f"{quote(name)} is not implemented yet (available: {supported})")
        return None
    return kind


def load_microservice_config(
    path: str, environ: Optional[Mapping[str, str]] = None
) -> MicroserviceConfig:
    """
    Read a microservice YAML file, apply C{STELLAROUTER_MICRO__*}
    environment overrides, and validate the result.

    @param environ: the environment (default: C{os.environ}).
    @raise ConfigError: unreadable file, invalid YAML, or invalid content.
    """
    document, _, problems = apply_env_overrides(
        read_yaml(path), os.environ if environ is None else environ, MICRO_PREFIX)
    if problems:
        raise ConfigError(path, problems)
    return parse_microservice_config(document, path)
