"""
The C{stellarouter} command: tools around the two twistd plugins.

    stellarouter config check router.yaml     # validate, print problems, exit 1 if any
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, TextIO

from .config import ConfigError, load_gateway_config, load_microservice_config
from .config.reader import read_yaml


def _kind_of(path: str) -> str:
    try:
        document = read_yaml(path)
    except ConfigError:
        return "gateway"
    if isinstance(document, dict) and ("routers" in document or "app" in document):
        return "microservice"
    return "gateway"


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
                       f"{len(gateway.transports)} transport listener(s), "
                       f"{len(gateway.services)} service setting(s)")
        else:
            micro = load_microservice_config(path)
            summary = (f"region {micro.region}, {len(micro.routers)} router(s), "
                       f"{len(micro.endpoints)} endpoint override(s)")
    except ConfigError as e:
        out.write(str(e) + "\n")
        return 1
    out.write(f"{path}: valid {kind} configuration ({summary})\n")
    return 0


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    """
    Entry point of the C{stellarouter} console script.
    """
    parser = argparse.ArgumentParser(prog="stellarouter", description=__doc__.splitlines()[1])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="action", required=True)
    checker = config_commands.add_parser(
        "check", help="validate configuration files (environment overrides included)")
    checker.add_argument("paths", nargs="+", metavar="FILE")
    checker.add_argument("--kind", choices=("gateway", "microservice"),
                         help="the file's kind (default: guessed from its keys)")
    args = parser.parse_args(argv)
    statuses: List[int] = [check(path, args.kind, out) for path in args.paths]
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
