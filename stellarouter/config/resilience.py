"""
The gateway's C{retries} and C{outlier_detection} settings (issue 24),
read and validated like the rest of the gateway YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reader import Reader, positive


@dataclass(frozen=True)
class RetryConfig:
    """
    Safe retries (C{docs/router/configuration.md}, "retries").

    @ivar enabled: send a request that provably did not run, or a request
        to an idempotent endpoint whose connection was lost, once more to
        another instance of the same version.
    @ivar budget_ratio: retries allowed per request over C{budget_window}.
    @ivar budget_window: seconds over which the budget counts.
    @ivar min_retries: retries allowed per window whatever the traffic.
    """

    enabled: bool = True
    budget_ratio: float = 0.2
    budget_window: float = 10.0
    min_retries: int = 3


@dataclass(frozen=True)
class OutlierDetectionConfig:
    """
    Outlier ejection (C{docs/router/configuration.md},
    "outlier_detection").

    @ivar consecutive_failures: gateway-side failures in a row (502, 504,
        connection lost) that eject an instance.
    @ivar base_ejection_time: seconds of the first ejection; the n-th lasts
        n times as long.
    @ivar max_ejection_time: the longest ejection.
    @ivar max_ejected_share: at most this share of a service's instances
        is ejected at once (rounded down).
    @ivar eject_on_timeout: a gateway timeout (504) ejects at once, without
        waiting for C{consecutive_failures} (a frozen instance gets no new
        request while those it holds time out).
    """

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejected_share: float = 0.5
    eject_on_timeout: bool = True


def read_retries(r: Reader, raw: object) -> RetryConfig:
    """
    Read the C{retries} mapping (absent: the defaults).
    """
    obj = r.mapping(raw, "retries", ["enabled", "budget_ratio", "budget_window",
                                     "min_retries"])
    d = RetryConfig()
    return RetryConfig(
        r.get(obj, "enabled", "retries", bool, d.enabled),
        r.get(obj, "budget_ratio", "retries", float, d.budget_ratio,
              lambda v: None if 0 <= v <= 1 else "must be in [0, 1]"),
        r.get(obj, "budget_window", "retries", float, d.budget_window,
              lambda v: None if 0 < v <= 3600 else "must be in (0, 3600]"),
        r.get(obj, "min_retries", "retries", int, d.min_retries,
              lambda v: None if 0 <= v <= 1000 else "must be in [0, 1000]"),
    )


def read_outlier_detection(r: Reader, raw: object) -> OutlierDetectionConfig:
    """
    Read the C{outlier_detection} mapping (absent: the defaults).
    """
    where = "outlier_detection"
    obj = r.mapping(raw, where, ["consecutive_failures", "base_ejection_time",
                                 "max_ejection_time", "max_ejected_share",
                                 "eject_on_timeout"])
    d = OutlierDetectionConfig()
    config = OutlierDetectionConfig(
        r.get(obj, "consecutive_failures", where, int, d.consecutive_failures,
              lambda v: None if 1 <= v <= 1000 else "must be in [1, 1000]"),
        r.get(obj, "base_ejection_time", where, float, d.base_ejection_time, positive),
        r.get(obj, "max_ejection_time", where, float, d.max_ejection_time, positive),
        r.get(obj, "max_ejected_share", where, float, d.max_ejected_share,
              lambda v: None if 0 <= v <= 1 else "must be in [0, 1]"),
        r.get(obj, "eject_on_timeout", where, bool, d.eject_on_timeout),
    )
    if config.max_ejection_time < config.base_ejection_time:
        r.problem(f"{where}.max_ejection_time",
                  f"{config.max_ejection_time:g} must not be below base_ejection_time "
                  f"{config.base_ejection_time:g}")
        config = OutlierDetectionConfig(config.consecutive_failures, config.base_ejection_time,
                                        config.base_ejection_time, config.max_ejected_share,
                                        config.eject_on_timeout)
    return config
