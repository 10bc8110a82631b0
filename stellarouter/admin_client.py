"""
The C{stellarouter status | services | instances | routes | drain} commands:
read the gateway's admin API (issue 21 item 4) and print aligned tables, or
its JSON with C{--json}.

A blocking HTTP client is right here: the command does one request and
exits.  Every failure is one line on stderr and a non-zero exit status:
1 unreachable, refused, or no such service, 2 bad usage (argparse).

Text from the API is printed through L{shown}: a control character an
instance or a peer put into a name reaches the terminal escaped, never raw.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import (
    Callable, Dict, List, Optional, Sequence, TextIO, Tuple, TypedDict, TypeVar, cast,
)

from .common.jsonvalue import JSONValue
from .common.redaction import redact_text
from .common.untrusted import shown

#: Where the admin listener is unless C{--admin} or C{STELLA_ADMIN_URL}
#: says otherwise (C{admin.listen}'s default).
DEFAULT_ADMIN_URL = "http://127.0.0.1:9901"
#: Environment variables read for C{--admin} and C{--token} (a token on the
#: command line is visible to every user of the machine in C{ps}).  Not
#: C{STELLAROUTER_*}: the gateway reads those as configuration overrides,
#: and would refuse to start in a shell that exported one.
ADMIN_URL_ENV = "STELLA_ADMIN_URL"
ADMIN_TOKEN_ENV = "STELLA_ADMIN_TOKEN"
#: The largest answer read (bytes).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: The most characters of one table cell or value shown.
MAX_CELL_CHARS = 300

COMMANDS = ("status", "services", "instances", "routes", "drain")


#: No proxy from the environment: the admin listener is usually on this
#: machine, and an C{http_proxy} meant for the outside would swallow it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _UnixSocketConnection(http.client.HTTPConnection):
    """
    An HTTP connection to a unix socket (its host is only the C{Host}
    header's).
    """

    def __init__(self, path: str, host: str, timeout: Optional[float] = None) -> None:
        super().__init__(host, timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixSocketHandler(urllib.request.HTTPHandler):
    """
    Opens C{http://} requests over the unix socket at C{path}.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, timeout: Optional[float] = None,
                    **kwargs: object) -> _UnixSocketConnection:
        return _UnixSocketConnection(self.path, host, timeout)


class Listening(TypedDict, total=False):
    """
    C{listening} in C{GET /status}: where the gateway listens.
    """

    http: str
    admin: str
    transports: List[str]


class ExpectedInstances(TypedDict, total=False):
    """
    One service of C{expected_instances} in C{GET /status}.
    """

    status: str


class StatusAnswer(TypedDict, total=False):
    """
    C{GET /status}, the keys the command shows.
    """

    status: str
    node_id: str
    region: str
    listening: Listening
    services: int
    instances: int
    instances_by_health: Dict[str, int]
    routes: int
    in_flight: int
    metrics: bool
    expected_instances: Dict[str, ExpectedInstances]


class VersionCount(TypedDict):
    """
    One version of a service in C{GET /services}.
    """

    version: str
    instances: int


class ServiceRow(TypedDict):
    """
    One service in C{GET /services}.
    """

    name: str
    versions: List[VersionCount]
    instances: int
    routable: int
    draining: int
    in_flight: int
    default_version: Optional[str]


class ServicesAnswer(TypedDict):
    """
    C{GET /services}.
    """

    services: List[ServiceRow]


class InstanceRow(TypedDict, total=False):
    """
    One instance in C{GET /instances} (and C{POST /instances/NAME/drain}),
    the keys the commands show.
    """

    instance_id: str
    service: str
    version: str
    region: str
    connection_id: str
    transport: str
    peer: str
    peer_identity: List[str]
    health: str
    drained_by_operator: bool
    ping_ewma_ms: Optional[float]
    in_flight: int
    last_heartbeat_age_s: float
    connected_for_s: float


class InstancesAnswer(TypedDict):
    """
    C{GET /instances}.
    """

    instances: List[InstanceRow]


class DrainedAnswer(TypedDict):
    """
    C{POST /instances/NAME/drain}.
    """

    drained: List[InstanceRow]


class RouteClaim(TypedDict):
    """
    One claim requirement of a route, in its readable form.
    """

    text: str


class RouteLimits(TypedDict):
    """
    The limits of a route.
    """

    max_request_bytes: int


class RouteRow(TypedDict):
    """
    One route in C{GET /routes}, the keys the command shows.
    """

    method: str
    template: str
    service: str
    versions: List[str]
    claims: List[RouteClaim]
    timeout_s: float
    streaming: bool
    limits: RouteLimits


class RoutesAnswer(TypedDict):
    """
    C{GET /routes}.
    """

    routes: List[RouteRow]


class AdminError(Exception):
    """
    The admin API could not be used; the message is the one line shown.
    """


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Add the admin commands to the C{stellarouter} argument parser.

    @param commands: the parser's subparsers object.
    """
    helps = {
        "status": "the gateway at a glance (admin API)",
        "services": "services, versions and instance counts (admin API)",
        "instances": "registered instances with health, ping, in-flight (admin API)",
        "routes": "announced routes as the gateway enforces them (admin API)",
        "drain": "stop routing to an instance and ask it to drain (admin API)",
    }
    for name in COMMANDS:
        parser = commands.add_parser(name, help=helps[name])
        if name == "drain":
            parser.add_argument("instance", help="an instance id (or connection id)")
        if name == "instances":
            parser.add_argument("--service", help="only this service's instances")
        parser.add_argument("--admin", metavar="URL",
                            help=f"the admin listener, http(s)://HOST:PORT or unix:PATH "
                                 f"(default: ${ADMIN_URL_ENV} or "
                                 f"{DEFAULT_ADMIN_URL})")
        parser.add_argument("--token", help=f"a bearer token (default: ${ADMIN_TOKEN_ENV})")
        parser.add_argument("--json", action="store_true", help="print the API's JSON")
        parser.add_argument("--timeout", type=float, default=10.0,
                            help="seconds to wait for the answer (default 10)")


def fetch(base: str, path: str, token: Optional[str], timeout: float,
          method: str = "GET") -> JSONValue:
    """
    One admin API request.

    @return: the decoded JSON answer.
    @raise AdminError: unreachable, refused, or not JSON; the message says
        which, in one line.
    """
    opener = _OPENER
    if base.startswith("unix:"):
        if len(base) == len("unix:"):
            raise AdminError(f"--admin {base!r} names no socket (unix:PATH)")
        # A unix socket (admin.listen: unix:PATH): HTTP over it, to localhost.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             _UnixSocketHandler(base[len("unix:"):]))
        request_url, url = "http://localhost" + path, base + path
    else:
        url = request_url = base.rstrip("/") + path
        try:
            parsed = urllib.parse.urlsplit(url)
            parsed.port  # (raises ValueError for a port that is not one)
        except ValueError as e:
            raise AdminError(f"--admin {redact_text(repr(base))} is not a valid URL: "
                             f"{redact_text(str(e))}") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise AdminError(f"--admin {redact_text(repr(base))} is not an http://, https:// "
                             "or unix: address")
        if "@" in parsed.netloc:
            raise AdminError(f"--admin {redact_text(repr(base))} holds a user or password; "
                             f"the admin API takes a bearer token (--token or "
                             f"${ADMIN_TOKEN_ENV})")
    request = urllib.request.Request(request_url, method=method,
                                     data=b"" if method == "POST" else None)
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as answer:
            body = answer.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as e:
        detail = _problem_detail(e)
        if e.code == 401:
            hint = "" if token else f" (pass --token or set ${ADMIN_TOKEN_ENV})"
            raise AdminError(f"the admin listener at {base} refused "
                             f"{'the token' if token else 'a request without a token'}: "
                             f"401 {detail}{hint}") from None
        if e.code == 403:
            raise AdminError(f"the admin listener at {base} refused the request: 403 "
                             f"{detail}") from None
        if e.code == 404 and method == "GET":
            # (Every path the commands read exists on the admin listener: a
            # 404 is another server, most often the gateway's public port.)
            raise AdminError(f"{method} {url}: 404 {detail}; is {base} the admin listener? "
                             f"(not the gateway's public HTTP port: see admin.listen, by "
                             f"default http://127.0.0.1:9901)") from None
        raise AdminError(f"{method} {url}: {e.code} {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise AdminError(f"cannot reach the admin listener at {base}: {_one_line(reason)} "
                         f"(is the gateway running with admin.enabled? --admin URL or "
                         f"${ADMIN_URL_ENV} sets where)") from None
    try:
        decoded: JSONValue = json.loads(body)
        return decoded
    except ValueError:
        raise AdminError(f"{url} did not answer JSON; is {base} the admin listener?") from None


def _problem_detail(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read(65536))
        text = body.get("detail") or body.get("title") or ""
    except (ValueError, AttributeError, OSError):
        text = ""
    return _one_line(text or error.reason or "")


def _one_line(value: object) -> str:
    return shown(" ".join(str(value).split()), 300)


def _cell(value: object) -> str:
    return shown(value, MAX_CELL_CHARS)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """
    Rows as left-aligned columns two spaces apart, under upper-case headers;
    each cell escaped and cut by L{shown}.
    """
    rows = [[_cell(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [list(headers), *rows]]
    return "\n".join(lines) + "\n"


def duration(seconds: Optional[float]) -> str:
    """
    C{0.4s}, C{12s}, C{5m07s}, C{3h02m}, C{2d04h}.
    """
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def show_status(body: StatusAnswer) -> str:
    listening: Listening = body.get("listening") or {}
    by_health = ", ".join(f"{n} {h}" for h, n in (body.get("instances_by_health") or {}).items())
    lines = [
        ("status", body.get("status", "?")),
        ("node", f"{body.get('node_id')} (region {body.get('region')})"),
        ("http", listening.get("http", "-")),
        ("admin", listening.get("admin", "-")),
        ("transports", ", ".join(listening.get("transports", [])) or "-"),
        ("services", str(body.get("services", 0))),
        ("instances", f"{body.get('instances', 0)}" + (f" ({by_health})" if by_health else "")),
        ("routes", str(body.get("routes", 0))),
        ("in flight", str(body.get("in_flight", 0))),
        ("metrics", "GET /metrics" if body.get("metrics") else "not collected"),
    ]
    for name, entry in sorted((body.get("expected_instances") or {}).items()):
        lines.append((f"expected {name}", entry.get("status", "?")))
    lines = [(_cell(name), _cell(value)) for name, value in lines]
    width = max(len(name) for name, _ in lines)
    return "".join(f"{name.ljust(width)}  {value}\n" for name, value in lines)


def show_services(body: ServicesAnswer) -> str:
    rows = [[s["name"],
             ", ".join(f"{v['version']} ({v['instances']})" for v in s["versions"]),
             str(s["instances"]), str(s["routable"]), str(s["draining"]), str(s["in_flight"]),
             s.get("default_version") or "-"] for s in body["services"]]
    return table(rows, ["SERVICE", "VERSIONS (INSTANCES)", "INSTANCES", "ROUTABLE", "DRAINING",
                        "IN-FLIGHT", "DEFAULT"])


def show_instances(body: InstancesAnswer) -> str:
    rows = [[i["instance_id"], i["service"], i["version"], i["region"], i["transport"],
             i["peer"] + (f" ({', '.join(i['peer_identity'])})" if i["peer_identity"] else ""),
             i["health"] + (" (operator)" if i.get("drained_by_operator") else ""),
             "-" if i["ping_ewma_ms"] is None else f"{i['ping_ewma_ms']:.1f}",
             str(i["in_flight"]), duration(i["last_heartbeat_age_s"]) + " ago",
             duration(i["connected_for_s"])] for i in body["instances"]]
    return table(rows, ["INSTANCE", "SERVICE", "VERSION", "REGION", "TRANSPORT", "PEER",
                        "HEALTH", "PING-MS", "IN-FLIGHT", "HEARTBEAT", "UP"])


def show_routes(body: RoutesAnswer) -> str:
    rows = [[r["method"], r["template"], r["service"], ", ".join(r["versions"]),
             ", ".join(c["text"] for c in r["claims"]) or "-", f"{r['timeout_s']:g}s",
             "yes" if r["streaming"] else "no", _size(r["limits"]["max_request_bytes"])]
            for r in body["routes"]]
    return table(rows, ["METHOD", "TEMPLATE", "SERVICE", "VERSIONS", "CLAIMS", "TIMEOUT",
                        "STREAMING", "MAX-BODY"])


def show_drained(body: DrainedAnswer) -> str:
    return "".join(f"draining {_cell(i['instance_id'])} ({_cell(i['service'])} "
                   f"{_cell(i['version'])}, connection {_cell(i['connection_id'])}): no new "
                   f"requests, {i['in_flight']} in flight\n" for i in body["drained"])


def _size(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} B"


Answer = TypeVar("Answer")


def _shown_as(show: Callable[[Answer], str]) -> Callable[[JSONValue], str]:
    """
    C{show} for the JSON the admin API answered: taken to have the
    documented shape (L{run} reports an answer that does not as unexpected).
    """

    def show_body(body: JSONValue) -> str:
        return show(cast(Answer, body))

    return show_body


#: Per command: the request and how its answer is shown.
_REQUESTS: Dict[str, Tuple[str, Callable[[JSONValue], str]]] = {
    "status": ("/status", _shown_as(show_status)),
    "services": ("/services", _shown_as(show_services)),
    "instances": ("/instances", _shown_as(show_instances)),
    "routes": ("/routes", _shown_as(show_routes)),
    "drain": ("/instances/{}/drain", _shown_as(show_drained)),
}


def _check_service(name: str, services: JSONValue) -> None:
    """
    Whether the gateway knows service C{name} (an empty instance list for a
    typo must not read as "no instances").

    @param services: the answer to C{GET /services} (another shape raises
        what L{run} reports as an unexpected answer).
    @raise AdminError: it does not, naming the services it knows.
    """
    known = sorted(str(s["name"]) for s in cast(ServicesAnswer, services)["services"])
    if name not in known:
        raise AdminError(f"no service named '{_cell(name)}' is registered at the gateway "
                         f"(services: {_cell(', '.join(known)) or 'none'})")


def run(args: argparse.Namespace, out: TextIO, err: TextIO,
        environ: Optional[Dict[str, str]] = None,
        fetcher: Callable[[str, str, Optional[str], float, str], JSONValue] = fetch) -> int:
    """
    Run one admin command.

    @param environ: the environment (default: C{os.environ}).
    @param fetcher: does the request (L{fetch}; tests pass a fake).
    @return: the exit status (0, or 1 with one line on C{err}).
    """
    env = os.environ if environ is None else environ
    base = args.admin or env.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL
    token = args.token or env.get(ADMIN_TOKEN_ENV) or None
    path, show = _REQUESTS[args.command]
    method = "GET"
    if args.command == "drain":
        path, method = path.format(urllib.parse.quote(args.instance, safe="")), "POST"
    elif args.command == "instances" and args.service:
        # Service names match case-insensitively; the API holds them lower-cased.
        path += "?service=" + urllib.parse.quote(args.service.lower(), safe="")
    try:
        body = fetcher(base, path, token, args.timeout, method)
        if (args.command == "instances" and args.service and isinstance(body, dict)
                and body.get("instances") == []):
            _check_service(args.service.lower(), fetcher(base, "/services", token,
                                                         args.timeout, "GET"))
        text = (json.dumps(body, indent=2) + "\n") if args.json else show(body)
    except AdminError as e:
        err.write(f"stellarouter {args.command}: {e}\n")
        return 1
    except (KeyError, TypeError, ValueError) as e:
        err.write(f"stellarouter {args.command}: unexpected answer from {base} "
                  f"({type(e).__name__}: {_one_line(e)}); is it a stellarouter admin listener "
                  "of the same version?\n")
        return 1
    out.write(text)
    return 0


__all__: List[str] = ["ADMIN_TOKEN_ENV", "ADMIN_URL_ENV", "AdminError", "COMMANDS",
                      "DEFAULT_ADMIN_URL", "add_commands", "duration", "fetch", "run", "table"]
