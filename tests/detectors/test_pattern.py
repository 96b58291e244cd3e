"""The pattern store and detector: a change of shape in a service's latencies, where no single
value is out of its usual range, is flagged; steady noise and a known rhythm are not."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors.forecast import ForecastDetector
from app.detectors.pattern import PatternDetector
from app.events import EventBatch
from app.forecasts import ForecastStore
from app.patterns import MAX_PATTERNS, ORDERS, QUANTISE_EVENTS, SETTLE_EVENTS, PatternStore
from app.schemas.events import Level
from tests.detectors.test_contract import at_second, fresh_stores, stream_context

WARM = QUANTISE_EVENTS + SETTLE_EVENTS


def _batch(latency: np.ndarray, services: list[str] | None = None) -> EventBatch:
    n = latency.size
    times = np.arange(n, dtype=np.float64) * 60.0
    return EventBatch(
        services or ["svc"] * n,
        [Level.INFO] * n,
        np.zeros(n),
        latency.astype(np.float64),
        times,
    )


def _square_wave(n: int, period: int, seed: int) -> np.ndarray:
    """A service that alternates between 100 ms and 400 ms every ``period / 2`` events
    (a batch job that runs on a rhythm), with 3% noise."""
    rng = np.random.default_rng(seed)
    high = (np.arange(n) % period) < period // 2
    return np.where(high, 400.0, 100.0) * np.exp(0.03 * rng.standard_normal(n))


def test_steady_noise_rarely_alarms() -> None:
    rng = np.random.default_rng(0)
    view = PatternStore().observe(_batch(50.0 * np.exp(0.2 * rng.standard_normal(5000))))
    assert np.all(view.rarity[:WARM] == 1.0)
    assert (view.rarity < 1e-3).mean() < 0.002


def test_a_known_rhythm_is_not_news_but_a_new_rhythm_of_the_same_values_is() -> None:
    """The wave's two levels stay the same; only their order changes (every event flips): the
    pattern method finds it within a few events, where the latency forecast, which judges each
    value alone, finds nothing rarer than it finds in the old rhythm."""
    old = _square_wave(3000, period=40, seed=1)
    flipping = np.where(np.arange(40) % 2 == 0, 400.0, 100.0)
    latency = np.concatenate([old, flipping])
    view = PatternStore().observe(_batch(latency))
    rhythm = view.rarity[WARM:3000]
    change = view.rarity[3000:]
    assert rhythm.min() > 1e-3
    # Within five events; then the flip's patterns (up to the last four levels) are known too.
    assert change[:5].min() < 1e-4
    first = int(np.argmax(change < 1e-4))
    assert view.novel_order[3000 + first] >= 1  # a new order of known levels, not a new level
    forecast = ForecastStore().observe(_batch(latency))
    assert forecast.latency_rarity[3000:].min() >= forecast.latency_rarity[WARM:3000].min()


def test_a_slow_climb_to_latencies_never_seen_is_flagged() -> None:
    """Each step is small, but the levels are new to the service: new at order 0 is rare for a
    service that has kept within its range for thousands of events."""
    rng = np.random.default_rng(2)
    latency = 50.0 * np.exp(0.1 * rng.standard_normal(4000))
    climb = 50.0 * np.exp(np.linspace(0.3, 1.0, 40) + 0.02 * rng.standard_normal(40))
    view = PatternStore().observe(_batch(np.concatenate([latency, climb])))
    assert view.rarity[WARM:4000].min() > 1e-4
    assert view.rarity[4000:].min() < 1e-6
    assert np.nanmin(view.novel_order[4000:]) == 0


def test_services_are_judged_on_their_own_history() -> None:
    steady = 20.0 * np.ones(1000)
    store = PatternStore()
    store.observe(_batch(steady, ["a"] * 1000))
    # Service b has seen nothing: it is still fixing its levels, so it is not judged.
    view = store.observe(_batch(np.array([20.0, 2000.0, 20.0]), ["b", "b", "b"]))
    assert np.all(view.rarity == 1.0)
    assert np.all(np.isnan(view.novel_order))


def test_events_without_latency_are_skipped() -> None:
    latency = np.full(600, np.nan)
    view = PatternStore().observe(_batch(latency))
    assert np.all(view.rarity == 1.0)


def test_a_batch_scores_as_one_event_at_a_time() -> None:
    latency = np.concatenate([_square_wave(700, 20, 3), np.full(20, 250.0)])
    whole = PatternStore().observe(_batch(latency))
    store = PatternStore()
    single = [store.observe(_batch(latency[i : i + 1])).rarity[0] for i in range(latency.size)]
    assert whole.rarity.tolist() == single


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0.0, 1e6), st.just(float("nan"))), min_size=1, max_size=600),
)
def test_rarities_are_probabilities_for_any_latencies(values: list[float]) -> None:
    view = PatternStore().observe(_batch(np.asarray(values)))
    assert view.rarity.shape == (len(values),)
    assert np.all((view.rarity > 0.0) & (view.rarity <= 1.0))
    judged = ~np.isnan(view.novel_order)
    assert np.all((view.novel_order[judged] >= 0) & (view.novel_order[judged] < ORDERS))


def test_pattern_tables_stay_bounded() -> None:
    """A service whose latencies are all over the place makes new patterns without end; the
    tables forget the ones seen once rather than grow."""
    rng = np.random.default_rng(4)
    store = PatternStore()
    store.observe(_batch(np.exp(rng.uniform(0.0, 12.0, 60_000))))
    state = store.get("svc")
    assert state is not None
    assert all(len(table) <= MAX_PATTERNS for table in state.counts)


def test_detector_reads_the_engine_pattern_view() -> None:
    stores = fresh_stores()
    rng = np.random.default_rng(5)
    events = [
        at_second("api", "INFO", float(rng.lognormal(4.0, 0.2)), i * 0.5) for i in range(WARM)
    ]
    output = PatternDetector().rarity(stream_context(stores, events))
    assert output.rarity.shape == (WARM,)
    assert set(output.metrics) == {"novel_pattern_order", "recent_novel_patterns", "novelty_rate"}
    # The forecast detector is untouched by the new view (its own store is separate).
    assert ForecastDetector().rarity(stream_context(stores, events[:5])).rarity.shape == (5,)
