"""
A fixed number of keep-alive HTTP/1.1 requests over C connections, for
the benchmarks that need an exact request count (wrk runs for a duration):

    python benchmarks/load.py http://127.0.0.1:8080/ping -n 2000 -c 16

Each connection sends a request, reads its whole answer (C{Content-Length}
or chunked framing, no trailers), and sends the next; it exits 1 if any answer is not a 200.
Standard library only; loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit


async def _client(host: str, port: int, request: bytes, count: int) -> int:
    """
    Send C{count} requests on one connection; return how many were not 200.
    """
    reader, writer = await asyncio.open_connection(host, port)
    failures = 0
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            failures += 1
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.strip().lower() == b"chunked"
        if chunked:
            while True:  # size line, data, CRLF ... up to the last chunk (size 0) and its CRLF
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if not size:
                    break
        elif length:
            await reader.readexactly(length)
    writer.close()
    return failures


async def _main(url: str, total: int, connections: int) -> int:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing a non-loopback URL: {url}")
    request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n").encode()
    share, extra = divmod(total, connections)
    counts = [share + (1 if i < extra else 0) for i in range(connections)]
    failures = await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80,
                                              request, n) for n in counts if n))
    return sum(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-n", type=int, default=1000, help="requests in all")
    parser.add_argument("-c", type=int, default=16, help="connections")
    args = parser.parse_args()
    failed = asyncio.run(_main(args.url, args.n, args.c))
    if failed:
        print(f"{failed} of {args.n} answers were not 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
