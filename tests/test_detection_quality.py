"""Detection quality on a generated stream (app/eval/synthetic.py): services whose normal
latencies differ by four orders of magnitude each raise few false alarms, the slow ones included,
and a latency spike, error bursts and single extreme outliers are each flagged.

The stream goes through the same engine as POST /score (AnomalyDetector), started from the
bootstrap model a fresh install serves, in event order."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.eval.synthetic import (
    DEFAULT_SERVICES,
    START,
    Incident,
    LabelledStream,
    ServiceProfile,
    generate_stream,
)
from app.local import AnomalyDetector
from app.settings import Settings

# The defaults span 1.5 ms to 4 s; a 45-second export job stretches that to 4.5 decades.
SERVICES = (*DEFAULT_SERVICES, ServiceProfile("export", 45_000.0, 0.5, 1.0, 0.02))
MAX_FALSE_ALARM_RATE = 0.005
DETECTION_DELAY_SECONDS = 10.0


def score_stream(settings: Settings, stream: LabelledStream) -> list[dict[str, Any]]:
    detector = AnomalyDetector(settings)
    results: list[dict[str, Any]] = []
    for start in range(0, len(stream.events), 5000):
        results.extend(detector.predict_batch(stream.events[start : start + 5000]))
    return results


def test_normal_traffic_raises_few_false_alarms_for_every_service(
    bootstrapped_settings: Settings,
) -> None:
    stream = generate_stream(600, [], services=SERVICES, seed=7)
    results = score_stream(bootstrapped_settings, stream)
    alarms: dict[str, int] = defaultdict(int)
    events: dict[str, int] = defaultdict(int)
    for log, result in zip(stream.events, results, strict=True):
        events[log.service] += 1
        alarms[log.service] += int(result["is_anomaly"])
    assert set(events) == {profile.name for profile in SERVICES}
    rates = {service: alarms[service] / events[service] for service in events}
    assert min(events.values()) > 500  # enough events that 0.5% means something
    for service, rate in rates.items():
        assert rate <= MAX_FALSE_ALARM_RATE, f"{service}: {rate:.2%} false alarms ({rates})"
    # Scores are spread, not pinned: normal events mostly score low.
    scores = sorted(r["anomaly_score"] for r in results)
    assert scores[len(scores) // 2] < 0.25


INCIDENTS = [
    Incident("latency_spike", "checkout", 240.0, 60.0),
    Incident("error_burst", "auth", 330.0, 60.0),
    Incident("error_burst", "reports", 420.0, 60.0),
    Incident("outlier", "cache", 150.0),
    Incident("outlier", "reports", 200.0),
    Incident("outlier", "export", 300.0),
    Incident("outlier", "checkout", 500.0),
]


@pytest.fixture(scope="module")
def incident_run(tmp_path_factory: pytest.TempPathFactory, bootstrapped_artifacts: Path) -> Any:
    from tests.conftest import copy_artifacts, make_settings

    root = tmp_path_factory.mktemp("quality")
    copy_artifacts(bootstrapped_artifacts, root / "artifacts")
    stream = generate_stream(600, INCIDENTS, services=SERVICES, seed=7)
    return stream, score_stream(make_settings(root), stream)


@pytest.mark.parametrize(
    "index", range(len(INCIDENTS)), ids=lambda i: f"{INCIDENTS[i].kind}-{INCIDENTS[i].service}"
)
def test_each_incident_is_flagged_soon_after_it_starts(incident_run: Any, index: int) -> None:
    stream, results = incident_run
    incident = INCIDENTS[index]
    members = [i for i, owner in enumerate(stream.incident_of) if owner == index]
    assert members, f"the generator placed no events for {incident}"
    started = stream.events[members[0]].timestamp
    assert started is not None
    flagged = [i for i in members if results[i]["is_anomaly"]]
    assert flagged, f"{incident} was never flagged"
    first = stream.events[flagged[0]].timestamp
    assert first is not None
    assert first - started <= timedelta(seconds=DETECTION_DELAY_SECONDS)
    if incident.kind == "outlier":
        (only,) = members
        assert results[only]["is_anomaly"]
        assert "x this service's median" in results[only]["explanation"]
    if incident.kind == "error_burst":
        # The sliding window ("N errors in the last M events") or the forecast ("N errors in M
        # events within 10 s") says it, whichever judged the burst first.
        assert "errors in" in results[flagged[0]]["explanation"]


def test_incident_stream_keeps_false_alarms_low_away_from_incidents(incident_run: Any) -> None:
    """Events of other services, or well before an incident, are not dragged into alarms."""
    stream, results = incident_run
    alarms = 0
    counted = 0
    for log, owner, result in zip(stream.events, stream.incident_of, results, strict=True):
        if owner >= 0:
            continue
        assert log.timestamp is not None
        near = any(
            inc.service == log.service
            and -5.0
            <= (log.timestamp - START).total_seconds() - inc.start_second
            <= inc.duration_seconds + 30.0
            for inc in INCIDENTS
        )
        if near:
            continue
        counted += 1
        alarms += int(result["is_anomaly"])
    assert counted > 15_000
    assert alarms / counted <= MAX_FALSE_ALARM_RATE
