"""The generated stream's labels, and its evaluation end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.eval.__main__ import main
from app.eval.synthetic import (
    DEFAULT_SERVICES,
    EVAL_SERVICES,
    FLOOD_MESSAGE,
    KINDS,
    OUTLIER_FACTOR,
    RAMP_LABEL_FACTOR,
    RAMP_TOP_FACTOR,
    START,
    Incident,
    evaluate,
    evaluation_incidents,
    generate_stream,
)
from app.schemas.events import Level

INCIDENTS = [
    Incident("latency_spike", "auth", 60.0, 20.0),
    Incident("error_burst", "cache", 90.0, 20.0),
    Incident("outlier", "checkout", 120.0),
    Incident("novel_template", "auth", 130.0),
    Incident("warning_flood", "cache", 150.0, 20.0),
    Incident("gradual_ramp", "checkout", 180.0, 70.0),
]
STREAM = generate_stream(300.0, INCIDENTS, DEFAULT_SERVICES, seed=3, varied_messages=True)
EVENTS = STREAM.events
INCIDENT_OF = np.array(STREAM.incident_of)
SECONDS = np.array(STREAM.seconds)


def rows_of(kind: str) -> np.ndarray:
    return np.flatnonzero(INCIDENT_OF == [i.kind for i in INCIDENTS].index(kind))


def test_labels_follow_incident_of_and_events_are_in_time_order() -> None:
    assert STREAM.labels == [i >= 0 for i in STREAM.incident_of]
    assert len(STREAM.scored) == len(SECONDS) == len(EVENTS)
    assert np.all(np.diff(SECONDS) >= 0)
    assert EVENTS[0].timestamp is not None
    assert EVENTS[0].timestamp >= START


def test_every_kind_is_labelled_only_in_its_service_and_span() -> None:
    for number, incident in enumerate(INCIDENTS):
        rows = np.flatnonzero(INCIDENT_OF == number)
        assert rows.size >= 1, incident.kind
        assert {EVENTS[r].service for r in rows} == {incident.service}
        assert SECONDS[rows].min() >= incident.start_second
        if incident.duration_seconds:
            assert SECONDS[rows].max() < incident.start_second + incident.duration_seconds


def test_single_event_kinds() -> None:
    (outlier,) = rows_of("outlier")
    median = {p.name: p.median_ms for p in DEFAULT_SERVICES}["checkout"]
    assert EVENTS[outlier].latency_ms == pytest.approx(median * OUTLIER_FACTOR)
    (novel,) = rows_of("novel_template")
    message = EVENTS[novel].message
    assert message.startswith("segfault")
    assert sum(e.message == message for e in EVENTS) == 1
    assert EVENTS[novel].level in (Level.INFO, Level.ERROR)


def test_collective_kinds_label_the_anomalous_events_and_leave_the_rest_unscored() -> None:
    burst = rows_of("error_burst")
    assert all(EVENTS[r].level is Level.ERROR for r in burst)
    flood = rows_of("warning_flood")
    assert all(EVENTS[r].level is Level.WARN for r in flood)
    assert all(EVENTS[r].message.split(" at ")[0] == FLOOD_MESSAGE.split(" at ")[0] for r in flood)
    for kind, incident in (("error_burst", INCIDENTS[1]), ("warning_flood", INCIDENTS[4])):
        span = (
            (SECONDS >= incident.start_second)
            & (SECONDS < incident.start_second + incident.duration_seconds)
            & np.array([e.service == incident.service for e in EVENTS])
        )
        labelled = np.isin(np.arange(len(EVENTS)), rows_of(kind))
        assert not np.array(STREAM.scored)[span & ~labelled].any(), kind


def test_ramp_labels_start_where_latency_has_doubled() -> None:
    ramp = INCIDENTS[5]
    rows = rows_of("gradual_ramp")
    first_doubled = ramp.start_second + ramp.duration_seconds * (RAMP_LABEL_FACTOR - 1) / (
        RAMP_TOP_FACTOR - 1
    )
    assert SECONDS[rows].min() >= first_doubled
    assert SECONDS[rows].min() < first_doubled + 2.0


def test_original_kinds_and_messages_are_unchanged_by_default() -> None:
    plain = generate_stream(120.0, [Incident("latency_spike", "auth", 60.0, 10.0)], seed=3)
    assert {e.message for e in plain.events} <= {"request served", "request failed"}
    assert all(plain.scored)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown incident kind"):
        generate_stream(10.0, [Incident("meteor", "auth", 1.0)])


def test_evaluation_schedule_covers_every_kind_and_spares_young_services() -> None:
    incidents = evaluation_incidents(1800.0)
    assert {i.kind for i in incidents} == set(KINDS)
    first = {p.name: p.first_second for p in EVAL_SERVICES}
    assert all(i.start_second >= first[i.service] + 300.0 for i in incidents)
    assert len({i.service for i in incidents}) == len(EVAL_SERVICES)


def test_evaluate_an_oracle_and_a_silent_detector() -> None:
    labels = np.array(STREAM.labels)
    oracle = evaluate(STREAM, labels)
    assert oracle["overall"]["f1"] == 1.0
    assert oracle["overall"]["false_alarm_rate"] == 0.0
    spike = oracle["per_incident"][0]
    first = SECONDS[rows_of("latency_spike")].min()
    assert spike["time_to_detect_seconds"] == pytest.approx(first - 60.0)
    silent = evaluate(STREAM, np.zeros(len(labels), dtype=bool))
    assert silent["overall"]["recall"] == 0.0
    assert not any(i["detected"] for i in silent["per_incident"])
    assert not silent["checks"]["every_incident_within_10s"]
    # Flagging every event: each service's false-alarm rate is 1.
    noisy = evaluate(STREAM, np.ones(len(labels), dtype=bool))
    assert all(c["false_alarm_rate"] == 1.0 for c in noisy["per_service"].values())


def test_cli_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "synthetic.json"
    assert main(["synthetic", "--seconds", "600", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "per incident kind" in out
    assert "us/event" in out
    summary = json.loads(report.read_text())
    assert summary["events"] == summary["cost"]["events"]
    assert len(summary["per_incident"]) >= 3


def test_cli_refuses_too_short_a_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synthetic", "--seconds", "10"]) == 2
    assert "--seconds" in capsys.readouterr().err
