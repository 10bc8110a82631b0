"""
Reading the gateway's configuration (spec section 7): a YAML document, with
C{STELLAROUTER_*} environment overrides, checked field by field into the
frozen sections of L{stellarouter.config.gateway_model} (re-exported here),
every problem reported at once as a L{ConfigError}.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Dict, List, Mapping, Optional, Tuple, TypedDict, cast

from jwt import PyJWKSet

from ..common.enums import TransportType
from ..common.frames import DEFAULT_MAX_FRAME_BYTES
from ..common.errors import InvalidDescriptor
from ..common.models import (
    PayloadLimits,
    RegistrationLimits,
    identity_problem,
    normalize_service_name,
    parse_version,
)
from ..common.payloads import STREAM_WINDOW
from ..common.addresses import MAX_DATAGRAM_BYTES, parse_amqp_address, parse_udp_address
from .admin import health_detail_problem, read_admin
from .endpoints import check_server_endpoint
from .env import GATEWAY_PREFIX, MICRO_PREFIX, apply_env_overrides
from ..common.redaction import redact_text
from .errors import ConfigError
from .gateway_model import (
    AuthConfig,
    BuffersConfig,
    EndpointOverride,
    GatewayConfig,
    HealthConfig,
    HttpConfig,
    NodeConfig,
    SUPPORTED_LISTENERS,
    ServiceConfig,
    StaticInstance,
    TLSListenerConfig,
    TransportListenerConfig,
)
from .observability import read_access_log, read_metrics
from .openapi import read_openapi
from .resilience import read_outlier_detection, read_retries
from .reader import (
    MAX_CONFIG_BYTES,
    Reader,
    non_empty,
    positive,
    read_claims,
    read_endpoint_key,
    read_path,
    quote,
    read_yaml,
)

def parse_gateway_config(document: object, source: str = "<config>") -> GatewayConfig:
    """
    Validate a parsed YAML document.

    @raise ConfigError: listing every problem found.
    """
    r = Reader(source)
    top = r.mapping(document, "", ["node", "http", "transports", "payload_limits", "health",
                                   "services", "static_instances", "auth", "buffers",
                                   "registration", "admin", "access_log", "metrics",
                                   "retries", "outlier_detection", "openapi"])
    if document is None:
        r.problem("", "the file is empty; at least 'node.region' and 'transports' are needed")

    node_raw = r.mapping(top.get("node"), "node",
                         ["node_id", "region", "neighbor_regions", "environment"])
    # Regions and expected instance ids are compared with what HELLOs
    # announce, which must pass identity_problem: anything else never matches.
    region = r.get(node_raw, "region", "node", str, check=identity_problem)
    node_id = r.get(node_raw, "node_id", "node", str, socket.gethostname(), non_empty)
    neighbors: List[str] = []
    for i, item in enumerate(r.items(node_raw, "neighbor_regions", "node")):
        problem = identity_problem(item)
        if problem is None:
            neighbors.append(cast(str, item))
        else:
            r.problem(f"node.neighbor_regions[{i}]", problem)
    environment = r.get(node_raw, "environment", "node", str, "production")

    http_raw = r.mapping(top.get("http"), "http", [
        "listen", "access_log", "request_head_timeout", "max_header_bytes", "max_connections",
        "reserved_descriptors", "backlog", "health_detail"] + _HTTP_REQUEST_KEYS)
    http = HttpConfig(
        listen=r.get(http_raw, "listen", "http", str, HttpConfig.listen, check_server_endpoint),
        access_log=r.get(http_raw, "access_log", "http", bool, None),
        request_head_timeout=r.get(http_raw, "request_head_timeout", "http", float,
                                   HttpConfig.request_head_timeout, positive),
        max_header_bytes=r.get(http_raw, "max_header_bytes", "http", int,
                               HttpConfig.max_header_bytes,
                               lambda v: None if 1024 <= v <= 1048576
                               else "must be in [1024, 1048576]"),
        max_connections=r.get(http_raw, "max_connections", "http", int, None,
                              lambda v: None if v >= 1 else "must be at least 1"),
        reserved_descriptors=r.get(http_raw, "reserved_descriptors", "http", int,
                                   HttpConfig.reserved_descriptors,
                                   lambda v: None if v >= 0 else "must be at least 0"),
        backlog=r.get(http_raw, "backlog", "http", int, HttpConfig.backlog,
                      lambda v: None if 1 <= v <= 65535 else "must be in [1, 65535]"),
        health_detail=r.get(http_raw, "health_detail", "http", str, HttpConfig.health_detail,
                            health_detail_problem),
        **_read_http_request_settings(r, http_raw),
    )

    transports = []
    for i, item in enumerate(r.items(top, "transports", "", required=True)):
        where = f"transports[{i}]"
        raw = r.mapping(item, where, ["type", "listen", "max_frame_bytes", "certificate",
                                      "private_key", "client_ca", "require_client_certificate",
                                      "allowed_client_names", "max_datagram_bytes",
                                      "idle_timeout"])
        kind = _transport_type(r, raw, where)
        check = (non_empty if kind is TransportType.INMEMORY else
                 _udp_listen_problem if kind is TransportType.UDP else
                 _amqp_listen_problem if kind is TransportType.RABBITMQ else
                 check_server_endpoint)
        listen = r.get(raw, "listen", where, str, check=check)
        if kind is TransportType.UDP:
            if "max_frame_bytes" in raw:
                r.problem(f"{where}.max_frame_bytes", "a udp listener has max_datagram_bytes")
            max_frame = r.get(raw, "max_datagram_bytes", where, int, MAX_DATAGRAM_BYTES,
                              lambda v: None if 1024 <= v <= MAX_DATAGRAM_BYTES
                              else f"must be in [1024, {MAX_DATAGRAM_BYTES}]")
        else:
            for setting in ("max_datagram_bytes",) + (
                    () if kind is TransportType.RABBITMQ else ("idle_timeout",)):
                if setting in raw:
                    r.problem(f"{where}.{setting}", "only a udp listener takes it")
            max_frame = r.get(raw, "max_frame_bytes", where, int, DEFAULT_MAX_FRAME_BYTES,
                              lambda v: None if v >= 65536 else "must be at least 65536")
        idle = r.get(raw, "idle_timeout", where, float, 90.0, positive)
        tls = None
        if kind is TransportType.TLS:
            tls = _read_tls_listener(r, raw, where, source)
        else:
            for setting in ("certificate", "private_key", "client_ca",
                            "require_client_certificate", "allowed_client_names"):
                if setting in raw:
                    r.problem(f"{where}.{setting}", "only a tls listener takes TLS settings")
        if kind is not None and listen is not None:
            transports.append(TransportListenerConfig(kind, listen, max_frame, tls, idle))

    limits_raw = r.mapping(top.get("payload_limits"), "payload_limits", [
        "max_request_bytes_per_call", "max_request_bytes_per_connection",
        "max_aggregate_inflight_bytes"])
    defaults = PayloadLimits()
    limits = PayloadLimits(*(
        r.get(limits_raw, name, "payload_limits", int, getattr(defaults, name), positive)
        for name in ("max_request_bytes_per_call", "max_request_bytes_per_connection",
                     "max_aggregate_inflight_bytes")
    ))
    health_raw = r.mapping(top.get("health"), "health", [
        "degraded_after", "unhealthy_after", "sweep_interval", "ping_interval",
        "close_unhealthy_after"])
    health_defaults = HealthConfig()
    health = HealthConfig(*(
        r.get(health_raw, name, "health", float, getattr(health_defaults, name), positive)
        for name in ("degraded_after", "unhealthy_after", "sweep_interval", "ping_interval",
                     "close_unhealthy_after")
    ))
    if health.unhealthy_after < health.degraded_after:
        r.problem("health.unhealthy_after",
                  f"{health.unhealthy_after:g} must not be below degraded_after "
                  f"{health.degraded_after:g}")

    services = []
    seen = set()
    for i, item in enumerate(r.items(top, "services", "")):
        where = f"services[{i}]"
        raw = r.mapping(item, where, ["name", "default_version", "endpoints",
                                      "allowed_versions"])
        name = r.get(raw, "name", where, str, check=_service_name_problem)
        version = r.get(raw, "default_version", where, str, None, _version_problem)
        allowed_versions = _read_allowed_versions(r, raw, where, version)
        overrides = []
        keys = set()
        for j, entry in enumerate(r.items(raw, "endpoints", where)):
            at = f"{where}.endpoints[{j}]"
            obj = r.mapping(entry, at, ["method", "path", "timeout", "requiring_claims",
                                        "supports_streaming", "forward_authorization",
                                        "idempotent"])
            streaming = r.get(obj, "supports_streaming", at, bool, None)
            if streaming is True:
                r.problem(f"{at}.supports_streaming",
                          "the gateway can only turn streaming off (false); turning it on "
                          "is the instance's to announce (the microservice's endpoints)")
            key = read_endpoint_key(r, obj, at)
            timeout = r.get(obj, "timeout", at, float, None,
                            lambda v: None if 0 < v <= 86400 else "must be in (0, 86400]")
            claims = read_claims(r, obj.get("requiring_claims"), f"{at}.requiring_claims")
            if key is None:
                continue
            if key in keys:
                r.problem(at, f"{key[0]} {key[1]} is overridden twice")
            keys.add(key)
            overrides.append(EndpointOverride(
                key[0], key[1], timeout, claims, streaming is False,
                r.get(obj, "forward_authorization", at, bool, True),
                r.get(obj, "idempotent", at, bool, None)))
        if name is not None:
            name = name.lower()
            if name in seen:
                r.problem(f"{where}.name", f"service {quote(name)} is configured twice")
            seen.add(name)
            services.append(ServiceConfig(name, version, tuple(overrides), allowed_versions))
    statics = []
    expected = set()
    for i, item in enumerate(r.items(top, "static_instances", "")):
        where = f"static_instances[{i}]"
        raw = r.mapping(item, where, ["service", "instance_id", "version", "region"])
        service = r.get(raw, "service", where, str, check=_service_name_problem)
        instance_id = r.get(raw, "instance_id", where, str, check=identity_problem)
        expected_version = r.get(raw, "version", where, str, None, _version_problem)
        expected_region = r.get(raw, "region", where, str, None, identity_problem)
        if service is None or instance_id is None:
            continue
        static = StaticInstance(service.lower(), instance_id, expected_version, expected_region)
        if static.name in expected:
            r.problem(where, f"{static.name} is listed twice")
        expected.add(static.name)
        statics.append(static)
    auth = _read_auth(r, top.get("auth"), source)
    buffers = _read_buffers(r, top.get("buffers"))
    registration = _read_registration(r, top.get("registration"))
    openapi = read_openapi(r, top.get("openapi"))
    admin = read_admin(r, top.get("admin"), auth.enabled)
    access_log = read_access_log(r, top.get("access_log"), http.access_log)
    metrics = read_metrics(r, top.get("metrics"))
    retries = read_retries(r, top.get("retries"))
    outlier_detection = read_outlier_detection(r, top.get("outlier_detection"))
    r.finish()
    return GatewayConfig(
        node=NodeConfig(region, node_id, tuple(neighbors), environment),
        http=http,
        transports=tuple(transports),
        payload_limits=limits,
        health=health,
        services=tuple(services),
        auth=auth,
        static_instances=tuple(statics),
        buffers=buffers,
        registration=registration,
        openapi=openapi,
        admin=admin,
        access_log=access_log,
        metrics=metrics,
        retries=retries,
        outlier_detection=outlier_detection,
    )


def _read_buffers(r: Reader, raw: object) -> BuffersConfig:
    obj = r.mapping(raw, "buffers", ["max_response_bytes", "max_unsent_bytes_per_connection",
                                     "stalled_close_after"])
    defaults = BuffersConfig()
    at_least_a_window = (lambda v: None if v >= STREAM_WINDOW
                         else f"must be at least {STREAM_WINDOW} (one stream window)")
    return BuffersConfig(
        r.get(obj, "max_response_bytes", "buffers", int, defaults.max_response_bytes,
              at_least_a_window),
        r.get(obj, "max_unsent_bytes_per_connection", "buffers", int,
              defaults.max_unsent_bytes_per_connection, at_least_a_window),
        r.get(obj, "stalled_close_after", "buffers", float, defaults.stalled_close_after,
              positive),
    )


def _read_allowed_versions(r: Reader, raw: Mapping[str, object], where: str,
                           default: Optional[str]) -> Tuple[str, ...]:
    versions: List[str] = []
    for j, item in enumerate(r.items(raw, "allowed_versions", where)):
        problem = _version_problem(item) if isinstance(item, str) else (
            f"must be a MAJOR.MINOR.PATCH string, not {quote(item)}")
        if problem is not None:
            r.problem(f"{where}.allowed_versions[{j}]", problem)
        elif isinstance(item, str) and item not in versions:
            versions.append(item)
    if versions and default is not None and default not in versions:
        r.problem(f"{where}.default_version",
                  f"{default} is not in allowed_versions ({', '.join(versions)})")
    return tuple(versions)


#: The C{http} keys of the request-level edge settings (issue 17).
_HTTP_REQUEST_KEYS = ["trusted_proxies", "forget_routes_after", "max_remembered_routes"]


class _HttpRequestSettings(TypedDict):
    """
    The request-level edge settings of C{http}, as L{HttpConfig} takes them.
    """

    trusted_proxies: Tuple[str, ...]
    forget_routes_after: float
    max_remembered_routes: int


def _read_http_request_settings(r: Reader, raw: Mapping[str, object]) -> _HttpRequestSettings:
    """
    C{http.trusted_proxies}, C{http.forget_routes_after} and
    C{http.max_remembered_routes}, checked.
    """
    proxies: List[str] = []
    for i, item in enumerate(r.items(raw, "trusted_proxies", "http")):
        where = f"http.trusted_proxies[{i}]"
        if not isinstance(item, str):
            r.problem(where, "must be an address or a network such as 10.0.0.0/8")
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as e:
            r.problem(where, str(e))
            continue
        proxies.append(item)
    return {
        "trusted_proxies": tuple(proxies),
        "forget_routes_after": r.get(raw, "forget_routes_after", "http", float,
                                     HttpConfig.forget_routes_after,
                                     lambda v: None if 0 <= v <= 86400
                                     else "must be in [0, 86400]"),
        "max_remembered_routes": r.get(raw, "max_remembered_routes", "http", int,
                                       HttpConfig.max_remembered_routes,
                                       lambda v: None if 1 <= v <= 1_000_000
                                       else "must be in [1, 1000000]"),
    }


def _read_registration(r: Reader, raw: object) -> RegistrationLimits:
    names = ("max_endpoints", "max_path_length", "max_path_segments",
             "max_connections_per_peer_address")
    obj = r.mapping(raw, "registration", list(names))
    defaults = RegistrationLimits()
    return RegistrationLimits(*(
        r.get(obj, name, "registration", int, getattr(defaults, name), positive)
        for name in names))


def _read_auth(r: Reader, raw: object, source: str) -> AuthConfig:
    obj = r.mapping(raw, "auth", ["require_authentication", "issuer", "audience", "jwks_file",
                                  "hs256_secret", "leeway"])
    jwks_file = r.get(obj, "jwks_file", "auth", str, None, non_empty)
    jwks = None
    if jwks_file is not None:
        if not os.path.isabs(jwks_file) and source not in ("<config>", ""):
            jwks_file = os.path.join(os.path.dirname(os.path.abspath(source)), jwks_file)
        jwks = _read_jwks(r, jwks_file)
    secret = r.get(obj, "hs256_secret", "auth", str, None, hmac_secret_problem)
    return AuthConfig(
        require_authentication=r.get(obj, "require_authentication", "auth", bool, False),
        issuer=r.get(obj, "issuer", "auth", str, None, non_empty),
        audience=r.get(obj, "audience", "auth", str, None, non_empty),
        jwks_file=jwks_file,
        jwks=jwks,
        hs256_secret=secret,
        leeway=r.get(obj, "leeway", "auth", float, 30.0,
                     lambda v: None if 0 <= v <= 600 else "must be in [0, 600]"),
    )


#: The shortest C{auth.hs256_secret} (bytes, UTF-8): RFC 7518 section 3.2
#: says an HS256 key MUST be at least as long as its 256-bit hash.  (A
#: shorter HMAC key makes every token of the gateway easier to forge;
#: PyJWT warns about one when it is used.)
MIN_HMAC_SECRET_BYTES = 32


def hmac_secret_problem(secret: str) -> Optional[str]:
    """
    Why C{secret} is too short for HS256, or C{None}.  The message never
    contains the secret.
    """
    size = len(secret.encode("utf-8"))
    if size >= MIN_HMAC_SECRET_BYTES:
        return None
    return (f"must be at least {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2: an HS256 "
            f"key is at least as long as its 256-bit hash), not {size}")


def _read_jwks(r: Reader, path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        r.problem("auth.jwks_file", f"cannot read {path}: {e}")
        return None
    if len(text) > MAX_CONFIG_BYTES:
        r.problem("auth.jwks_file", f"{path} is larger than {MAX_CONFIG_BYTES} characters; "
                  "a JWKS of public keys is a few kilobytes")
        return None
    try:
        document = json.loads(text)
    except ValueError as e:
        r.problem("auth.jwks_file", f"{path} is not JSON: {e}")
        return None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        r.problem("auth.jwks_file", f"{path} is not a JWKS: it needs a non-empty 'keys' list")
        return None
    for i, key in enumerate(keys):
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "OKP"):
            r.problem("auth.jwks_file",
                      f"{path}: keys[{i}] must be an RSA, EC or OKP public key (kty)")
            return None
        if "d" in key:
            r.problem("auth.jwks_file", f"{path}: keys[{i}] is a private key; publish only "
                      "public keys to the gateway")
            return None
    try:
        loaded = PyJWKSet.from_dict(document)
    except Exception as e:
        r.problem("auth.jwks_file", f"{path}: the keys cannot be loaded: {e}")
        return None
    for i, jwk in enumerate(loaded.keys):
        # PyJWT's own minimum (RSA: 2048 bits, NIST SP 800-131A); it would
        # otherwise warn each time the key verifies a token.
        weakness = jwk.Algorithm.check_key_length(jwk.key)
        if weakness:
            r.problem("auth.jwks_file", f"{path}: keys[{i}] (kid {jwk.key_id!r}): {weakness}")
            return None
    return text


def _service_name_problem(name: str) -> Optional[str]:
    try:
        normalize_service_name(name)
    except InvalidDescriptor as e:
        return redact_text(str(e))
    return None


def _version_problem(version: str) -> Optional[str]:
    try:
        parse_version(version)
    except InvalidDescriptor as e:
        return redact_text(str(e))
    return None


def _read_tls_listener(r: Reader, raw: Mapping[str, object], where: str, source: str) -> Optional[TLSListenerConfig]:
    certificate = read_path(r, raw, "certificate", where, source, required=True)
    private_key = read_path(r, raw, "private_key", where, source, required=True)
    client_ca = read_path(r, raw, "client_ca", where, source)
    require = r.get(raw, "require_client_certificate", where, bool, True)
    allowed = []
    names_raw = raw.get("allowed_client_names")
    if names_raw is not None:
        if not isinstance(names_raw, dict):
            r.problem(f"{where}.allowed_client_names",
                      "must map a service name to the certificate names allowed to register it")
        else:
            if client_ca is None:
                r.problem(f"{where}.allowed_client_names", "needs client_ca (client certificates)")
            for service, names in names_raw.items():
                if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                    r.problem(f"{where}.allowed_client_names.{service}",
                              "must be a list of certificate names")
                    continue
                allowed.append((str(service).lower(), tuple(names)))
    if certificate is None or private_key is None:
        return None
    return TLSListenerConfig(certificate, private_key, client_ca, require, tuple(allowed))


def _amqp_listen_problem(value: str) -> Optional[str]:
    try:
        parse_amqp_address(value)
    except ValueError as e:
        return redact_text(str(e))
    return None


def _udp_listen_problem(value: str) -> Optional[str]:
    try:
        parse_udp_address(value, server=True)
    except ValueError as e:
        return redact_text(str(e))
    return None


def _transport_type(r: Reader, raw: Mapping[str, object], where: str) -> Optional[TransportType]:
    name = r.get(raw, "type", where, str)
    if name is None:
        return None
    try:
        kind = TransportType(name)
    except ValueError:
        names = ", ".join(t.value for t in TransportType)
        r.problem(f"{where}.type", f"{quote(name)} is not one of {names}")
        return None
    if kind not in SUPPORTED_LISTENERS:
        supported = ", ".join(t.value for t in SUPPORTED_LISTENERS)
        r.problem(f"{where}.type", f"{quote(name)} is not implemented yet (available: {supported})")
        return None
    return kind


def load_gateway_config(path: str, environ: Optional[Mapping[str, str]] = None) -> GatewayConfig:
    """
    Read a gateway YAML file, apply C{STELLAROUTER_*} environment overrides
    (see L{stellarouter.config.env}), and validate the result.

    @param environ: the environment (default: C{os.environ}).
    @raise ConfigError: unreadable file, invalid YAML, or invalid content.
    """
    document, _, problems = apply_env_overrides(
        read_yaml(path), os.environ if environ is None else environ,
        GATEWAY_PREFIX, exclude=MICRO_PREFIX)
    if problems:
        raise ConfigError(path, problems)
    return parse_gateway_config(document, path)
