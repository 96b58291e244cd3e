"""Shared pieces of the benchmarks: timing, result rows, the machine description, event streams."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np


@dataclass(slots=True)
class Row:
    """One figure of the table, with the baseline it is compared to (measured in the same run)."""

    section: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    # "higher" when a bigger value is better (throughput), "lower" for costs and latencies.
    better: str = "lower"
    target: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (> 1 is better), or the plain share for
        figures where "better" is not a direction (memory)."""
        if self.baseline is None or self.baseline == 0 or self.value == 0:
            return None
        if self.better in ("higher", "neutral"):
            return self.value / self.baseline
        return self.baseline / self.value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def machine() -> dict[str, Any]:
    import numba
    import sklearn

    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "numba": numba.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def per_call_seconds(
    function: Callable[[], object], calls: int, rounds: int
) -> tuple[float, list[float]]:
    """Median over ``rounds`` of the mean time per call, and every single call's time.

    The machine is shared and noisy: the median of several rounds resists a neighbour's burst.
    """
    round_means: list[float] = []
    singles: list[float] = []
    clock = time.perf_counter
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            before = clock()
            function()
            singles.append(clock() - before)
        round_means.append((clock() - start) / calls)
    return statistics.median(round_means), singles


def interleaved(
    subject: Callable[[], object],
    baseline: Callable[[], object],
    calls: tuple[int, int],
    rounds: int,
) -> tuple[float, float, list[float], list[float]]:
    """Time subject and baseline in alternating rounds, so both see the same machine."""
    subject_means, baseline_means = [], []
    subject_singles: list[float] = []
    baseline_singles: list[float] = []
    for _ in range(rounds):
        mean, singles = per_call_seconds(subject, calls[0], 1)
        subject_means.append(mean)
        subject_singles += singles
        mean, singles = per_call_seconds(baseline, calls[1], 1)
        baseline_means.append(mean)
        baseline_singles += singles
    return (
        statistics.median(subject_means),
        statistics.median(baseline_means),
        subject_singles,
        baseline_singles,
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def event_stream(
    n: int, services: int, seed: int = 0, start: datetime | None = None
) -> list[dict[str, Any]]:
    """Plausible events: per-service latency levels, ~5% errors, ~5% without latency, one event
    per service every few hundred milliseconds of event time."""
    rng = np.random.default_rng(seed)
    begin = start or datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    medians = np.exp(rng.uniform(np.log(2.0), np.log(2000.0), services))
    events = []
    for i in range(n):
        service = i % services
        event: dict[str, Any] = {
            "service": f"svc-{service:05d}",
            "level": "ERROR" if rng.random() < 0.05 else "INFO",
            "message": "GET /api/v1/items 200",
            "timestamp": (begin + timedelta(milliseconds=50 * i)).isoformat(),
        }
        if rng.random() > 0.05:
            event["latency_ms"] = round(float(medians[service] * rng.lognormal(0.0, 0.4)), 3)
        events.append(event)
    return events
