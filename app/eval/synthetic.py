"""A generated multi-service log stream with labelled incidents, and its evaluation.

Services differ by four orders of magnitude in normal latency, so a detector that judges latency
globally flags the slow ones all day; incidents are injected with a label per event.

Incident kinds (``Incident.kind``) and what is labelled anomalous:

- ``latency_spike``: every event of the service in ``[start, start + duration)`` is 10x slower.
- ``error_burst``: half the events in the span turn into errors; those errors are labelled.
- ``outlier``: one event (the first at or after ``start``) is 60x the service's median latency.
- ``novel_template``: one event at ``start`` carries a message the service never logged before;
  its level and latency stay ordinary, so only the message gives it away.
- ``warning_flood``: 60% of the events in the span become WARN with one repeated message.
- ``gradual_ramp``: latency grows linearly from 1x to 8x over the span (a leak); events at 2x or
  more are labelled, the first, ambiguous part of the ramp is left out of the event metrics.

Collective incidents (burst, flood, ramp) leave the other events of their service in their span
out of the event metrics too (``scored`` False): flagging a healthy-looking line during an outage
is neither a false alarm nor required. "Slow but normal" services are not incidents: they are
services (``batch-export``, ~45 s per event, joining the stream late) whose normal events must not
be flagged, reported per service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.eval.metrics import Confusion
from app.eval.replay import Replayer
from app.eval.report import describe_run, explanation_kind, publish, table
from app.schemas.events import Level, LogEvent

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    name: str
    median_ms: float
    spread: float  # sigma of log latency
    events_per_second: float
    error_rate: float
    first_second: float = 0.0  # when the service starts logging


DEFAULT_SERVICES = (
    ServiceProfile("cache", 1.5, 0.25, 20.0, 0.002),
    ServiceProfile("auth", 25.0, 0.3, 10.0, 0.005),
    ServiceProfile("checkout", 180.0, 0.35, 5.0, 0.01),
    ServiceProfile("reports", 4000.0, 0.4, 1.0, 0.01),
)
# The evaluation adds a very slow batch service that joins after ten minutes: normal for it is
# 45 seconds, which any global latency rule would call an incident.
EVAL_SERVICES = (
    *DEFAULT_SERVICES,
    ServiceProfile("batch-export", 45_000.0, 0.3, 0.5, 0.01, first_second=600.0),
)
SLOW_MEDIAN_MS = 1000.0  # services at least this slow are the "slow but normal" ones

KINDS = (
    "latency_spike",
    "error_burst",
    "outlier",
    "novel_template",
    "warning_flood",
    "gradual_ramp",
)
SPIKE_FACTOR = 10.0
OUTLIER_FACTOR = 60.0
BURST_ERROR_SHARE = 0.5
FLOOD_WARN_SHARE = 0.6
RAMP_TOP_FACTOR = 8.0
RAMP_LABEL_FACTOR = 2.0
NOVEL_MESSAGE = "segfault in worker {n}: core dumped to /var/crash/core.{n}"
FLOOD_MESSAGE = "connection pool at {n}% capacity, request queued"


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str  # one of KINDS
    service: str
    start_second: float
    duration_seconds: float = 0.0


@dataclass(slots=True)
class LabelledStream:
    events: list[LogEvent] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    incident_of: list[int] = field(default_factory=list)  # index into incidents, -1 if normal
    incidents: list[Incident] = field(default_factory=list)
    # False for events left out of event-level metrics (see the module docstring).
    scored: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # event time since START


def _normal_message(rng: np.random.Generator, service: str, error: bool) -> str:
    if error:
        return f"{service}: upstream 10.0.{rng.integers(0, 8)}.{rng.integers(1, 250)} returned 503"
    verb = ("GET", "GET", "GET", "POST")[int(rng.integers(0, 4))]
    return f"{service}: {verb} /v1/items/{rng.integers(1, 100_000)} served"


def generate_stream(
    seconds: float,
    incidents: list[Incident],
    services: tuple[ServiceProfile, ...] = DEFAULT_SERVICES,
    seed: int = 7,
    *,
    varied_messages: bool = False,
) -> LabelledStream:
    """The stream in event-time order. With ``varied_messages`` normal lines carry ids and
    addresses (as real logs do) instead of two fixed messages."""
    for incident in incidents:
        if incident.kind not in KINDS:
            raise ValueError(f"unknown incident kind {incident.kind!r}; known: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    # Kinds and options added later draw from their own generator, so streams made with the
    # original kinds stay exactly as they were.
    extra = np.random.default_rng([seed, 1])
    rows: list[tuple[float, str, Level, float, int, str, bool]] = []
    for profile in services:
        count = int(rng.poisson(profile.events_per_second * (seconds - profile.first_second)))
        times = np.sort(rng.uniform(profile.first_second, seconds, count))
        latency = profile.median_ms * np.exp(profile.spread * rng.standard_normal(count))
        errors = rng.random(count) < profile.error_rate
        warns = np.zeros(count, dtype=bool)
        incident_ids = np.full(count, -1)
        scored = np.ones(count, dtype=bool)
        messages: list[str | None] = [None] * count
        for index, incident in enumerate(incidents):
            if incident.service != profile.name:
                continue
            if incident.kind in ("outlier", "novel_template"):
                nearest = int(np.searchsorted(times, incident.start_second))
                if nearest < count:
                    incident_ids[nearest] = index
                    if incident.kind == "outlier":
                        latency[nearest] = profile.median_ms * OUTLIER_FACTOR
                    else:
                        messages[nearest] = NOVEL_MESSAGE.format(n=int(extra.integers(1, 64)))
                continue
            during = (times >= incident.start_second) & (
                times < incident.start_second + incident.duration_seconds
            )
            if incident.kind == "latency_spike":
                latency[during] *= SPIKE_FACTOR
                incident_ids[during] = index
            elif incident.kind == "error_burst":
                burst = during & (rng.random(count) < BURST_ERROR_SHARE)
                errors |= burst
                incident_ids[burst] = index
                scored[during & ~burst] = False
            elif incident.kind == "warning_flood":
                flood = during & ~errors & (extra.random(count) < FLOOD_WARN_SHARE)
                warns |= flood
                incident_ids[flood] = index
                scored[during & ~flood] = False
                for flooded in np.flatnonzero(flood):
                    messages[flooded] = FLOOD_MESSAGE.format(n=int(extra.integers(90, 100)))
            elif incident.kind == "gradual_ramp":
                progress = (times - incident.start_second) / max(incident.duration_seconds, 1e-9)
                factor = 1.0 + (RAMP_TOP_FACTOR - 1.0) * progress
                latency[during] *= factor[during]
                labelled = during & (factor >= RAMP_LABEL_FACTOR)
                incident_ids[labelled] = index
                scored[during & ~labelled] = False
        for row in range(count):
            err = bool(errors[row])
            level = Level.ERROR if err else Level.WARN if warns[row] else Level.INFO
            message = messages[row]
            if message is None:
                if varied_messages:
                    message = _normal_message(extra, profile.name, err)
                else:
                    message = "request failed" if err else "request served"
            rows.append(
                (
                    float(times[row]),
                    profile.name,
                    level,
                    float(latency[row]),
                    int(incident_ids[row]),
                    message,
                    bool(scored[row]),
                )
            )
    rows.sort(key=lambda row: row[0])
    stream = LabelledStream(incidents=list(incidents))
    for t, service, level, lat, inc, message, is_scored in rows:
        stream.events.append(
            LogEvent(
                service=service,
                level=level,
                message=message,
                latency_ms=round(lat, 3),
                timestamp=START + timedelta(seconds=t),
            )
        )
        stream.labels.append(inc >= 0)
        stream.incident_of.append(inc)
        stream.scored.append(is_scored)
        stream.seconds.append(t)
    return stream


# ---- evaluation -------------------------------------------------------------------------------

MIN_EVAL_SECONDS = 600.0
WARMUP_SECONDS = 300.0  # no incident before every service has a baseline
INCIDENT_SPACING = 75.0
DURATIONS = {
    "latency_spike": 30.0,
    "error_burst": 30.0,
    "outlier": 0.0,
    "novel_template": 0.0,
    "warning_flood": 30.0,
    "gradual_ramp": 60.0,
}
TARGET_F1 = 0.95
TARGET_FAR = 0.002
TARGET_DETECT_SECONDS = 10.0


def evaluation_incidents(
    seconds: float, services: tuple[ServiceProfile, ...] = EVAL_SERVICES
) -> list[Incident]:
    """Every kind in turn, rotating over the services, one every 75 s after a 5-minute warm-up;
    a service gets incidents only once it has logged for five minutes."""
    incidents = []
    number = 0
    start = WARMUP_SECONDS
    while start + max(DURATIONS.values()) + 15.0 <= seconds:
        kind = KINDS[number % len(KINDS)]
        for shift in range(len(services)):
            profile = services[(number + shift) % len(services)]
            if start >= profile.first_second + WARMUP_SECONDS:
                break
        incidents.append(Incident(kind, profile.name, start, DURATIONS[kind]))
        number += 1
        start += INCIDENT_SPACING
    return incidents


def evaluate(stream: LabelledStream, flagged: npt.NDArray[np.bool_]) -> dict[str, Any]:
    labels = np.asarray(stream.labels, dtype=bool)
    scored = np.asarray(stream.scored, dtype=bool)
    seconds = np.asarray(stream.seconds)
    incident_of = np.asarray(stream.incident_of)
    services = np.asarray([e.service for e in stream.events])
    overall = Confusion.of(labels[scored], flagged[scored])

    per_service = {}
    for service in sorted(set(services.tolist())):
        rows = scored & (services == service)
        per_service[service] = Confusion.of(labels[rows], flagged[rows]).as_dict()

    per_incident: list[dict[str, Any]] = []
    for index, incident in enumerate(stream.incidents):
        rows = incident_of == index
        hits = np.flatnonzero(rows & flagged)
        delay = float(seconds[hits[0]] - incident.start_second) if hits.size else None
        per_incident.append(
            {
                "kind": incident.kind,
                "service": incident.service,
                "start_second": incident.start_second,
                "events": int(rows.sum()),
                "flagged": int(hits.size),
                "detected": bool(hits.size),
                # Event time from the incident's start to its first flagged event.
                "time_to_detect_seconds": delay,
                "within_target": delay is not None and delay <= TARGET_DETECT_SECONDS,
            }
        )
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [i for i in per_incident if i["kind"] == kind]
        if not mine:
            continue
        rows = scored & np.isin(incident_of, [n for n, i in enumerate(per_incident) if i in mine])
        delays = [float(i["time_to_detect_seconds"]) for i in mine if i["detected"]]
        by_kind[kind] = {
            "incidents": len(mine),
            "detected": sum(i["detected"] for i in mine),
            "within_target": sum(i["within_target"] for i in mine),
            "event_recall": float(flagged[rows].mean()) if rows.any() else None,
            "worst_time_to_detect_seconds": max(delays) if delays else None,
        }
    profiles = {p.name: p for p in EVAL_SERVICES}
    slow = {
        s: per_service[s]["false_alarm_rate"]
        for s in per_service
        if s in profiles and profiles[s].median_ms >= SLOW_MEDIAN_MS
    }
    checks = {
        "f1": overall.f1 >= TARGET_F1,
        "false_alarm_rate": overall.false_alarm_rate <= TARGET_FAR,
        "every_incident_within_10s": all(i["within_target"] for i in per_incident),
        "no_slow_service_flagged_for_being_slow": all(far <= TARGET_FAR for far in slow.values()),
    }
    return {
        "events": int(labels.size),
        "scored_events": int(scored.sum()),
        "anomalous_events": int(labels.sum()),
        "overall": overall.as_dict(),
        "per_service": per_service,
        "per_incident": per_incident,
        "by_kind": by_kind,
        "slow_services_false_alarm_rate": slow,
        "targets": {
            "f1": TARGET_F1,
            "false_alarm_rate": TARGET_FAR,
            "time_to_detect_seconds": TARGET_DETECT_SECONDS,
        },
        "checks": checks,
    }


def run(
    seconds: float, seed: int, replayer: Replayer, info: dict[str, Any], json_out: Path | None
) -> dict[str, Any]:
    incidents = evaluation_incidents(seconds)
    stream = generate_stream(seconds, incidents, EVAL_SERVICES, seed, varied_messages=True)
    payloads = [event.model_dump() for event in stream.events]
    replay = replayer.replay(payloads, keep_explanations=True)
    summary = evaluate(stream, replay.flagged)
    false_alarms: dict[str, int] = {}
    normal = ~np.asarray(stream.labels) & np.asarray(stream.scored)
    for row in np.flatnonzero(replay.flagged & normal):
        key = f"{stream.events[row].service}: {explanation_kind(replay.explanations[row], 90)}"
        false_alarms[key] = false_alarms.get(key, 0) + 1
    summary["false_alarm_reasons"] = dict(
        sorted(false_alarms.items(), key=lambda item: -item[1])[:12]
    )
    summary["run"] = info
    summary["seconds"] = seconds
    summary["seed"] = seed
    summary["settings"] = replayer.settings_summary()
    summary["cost"] = replayer.cost.as_dict()
    publish(summary, json_out, render(summary))
    return summary


def _pct(value: float) -> str:
    return f"{100.0 * value:.3f}%"


def render(summary: dict[str, Any]) -> str:
    o = summary["overall"]
    checks = summary["checks"]

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    incidents = summary["per_incident"]
    slow_rates = ", ".join(
        f"{service} {_pct(rate)}"
        for service, rate in summary["slow_services_false_alarm_rate"].items()
    )
    lines = [
        f"synthetic: {summary['seconds']:g} s, seed {summary['seed']}, {summary['events']} events "
        f"({summary['scored_events']} scored, {summary['anomalous_events']} anomalous), "
        f"{len(incidents)} incidents",
        "",
        table(
            ["precision", "recall", "F1", "false-alarm rate", "TP", "FP", "FN"],
            [
                [
                    f"{o['precision']:.3f}",
                    f"{o['recall']:.3f}",
                    f"{o['f1']:.3f}",
                    _pct(o["false_alarm_rate"]),
                    str(o["tp"]),
                    str(o["fp"]),
                    str(o["fn"]),
                ]
            ],
        ),
        "",
        "per service:",
        table(
            ["service", "precision", "recall", "F1", "false-alarm rate", "FP", "normal events"],
            [
                [
                    name,
                    f"{c['precision']:.3f}",
                    f"{c['recall']:.3f}",
                    f"{c['f1']:.3f}",
                    _pct(c["false_alarm_rate"]),
                    str(c["fp"]),
                    str(c["fp"] + c["tn"]),
                ]
                for name, c in summary["per_service"].items()
            ],
        ),
        "",
        "per incident kind:",
        table(
            ["kind", "detected", "within 10 s", "event recall", "worst time to detect"],
            [
                [
                    kind,
                    f"{k['detected']}/{k['incidents']}",
                    f"{k['within_target']}/{k['incidents']}",
                    "-" if k["event_recall"] is None else f"{k['event_recall']:.3f}",
                    "-"
                    if k["worst_time_to_detect_seconds"] is None
                    else f"{k['worst_time_to_detect_seconds']:.1f} s",
                ]
                for kind, k in summary["by_kind"].items()
            ],
        ),
        "",
        "per incident:",
        table(
            ["#", "kind", "service", "start s", "events", "flagged", "time to detect"],
            [
                [
                    str(n),
                    i["kind"],
                    i["service"],
                    f"{i['start_second']:g}",
                    str(i["events"]),
                    str(i["flagged"]),
                    "missed"
                    if i["time_to_detect_seconds"] is None
                    else f"{i['time_to_detect_seconds']:.2f} s",
                ]
                for n, i in enumerate(incidents)
            ],
        ),
        "",
        "most frequent false alarms: "
        + ("; ".join(f"{n}x {r}" for r, n in summary["false_alarm_reasons"].items()) or "none"),
        "",
        f"targets: F1 >= {TARGET_F1} {mark(checks['f1'])}; false alarms <= {_pct(TARGET_FAR)} "
        f"{mark(checks['false_alarm_rate'])}; every incident within {TARGET_DETECT_SECONDS:g} s "
        f"{mark(checks['every_incident_within_10s'])}; no service flagged for merely being slow "
        f"{mark(checks['no_slow_service_flagged_for_being_slow'])} ({slow_rates})",
        f"engine cost: {summary['cost']['events']} events, "
        f"{summary['cost']['wall_us_per_event']:.1f} us/event wall, "
        f"{summary['cost']['cpu_us_per_event']:.1f} us/event CPU",
        describe_run(summary["run"]),
    ]
    return "\n".join(lines)
