"""
The notes Klein app (C{examples/migration/notes_app.py}) served directly by
twisted.web, the baseline of C{benchmarks/klein_bridge.sh}: the same
C{Site} settings as C{benchmarks/direct_klein.py} (access log off).

    python benchmarks/notes_direct.py [--port 8181] [--interface 127.0.0.1]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from benchmarks.direct_klein import QuietSite
from examples.migration.notes_app import NotesAPI


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    listening: Any = reactor.listenTCP(args.port, QuietSite(NotesAPI(reactor).app.resource()),
                                       interface=args.interface)
    print(f"notes Klein app directly on http://{args.interface}:{listening.getHost().port}",
          flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
