"""A generated multi-service log stream with labelled incidents.

Services differ by three orders of magnitude in normal latency, so a detector that judges
latency globally flags the slow ones all day; incidents are injected with a label per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from app.schemas.events import Level, LogEvent

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    name: str
    median_ms: float
    spread: float  # sigma of log latency
    events_per_second: float
    error_rate: float


DEFAULT_SERVICES = (
    ServiceProfile("cache", 1.5, 0.25, 20.0, 0.002),
    ServiceProfile("auth", 25.0, 0.3, 10.0, 0.005),
    ServiceProfile("checkout", 180.0, 0.35, 5.0, 0.01),
    ServiceProfile("reports", 4000.0, 0.4, 1.0, 0.01),
)


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str  # "latency_spike", "error_burst" or "outlier"
    service: str
    start_second: float
    duration_seconds: float = 0.0


@dataclass(slots=True)
class LabelledStream:
    events: list[LogEvent] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    incident_of: list[int] = field(default_factory=list)  # index into incidents, -1 if normal
    incidents: list[Incident] = field(default_factory=list)


def generate_stream(
    seconds: float,
    incidents: list[Incident],
    services: tuple[ServiceProfile, ...] = DEFAULT_SERVICES,
    seed: int = 7,
) -> LabelledStream:
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, str, Level, float, int]] = []
    for profile in services:
        count = rng.poisson(profile.events_per_second * seconds)
        times = np.sort(rng.uniform(0.0, seconds, count))
        latency = profile.median_ms * np.exp(profile.spread * rng.standard_normal(count))
        errors = rng.random(count) < profile.error_rate
        incident_ids = np.full(count, -1)
        for index, incident in enumerate(incidents):
            if incident.service != profile.name:
                continue
            if incident.kind == "outlier":
                nearest = int(np.searchsorted(times, incident.start_second))
                if nearest < count:
                    latency[nearest] = profile.median_ms * 60.0
                    incident_ids[nearest] = index
                continue
            during = (times >= incident.start_second) & (
                times < incident.start_second + incident.duration_seconds
            )
            if incident.kind == "latency_spike":
                latency[during] *= 10.0
                incident_ids[during] = index
            elif incident.kind == "error_burst":
                burst = during & (rng.random(count) < 0.5)
                errors |= burst
                incident_ids[burst] = index
        for t, lat, err, inc in zip(times, latency, errors, incident_ids, strict=True):
            level = Level.ERROR if err else Level.INFO
            rows.append((float(t), profile.name, level, float(lat), int(inc)))
    rows.sort(key=lambda row: row[0])
    stream = LabelledStream(incidents=list(incidents))
    for t, service, level, lat, inc in rows:
        stream.events.append(
            LogEvent(
                service=service,
                level=level,
                message="request failed" if level is Level.ERROR else "request served",
                latency_ms=round(lat, 3),
                timestamp=START + timedelta(seconds=t),
            )
        )
        stream.labels.append(inc >= 0)
        stream.incident_of.append(inc)
    return stream
