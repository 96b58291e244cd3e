"""The scoring engine: a batch is scored exactly as its events one call at a time (hypothesis over
event sequences), and a broken method degrades the answer instead of failing it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bootstrap import load_or_bootstrap
from app.detectors.base import MethodOutput, ScoringContext
from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.engine import ScoringEngine
from app.model import Model
from app.model_store import ModelStore
from app.schemas.events import Level, LogEvent
from app.settings import Settings
from tests.conftest import make_settings
from tests.helpers import T0


@pytest.fixture(scope="module")
def model_and_settings(
    tmp_path_factory: pytest.TempPathFactory, bootstrapped_artifacts: Path
) -> tuple[Model, Settings]:
    settings = make_settings(tmp_path_factory.mktemp("engine"), window_min_events=3)
    model = load_or_bootstrap(ModelStore(bootstrapped_artifacts), settings)
    return model, settings


events = st.builds(
    LogEvent,
    service=st.sampled_from(["a", "b", "c"]),
    level=st.sampled_from(list(Level)),
    latency_ms=st.one_of(st.none(), st.floats(0.0, 1e6), st.sampled_from([0.0, 10.0, 10.0])),
    timestamp=st.one_of(
        st.none(), st.integers(0, 900).map(lambda s: T0 + timedelta(seconds=s / 2))
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(events, min_size=1, max_size=60))
def test_batch_equals_one_call_per_event(
    model_and_settings: tuple[Model, Settings], stream: list[LogEvent]
) -> None:
    model, settings = model_and_settings
    received_at = T0.timestamp() + 100.0  # events without a timestamp take this time in both
    one_by_one = ScoringEngine(settings, model)
    in_batch = ScoringEngine(settings, model)
    sequential = [one_by_one.score([e], received_at)[0] for e in stream]
    assert in_batch.score(stream, received_at) == sequential
    for service in ("a", "b", "c"):
        assert one_by_one.stats(service) == in_batch.stats(service)


def test_empty_batch_scores_nothing(model_and_settings: tuple[Model, Settings]) -> None:
    model, settings = model_and_settings
    assert ScoringEngine(settings, model).score([]) == []


def test_a_failing_method_is_reported_as_degraded(
    model_and_settings: tuple[Model, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, settings = model_and_settings
    engine = ScoringEngine(settings, model)

    def broken(self: SlidingWindowDetector, context: ScoringContext) -> MethodOutput:
        raise RuntimeError("window store unavailable")

    # Both entry points: a batch's and the batch of one's (``rarity_one``).
    monkeypatch.setattr(SlidingWindowDetector, "rarity", broken)
    monkeypatch.setattr(SlidingWindowDetector, "rarity_one", broken)
    (result,) = engine.score([LogEvent(service="a", level=Level.INFO, latency_ms=5.0)])
    window: dict[str, Any] = result["methods"]["sliding_window"]
    assert window["degraded"] == "RuntimeError: window store unavailable"
    assert window["anomaly_score"] == 0.0
    assert result["methods"]["isolation_forest"].get("degraded") is None
    assert result["anomaly_score"] == result["methods"]["isolation_forest"]["anomaly_score"]


def test_weights_and_threshold_come_from_settings(
    model_and_settings: tuple[Model, Settings], tmp_path: Path
) -> None:
    model, _ = model_and_settings
    settings = make_settings(
        tmp_path,
        weight_sliding_window=0.0,
        weight_templates=0.0,
        weight_sequence=0.0,
        weight_forecast=0.0,
        weight_autoencoder=0.0,
        weight_isolation_forest=0.5,
        anomaly_threshold=0.2,
    )
    engine = ScoringEngine(settings, model)
    results = engine.score(
        [LogEvent(service="a", level=Level.ERROR, latency_ms=5.0 * (i + 1)) for i in range(30)]
    )
    for result in results:
        forest = result["methods"]["isolation_forest"]["anomaly_score"]
        assert result["anomaly_score"] == pytest.approx(0.5 * forest)
        assert result["is_anomaly"] == (result["anomaly_score"] >= 0.2)
        assert result["methods"]["isolation_forest"]["is_anomaly"] == (forest >= 0.2)


def test_swap_serves_the_new_model_from_the_next_call(
    model_and_settings: tuple[Model, Settings],
) -> None:
    model, settings = model_and_settings
    engine = ScoringEngine(settings, model)
    detector = IsolationForestDetector.from_arrays(
        model.isolation_forest.get_params(), model.isolation_forest.to_arrays()
    )
    other = Model("v9999-20261124T000000Z", detector, [], model.manifest)
    event = LogEvent(service="a", level=Level.INFO, latency_ms=5.0)
    assert engine.score([event])[0]["model_version"] == model.version
    engine.swap(other)
    assert engine.score([event])[0]["model_version"] == "v9999-20261124T000000Z"


def test_subnormal_latencies_do_not_break_the_latency_ratio(
    model_and_settings: tuple[Model, Settings],
) -> None:
    # Found by hypothesis: a baseline median of ~2e-309 ms made latency / median overflow.
    model, settings = model_and_settings
    engine = ScoringEngine(settings, model)
    tiny = [LogEvent(service="a", level=Level.INFO, latency_ms=2.2e-309) for _ in range(25)]
    results = engine.score([*tiny, LogEvent(service="a", level=Level.INFO, latency_ms=1.0)])
    last = results[-1]
    assert all(m.get("degraded") is None for m in last["methods"].values())
    assert last["methods"]["isolation_forest"]["metrics"]["latency_ratio"] is None
    assert "inf" not in last["explanation"]


def test_explanations_count_one_error_in_the_singular(
    model_and_settings: tuple[Model, Settings],
) -> None:
    # The first error of a quiet service reads "1 error in 1 event" (forecast), not "1 errors".
    # Quiet for 2,000 lines: after n clean lines an error has probability 1/2 / (n + 1) (the
    # error-rate prior is Jeffreys'), so after only a few dozen it is not notable at all.
    model, settings = model_and_settings
    engine = ScoringEngine(settings, model)
    quiet = [
        LogEvent(
            service="a",
            level=Level.INFO,
            latency_ms=10.0,
            timestamp=T0 + timedelta(seconds=s / 10),
        )
        for s in range(2000)
    ]
    error = LogEvent(
        service="a", level=Level.ERROR, latency_ms=10.0, timestamp=T0 + timedelta(seconds=200)
    )
    explanation = engine.score([*quiet, error])[-1]["explanation"]
    assert "1 error in" in explanation
    assert "1 errors" not in explanation


def test_a_new_rhythm_of_familiar_latencies_is_explained_as_a_new_pattern(
    model_and_settings: tuple[Model, Settings],
) -> None:
    """A batch job alternating 100 ms and 400 ms in runs of 20, then every event: each value is
    familiar, the pattern is not; the pattern method says so in the explanation."""
    model, settings = model_and_settings
    engine = ScoringEngine(settings, model)
    latencies = [400.0 if (k // 20) % 2 == 0 else 100.0 for k in range(2400)]
    latencies += [400.0 if k % 2 == 0 else 100.0 for k in range(12)]
    stream = [
        LogEvent(
            service="batch",
            level=Level.INFO,
            latency_ms=latency * (1.0 + 0.01 * (k % 3)),
            timestamp=T0 + timedelta(seconds=60 * k),
        )
        for k, latency in enumerate(latencies)
    ]
    results = engine.score(stream)
    flip = results[2400:]
    assert max(r["methods"]["pattern"]["anomaly_score"] for r in results[:2400]) < 0.5
    strongest = max(flip, key=lambda r: r["methods"]["pattern"]["anomaly_score"])
    assert strongest["methods"]["pattern"]["anomaly_score"] >= 0.5
    assert "a new pattern of latencies" in strongest["explanation"]
