"""
What metrics and the access logs cost a proxied GET, in CPU: the
C{hot_path.py} deployment (gateway and Billing's SDK in one process, 16
keep-alive clients, no sockets) with each telemetry setting, measured
interleaved (best of 5 rounds of 200 x 16 requests).

    python benchmarks/telemetry_cost.py
"""

import gc
import os
import sys
import time
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import hot_path  # noqa: E402
from stellarouter.config.observability import AccessLogConfig, MetricsConfig  # noqa: E402
from stellarouter.testing.harness import InMemoryDeployment  # noqa: E402


def make(**settings: Any) -> Callable[[], None]:
    clock = hot_path.HeapClock()
    deployment = InMemoryDeployment(clock=clock, **settings)  # type: ignore[arg-type]
    deployment.add(hot_path._app())
    clients = [hot_path._channel(deployment.gateway.site) for _ in range(16)]

    def one() -> None:
        for _, channel in clients:
            channel.dataReceived(hot_path.GET)
        while clock.pending():
            clock.advance(0)
        for transport, _ in clients:
            transport.clear()

    return one


VARIANTS: Dict[str, Dict[str, Any]] = {
    "off": dict(access_log=AccessLogConfig(enabled=False), metrics=MetricsConfig(enabled=False)),
    "metrics only": dict(access_log=AccessLogConfig(enabled=False)),
    "access logs only (to /dev/null)": dict(access_log=AccessLogConfig(path=os.devnull),
                                            metrics=MetricsConfig(enabled=False)),
    "access logs only, never formatted": dict(metrics=MetricsConfig(enabled=False)),
    "both (access logs to /dev/null)": dict(access_log=AccessLogConfig(path=os.devnull)),
}


def main() -> None:
    runs = {name: make(**settings) for name, settings in VARIANTS.items()}
    for one in runs.values():
        for _ in range(100):
            one()
    results: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(5):
        for name, one in runs.items():
            gc.collect()
            started = time.process_time()
            for _ in range(200):
                one()
            results[name].append((time.process_time() - started) / 3200 * 1e6)
    base = min(results["off"])
    for name, values in results.items():
        print(f"{name:40s} {min(values):6.1f} us  {min(values) / base - 1:+6.1%}")


if __name__ == "__main__":
    main()
