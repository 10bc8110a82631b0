"""
The C{stellarouter} command: tools around the two twistd plugins.

    stellarouter config check router.yaml     # validate, print problems, exit 1 if any
    stellarouter token --config router.yaml --claim scope=billing:write   # a dev token
    stellarouter certs init ./certs --service billing   # a dev CA + mTLS certificates
    stellarouter instances [--admin URL] [--token T] [--json]   # also status, services,
                                                 # routes, drain ID: the gateway's admin API
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, TextIO

from . import admin_client
from .common.jsonvalue import JSONValue
from .config import ConfigError, MicroserviceConfig, load_gateway_config, load_microservice_config
from .config.gateway import hmac_secret_problem
from .config.reader import read_yaml


def _kind_of(path: str) -> str:
    try:
        document = read_yaml(path)
    except ConfigError:
        return "gateway"
    if isinstance(document, dict) and ("routers" in document or "app" in document):
        return "microservice"
    return "gateway"


def plain(text: str) -> str:
    """
    Epytext markup removed (C{C{stellarouter}} → C{stellarouter}), for text
    shown to a user.
    """
    return re.sub(r"\b[A-Z]\{([^{}]*)\}", r"\1", text).strip()


def check_app(path: str, config: MicroserviceConfig) -> None:
    """
    Import a microservice configuration's C{app} as C{twistd stella-micro}
    would (the current directory importable), and check its endpoint
    overrides against the app's endpoints.

    @raise ConfigError: the module cannot be imported, the attribute is not
        a Microservice, or an override names no endpoint of it.
    """
    from twisted.python.usage import UsageError

    from .microservice.endpoints import merge_overrides
    from .microservice.tap import load_app

    if config.app is None:
        return
    try:
        app = load_app(config.app)
    except UsageError as e:
        raise ConfigError(path, [f"app: {e}"]) from None
    merge_overrides(app.descriptors(), config.endpoints, path)


def check(path: str, kind: Optional[str], out: TextIO) -> int:
    """
    Validate one configuration file.

    @return: the exit status: 0 valid, 1 invalid.
    """
    kind = kind or _kind_of(path)
    try:
        if kind == "gateway":
            gateway = load_gateway_config(path)
            summary = (f"node {gateway.node.node_id} in region {gateway.node.region}, "
                       f"HTTP on {gateway.http.listen}, "
                       f"admin on {gateway.admin.listen if gateway.admin.enabled else '(off)'}, "
                       f"{len(gateway.transports)} transport listener(s), "
                       f"{len(gateway.services)} service setting(s)")
        else:
            micro = load_microservice_config(path)
            check_app(path, micro)
            summary = (f"region {micro.region}, {len(micro.routers)} router(s), "
                       f"{len(micro.endpoints)} endpoint override(s)")
    except ConfigError as e:
        out.write(str(e) + "\n")
        return 1
    out.write(f"{path}: valid {kind} configuration ({summary})\n")
    return 0


def mint(args: argparse.Namespace, out: TextIO) -> int:
    """
    Print a development token signed with the gateway's shared secret (or
    C{--secret}, or a private key file).

    @return: the exit status.
    """
    import jwt

    secret, issuer, audience = args.secret, args.issuer, args.audience
    if args.config:
        try:
            auth = load_gateway_config(args.config).auth
        except ConfigError as e:
            out.write(str(e) + "\n")
            return 1
        secret = secret or auth.hs256_secret
        issuer = issuer or auth.issuer
        audience = audience or auth.audience
    claims: Dict[str, JSONValue] = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            out.write(f"--claim {item!r}: expected NAME=VALUE\n")
            return 2
        if name in claims:
            previous = claims[name]
            claims[name] = (f"{previous} {value}" if name in ("scope", "scp") else
                            (previous if isinstance(previous, list) else [previous]) + [value])
        else:
            claims[name] = value
    now = int(time.time())
    claims.setdefault("sub", args.subject)
    claims.update({"iat": now, "nbf": now, "exp": now + args.ttl})
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if args.key:
        with open(args.key, "rb") as f:
            key = f.read()
        headers = {"kid": args.kid} if args.kid else None
        token = jwt.encode(claims, key, algorithm=args.alg or "RS256", headers=headers)
    elif secret:
        problem = hmac_secret_problem(secret)
        if problem is not None:
            out.write(f"--secret: {problem}\n")
            return 2
        token = jwt.encode(claims, secret, algorithm="HS256")
    else:
        out.write("no key: pass --config (with auth.hs256_secret), --secret or --key\n")
        return 2
    out.write(token + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    """
    Entry point of the C{stellarouter} console script.

    @param err: where the admin commands write their one-line errors.
    """
    parser = argparse.ArgumentParser(prog="stellarouter",
                                     description=plain(__doc__.splitlines()[1]))
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="action", required=True)
    checker = config_commands.add_parser(
        "check", help="validate configuration files (environment overrides included)")
    checker.add_argument("paths", nargs="+", metavar="FILE")
    checker.add_argument("--kind", choices=("gateway", "microservice"),
                         help="the file's kind (default: guessed from its keys)")
    token = commands.add_parser("token", help="mint a development token (HS256 or a private key)")
    token.add_argument("--config", help="a gateway config: use its auth secret, issuer, audience")
    token.add_argument("--secret", help="the HS256 shared secret")
    token.add_argument("--key", help="a PEM private key file (RSA, EC or Ed25519)")
    token.add_argument("--kid", help="the key id to put in the token header")
    token.add_argument("--alg", help="RS256, ES256, EdDSA... with --key (default RS256)")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                       help="a claim; repeat a name for a list (scope values are joined)")
    token.add_argument("--subject", default="dev-user", help="the sub claim")
    token.add_argument("--issuer")
    token.add_argument("--audience")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp")
    certs = commands.add_parser("certs", help="development certificates for mutual TLS")
    certs_commands = certs.add_subparsers(dest="action", required=True)
    init = certs_commands.add_parser(
        "init", help="create a CA, a gateway certificate and one client certificate per service")
    init.add_argument("directory")
    init.add_argument("--service", action="append", default=[],
                      help="a microservice to issue a client certificate for (repeatable; "
                           "default: billing)")
    init.add_argument("--gateway-name", action="append", default=[],
                      help="a DNS name of the gateway (repeatable; default: localhost)")
    admin_client.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in admin_client.COMMANDS:
        return admin_client.run(args, out, err)
    if args.command == "token":
        return mint(args, out)
    if args.command == "certs":
        from .certs import init_dev_certs

        paths = init_dev_certs(args.directory, args.service or ["billing"],
                               args.gateway_name or ["localhost"])
        for name, path in paths.items():
            out.write(f"{name:>16}: {path}\n")
        out.write("development certificates only: the CA key is not protected\n")
        return 0
    statuses: List[int] = [check(path, args.kind, out) for path in args.paths]
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
