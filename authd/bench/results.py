"""Result values shared by the drivers, the runner and the report (no I/O here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with at least pct% of values at or below it).

    Nearest rank never interpolates, so p99 is a latency some query really had.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 < pct <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    rank = math.ceil(pct / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class LoadResult:
    """One load run against one server, from either driver."""

    driver: str  # "dnsperf" or "builtin"
    sent: int
    completed: int
    lost: int
    seconds: float  # wall time of the sending period
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies_ms: tuple[float, ...] = ()  # per query, only in fixed-rate runs
    target_qps: float | None = None  # the rate asked for in fixed-rate runs
    truncated: int = 0
    mismatched: int = 0  # responses whose ID or question matched no outstanding query

    @property
    def qps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 50) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies_ms, 99) if self.latencies_ms else None

    @property
    def held_rate(self) -> bool:
        """In fixed-rate runs: whether the client really sent at (>= 95% of) the rate."""
        if self.target_qps is None or self.seconds <= 0:
            return True
        return self.sent / self.seconds >= 0.95 * self.target_qps


@dataclass(frozen=True)
class ServerRun:
    """One server under one mix: a saturation run with CPU accounting, then a latency run."""

    server: str
    mix: str
    saturation: LoadResult
    cpu_seconds: float
    latency: LoadResult | None = None
    notes: tuple[str, ...] = ()

    @property
    def qps_per_cpu_second(self) -> float | None:
        if self.cpu_seconds <= 0:
            return None
        return self.saturation.completed / self.cpu_seconds
