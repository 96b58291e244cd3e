"""The array-backed online stores against the per-service-object implementations they replaced
(kept in ``tests/reference``): the same views, value for value, on random streams of events."""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import baselines, forecasts, patterns, windows
from app.baselines import BaselineStore, SeedBaseline
from app.detectors.base import MethodOutput, OneOutput, ScoringContext
from app.detectors.forecast import ForecastDetector
from app.detectors.sequence import SequenceDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.detectors.templates import TemplateDetector
from app.events import EventBatch
from app.forecasts import ForecastStore
from app.patterns import PatternStore
from app.schemas.events import LEVEL_SCORES, Level
from app.sequences import SequenceStore
from app.templates import TemplateStore
from app.windows import WindowStore
from tests.reference import patterns_scalar
from tests.reference.baselines_scalar import BaselineStore as ScalarBaselineStore
from tests.reference.baselines_scalar import SeedBaseline as ScalarSeedBaseline
from tests.reference.forecasts_scalar import ForecastStore as ScalarForecastStore
from tests.reference.sequences_scalar import SequenceStore as ScalarSequenceStore
from tests.reference.templates_scalar import TemplateStore as ScalarTemplateStore
from tests.reference.windows_scalar import WindowStore as ScalarWindowStore

LEVELS = list(Level)


@st.composite
def streams(draw: st.DrawFn) -> list[EventBatch]:
    """Batches of events over a few services: time mostly forward with jumps and late events,
    latencies with gaps and outliers, errors in bursts, batch sizes from 1 to a few dozen."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 600))
    rng = np.random.default_rng(seed)
    services = [f"s{k}" for k in rng.integers(0, draw(st.integers(1, 6)), n)]
    steps = rng.choice(
        [0.0, 0.1, 1.0, 7.0, 900.0, 40_000.0, -5.0], n, p=[0.1, 0.3, 0.3, 0.1, 0.1, 0.05, 0.05]
    )
    times = draw(st.sampled_from([1.7e9, -1.0e4])) + np.cumsum(steps)
    latency = 20.0 * np.exp(rng.normal(0.0, draw(st.sampled_from([0.0, 0.1, 1.0])), n))
    latency[rng.random(n) < 0.1] = np.nan
    latency[rng.random(n) < 0.02] *= 100.0
    levels = [LEVELS[k] for k in rng.choice(len(LEVELS), n, p=[0.2, 0.5, 0.15, 0.1, 0.05])]
    cuts = np.sort(rng.choice(np.arange(1, n), min(n - 1, draw(st.integers(0, 30))), replace=False))
    batches = []
    for part in np.split(np.arange(n), cuts):
        batches.append(
            EventBatch(
                [services[i] for i in part],
                [levels[i] for i in part],
                np.array([LEVEL_SCORES[levels[i]] for i in part], dtype=np.float64),
                latency[part].copy(),
                times[part].copy(),
            )
        )
    return batches


def state_of(value: Any) -> Any:
    """A comparable picture of a store's state: containers in their order, floats by their bits,
    arrays by bytes, objects by their slots."""
    if isinstance(value, float):
        return ("f", value.hex() if not math.isnan(value) else "nan")
    if isinstance(value, bool | int | str | None):
        return value
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return ("d", [(state_of(k), state_of(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return ("l", [state_of(v) for v in value])
    if isinstance(value, set):
        return ("s", sorted(map(repr, value)))
    slots = [name for cls in type(value).__mro__ for name in getattr(cls, "__slots__", ())]
    if slots:
        return (type(value).__name__, [(n, state_of(getattr(value, n, None))) for n in slots])
    return (type(value).__name__, state_of(vars(value)))


def assert_same_view(new: Any, old: Any) -> None:
    """Every field equal, dtype included (the reference views are dataclasses, ours tuples)."""
    names = old._fields if hasattr(old, "_fields") else [f.name for f in dataclasses.fields(old)]
    assert list(new._fields) == list(names)
    for name in names:
        np.testing.assert_array_equal(
            getattr(new, name), getattr(old, name), err_msg=name, strict=True
        )


@settings(max_examples=60, deadline=None)
@given(
    batches=streams(),
    max_services=st.integers(1, 8),
    slots=st.sampled_from([1, 7, 48]),
    warmup=st.sampled_from([1, 3, 20]),
)
def test_forecast_store_matches_the_scalar_store(
    batches: list[EventBatch], max_services: int, slots: int, warmup: int
) -> None:
    def store(cls: Any) -> Any:
        return cls(slots, 600.0, 0.5, 10.0, warmup, max_services=max_services)

    new, old = store(ForecastStore), store(ScalarForecastStore)
    for batch in batches:
        assert_same_view(new.observe(batch), old.observe(batch))
    assert list(new) == list(old)
    assert new.evictions == old.evictions


@settings(max_examples=10, deadline=None)
@given(batches=streams(), max_services=st.integers(1, 4))
def test_forecast_kernel_as_plain_python_matches_the_compiled_kernel(
    batches: list[EventBatch], max_services: int
) -> None:
    """Without numba the kernel runs as written: the same views."""
    compiled, plain = (
        ForecastStore(max_services=max_services),
        ForecastStore(max_services=max_services),
    )
    for batch in batches:
        expected = compiled.observe(batch)
        with patch.object(forecasts, "_observe", forecasts._observe_kernel):
            assert_same_view(plain.observe(batch), expected)


@settings(max_examples=60, deadline=None)
@given(
    batches=streams(),
    max_services=st.integers(1, 8),
    n_buckets=st.sampled_from([1, 5, 60]),
    min_events=st.sampled_from([2, 10]),
)
def test_window_store_matches_the_scalar_store(
    batches: list[EventBatch], max_services: int, n_buckets: int, min_events: int
) -> None:
    def store(cls: Any) -> Any:
        return cls(300.0, n_buckets, min_events, 600.0, max_services)

    new, old = store(WindowStore), store(ScalarWindowStore)
    for batch in batches:
        assert_same_view(new.observe(batch), old.observe(batch))
        for service in old:
            snapshot, expected = new.snapshot(service), old.snapshot(service)
            assert snapshot is not None
            assert dataclasses.astuple(snapshot) == dataclasses.astuple(expected)
    assert list(new) == list(old)
    assert new.evictions == old.evictions


@settings(max_examples=10, deadline=None)
@given(batches=streams(), max_services=st.integers(1, 4))
def test_window_kernel_as_plain_python_matches_the_compiled_kernel(
    batches: list[EventBatch], max_services: int
) -> None:
    compiled = WindowStore(300.0, 60, 10, 600.0, max_services)
    plain = WindowStore(300.0, 60, 10, 600.0, max_services)
    for batch in batches:
        expected = compiled.observe(batch)
        with patch.object(windows, "_observe", windows._observe_kernel):
            assert_same_view(plain.observe(batch), expected)


@settings(max_examples=60, deadline=None)
@given(
    batches=streams(),
    max_services=st.integers(1, 8),
    warmup=st.sampled_from([1, 3, 20]),
    seeded=st.lists(st.tuples(st.sampled_from(["s0", "s3", "t"]), st.integers(0, 40)), max_size=3),
)
def test_baseline_store_matches_the_scalar_store(
    batches: list[EventBatch], max_services: int, warmup: int, seeded: list[tuple[str, int]]
) -> None:
    seeds = [SeedBaseline(service, 3.0, 0.2, events) for service, events in seeded]
    new, old = (
        BaselineStore(warmup, 600.0, max_services),
        ScalarBaselineStore(warmup, 600.0, max_services),
    )
    for batch in batches:
        new.seed(seeds)
        old.seed([ScalarSeedBaseline(*dataclasses.astuple(seed)) for seed in seeds])
        assert_same_view(new.observe(batch), old.observe(batch))
        for service in old:
            state, expected = new.get(service), old.get(service)
            assert state is not None
            assert expected is not None
            assert state.warmup_latencies == len(expected.warmup_values or [])
            assert (state.events_seen, state.ready, state.location, state.scale, state.weight) == (
                expected.events_seen,
                expected.ready,
                expected.location,
                expected.scale,
                expected.weight,
            )
    assert list(new) == list(old)
    assert new.evictions == old.evictions


@settings(max_examples=10, deadline=None)
@given(batches=streams(), max_services=st.integers(1, 4))
def test_baseline_kernel_as_plain_python_matches_the_compiled_kernel(
    batches: list[EventBatch], max_services: int
) -> None:
    compiled, plain = BaselineStore(20, 600.0, max_services), BaselineStore(20, 600.0, max_services)
    for batch in batches:
        expected = compiled.observe(batch)
        with patch.object(baselines, "_observe", baselines._observe_kernel):
            assert_same_view(plain.observe(batch), expected)


def assert_same_output(new: MethodOutput, old: MethodOutput) -> None:
    np.testing.assert_array_equal(new.rarity, old.rarity, err_msg="rarity", strict=True)
    assert list(new.metrics) == list(old.metrics)
    for name, values in old.metrics.items():
        np.testing.assert_array_equal(new.metrics[name], values, err_msg=name, strict=True)


def as_arrays(output: OneOutput) -> MethodOutput:
    """A detector's one-event output (Python floats) as the 1-element arrays of a batch's."""
    return MethodOutput(
        np.array([output.rarity]), {k: np.array([v]) for k, v in output.metrics.items()}
    )


def one_event_contexts(batches: list[EventBatch], max_services: int) -> list[ScoringContext]:
    """Each event of the stream as a batch of one, with the views the engine gives detectors."""
    baseline_store = BaselineStore(3, 600.0, max_services)
    window_store = WindowStore(300.0, 60, 2, 600.0, max_services)
    contexts = []
    for batch in batches:
        for i in range(len(batch)):
            one = EventBatch(
                batch.services[i : i + 1],
                batch.levels[i : i + 1],
                batch.level_scores[i : i + 1],
                batch.latency_ms[i : i + 1],
                batch.timestamps[i : i + 1],
            )
            baseline, window = baseline_store.observe(one), window_store.observe(one)
            contexts.append(ScoringContext(one, np.zeros((1, 3)), baseline, window))
    return contexts


@settings(max_examples=60, deadline=None)
@given(batches=streams(), max_services=st.integers(1, 8))
def test_sliding_window_detector_on_one_event_matches_its_batch_path(
    batches: list[EventBatch], max_services: int
) -> None:
    detector = SlidingWindowDetector()
    for context in one_event_contexts(batches, max_services):
        assert_same_output(
            as_arrays(detector.rarity_one(context)), detector._rarity_of_batch(context)
        )


WORDS = ["disk", "full", "user", "login", "failed", "timeout", "upstream", "503", "id=7", "ok"]


@st.composite
def messages_of(draw: st.DrawFn, batches: list[EventBatch]) -> list[list[str]]:
    """A message per event: a few recurring shapes with numbers, the service's own name, rare
    free text, empty and blank messages."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = [" ".join(rng.choice(WORDS, rng.integers(1, 6))) for _ in range(rng.integers(1, 12))]
    result = []
    for batch in batches:
        column = []
        for service in batch.services:
            kind = rng.random()
            if kind < 0.05:
                column.append("" if kind < 0.03 else "   ")
            elif kind < 0.15:
                column.append(" ".join(rng.choice(WORDS, rng.integers(1, 9))) + f" {service}")
            else:
                column.append(f"{rng.choice(shapes)} {rng.integers(0, 500)}")
        result.append(column)
    return result


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batches=streams(), max_services=st.integers(1, 8))
def test_template_store_matches_the_scalar_store(
    data: st.DataObject, batches: list[EventBatch], max_services: int
) -> None:
    messages = data.draw(messages_of(batches))
    max_templates = data.draw(st.sampled_from([10, 5000]))
    halflife = data.draw(st.sampled_from([0.5, 50.0]))  # 0.5 rescales the surge counters often
    new = TemplateStore(max_templates, 0.5, halflife, max_services)
    old = ScalarTemplateStore(max_templates, 0.5, halflife, max_services)
    for batch, column in zip(batches, messages, strict=True):
        levels = batch.level_scores.tolist()
        assert_same_view(
            new.observe(batch.services, column, levels), old.observe(batch.services, column, levels)
        )
    assert list(new) == list(old)
    assert new.evictions == old.evictions
    assert (new.miner.messages, new.miner.singletons) == (old.miner.messages, old.miner.singletons)
    assert_same_template_state(new, old)


def template_state(store: Any) -> list[Any]:
    """A template store's state: the miner's templates and resolved texts in their order, and
    each service's counters in theirs; the surge maps, whose order nothing reads, sorted."""
    miner = store.miner
    state: list[Any] = [
        [(t.template_id, t.tokens, t.count) for t in miner._templates.values()],
        list(miner._cache.items()),
        (miner.next_id, miner.evictions, miner.messages, miner.singletons),
    ]
    for service in store:
        s = store.get(service)
        state.append(
            (
                service, list(s.counts.items()), s.messages, s.singletons, s.introduced,
                sorted((k, v.hex()) for k, v in s.burst.items()), s.surge_total.hex(),
                s.surge_events, s.surge_ref_events, sorted(s.episodes.items()), sorted(s.surging),
            )
        )  # fmt: skip
    return state


def assert_same_template_state(new: TemplateStore, old: Any) -> None:
    assert template_state(new) == template_state(old)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    batches=streams(),
    max_services=st.integers(1, 8),
    top_k=st.sampled_from([1, 3, 5]),
    max_contexts=st.sampled_from([2, 16, 4096]),
)
def test_sequence_store_matches_the_scalar_store(
    data: st.DataObject, batches: list[EventBatch], max_services: int, top_k: int, max_contexts: int
) -> None:
    # Few templates (short contexts, ties) or hundreds (distributions past numpy's pairwise
    # summation block of 128 values, unigram counters dropped at max_contexts).
    largest = data.draw(st.sampled_from([12, 400]))
    ids = [
        np.array(data.draw(st.lists(st.integers(-1, largest), min_size=len(b), max_size=len(b))))
        for b in batches
    ]
    new = SequenceStore(top_k, max_contexts, max_services)
    old = ScalarSequenceStore(top_k, max_contexts, max_services)
    for batch, template_ids in zip(batches, ids, strict=True):
        template_ids = template_ids.astype(np.int64)
        assert_same_view(
            new.observe(batch.services, template_ids), old.observe(batch.services, template_ids)
        )
    assert list(new) == list(old)
    assert new.evictions == old.evictions
    # The arrays read back as the plain model's dictionaries, in their order (ties and sums
    # depend on it).
    assert [state_of(new.get(s)) for s in new] == [state_of(old.get(s)) for s in old]


@settings(max_examples=60, deadline=None)
@given(
    batches=streams(),
    max_services=st.integers(1, 8),
    quantise=st.sampled_from([1, 5, 200]),
    settle=st.sampled_from([0, 10, 200]),
    max_patterns=st.sampled_from([4, 8192]),
    max_rate_events=st.sampled_from([8.0, 20_000.0]),
)
def test_pattern_store_matches_the_scalar_store(
    batches: list[EventBatch],
    max_services: int,
    quantise: int,
    settle: int,
    max_patterns: int,
    max_rate_events: float,
) -> None:
    # Small warm-ups, tables and decay horizons (in both modules alike) so that short streams
    # reach judging, forgetting and halving.
    limits: dict[str, Any] = {
        "QUANTISE_EVENTS": quantise,
        "SETTLE_EVENTS": settle,
        "MAX_PATTERNS": max_patterns,
        "MAX_RATE_EVENTS": max_rate_events,
    }
    new = PatternStore(max_services)
    old = patterns_scalar.PatternStore(max_services)
    with patch.multiple(patterns, **limits), patch.multiple(patterns_scalar, **limits):
        for batch in batches:
            new_view, old_view = new.observe(batch), old.observe(batch)
            for field in dataclasses.fields(old_view):
                np.testing.assert_array_equal(
                    getattr(new_view, field.name),
                    getattr(old_view, field.name),
                    err_msg=field.name,
                    strict=True,
                )
    assert list(new) == list(old)
    assert new.evictions == old.evictions


def doubled(view: Any) -> Any:
    """The same view with each event twice: a batch of two takes a detector's batch path."""
    return type(view)(*(np.repeat(values, 2) for values in view))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batches=streams(), max_services=st.integers(1, 6))
def test_online_detectors_on_one_event_match_their_batch_path(
    data: st.DataObject, batches: list[EventBatch], max_services: int
) -> None:
    messages = data.draw(messages_of(batches))
    template_store = TemplateStore(5000, 0.5, 5.0, max_services)
    sequence_store = SequenceStore(2, 64, max_services)
    forecast_store = ForecastStore(48, 600.0, 0.5, 10.0, 3, max_services=max_services)
    detectors = [
        TemplateDetector(),
        SequenceDetector(),
        ForecastDetector(),
        SlidingWindowDetector(),
    ]
    contexts = one_event_contexts(batches, max_services)
    for context, message in zip(contexts, [m for column in messages for m in column], strict=True):
        batch = context.batch
        templates = template_store.observe(batch.services, [message], batch.level_scores.tolist())
        sequences = sequence_store.observe(batch.services, templates.template_id)
        forecasts = forecast_store.observe(batch)
        one = context._replace(templates=templates, sequences=sequences, forecasts=forecasts)
        two = ScoringContext(
            EventBatch(
                batch.services * 2,
                batch.levels * 2,
                np.repeat(batch.level_scores, 2),
                np.repeat(batch.latency_ms, 2),
                np.repeat(batch.timestamps, 2),
            ),
            np.zeros((2, 3)),
            doubled(context.baseline),
            doubled(context.window),
            doubled(templates),
            doubled(sequences),
            doubled(forecasts),
        )
        for detector in detectors:
            single, pair = as_arrays(detector.rarity_one(one)), detector.rarity(two)
            assert_same_output(
                single,
                MethodOutput(pair.rarity[:1], {k: v[:1] for k, v in pair.metrics.items()}),
            )


def test_rows_keep_every_service_state_while_they_grow() -> None:
    """Services arriving a few per batch make the rows grow many times, with state to carry."""
    rng = np.random.default_rng(5)
    n = 3000
    services = [f"s{min(k, i // 20)}" for i, k in enumerate(rng.integers(0, 150, n))]
    times = 1.7e9 + np.cumsum(rng.random(n))
    latency = 20.0 * np.exp(rng.normal(0.0, 0.3, n))
    errors = rng.random(n) < 0.1
    pairs: list[tuple[Any, Any]] = [
        (WindowStore(300.0, 60, 2, 600.0, 1000), ScalarWindowStore(300.0, 60, 2, 600.0, 1000)),
        (BaselineStore(3, 600.0, 1000), ScalarBaselineStore(3, 600.0, 1000)),
        (
            # The reference keeps the old default half-life (7 days): compared at that one.
            ForecastStore(season_halflife_days=7.0, warmup=3, max_services=1000),
            ScalarForecastStore(season_halflife_days=7.0, warmup=3, max_services=1000),
        ),
    ]
    for start in range(0, n, 7):
        part = slice(start, start + 7)
        levels = [Level.ERROR if e else Level.INFO for e in errors[part].tolist()]
        batch = EventBatch(
            services[part],
            levels,
            np.array([LEVEL_SCORES[level] for level in levels]),
            latency[part],
            times[part],
        )
        for new, old in pairs:
            assert_same_view(new.observe(batch), old.observe(batch))
    for new, old in pairs:
        assert list(new) == list(old)
        assert len(new) > 100
        assert len(new) <= new.rows[0].shape[0] < len(new) * 1.5 + 16


@pytest.mark.parametrize("max_templates", [10, 5000])
def test_template_store_matches_the_scalar_store_across_many_services(max_templates: int) -> None:
    """Dozens of services sharing dozens of templates, evicted both ways: templates new to a
    warmed-up service that others logged (the system tail, which the batch kernel stops for
    and works out from the miner's later state), made and evicted within a batch."""
    rng = np.random.default_rng(5)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
    shapes = [" ".join(rng.choice(words, rng.integers(2, 5))) for _ in range(60)]
    new = TemplateStore(max_templates, 0.5, 5.0, 30)
    old = ScalarTemplateStore(max_templates, 0.5, 5.0, 30)
    for _ in range(25):
        size = int(rng.integers(1, 400))
        services = [f"svc{k}" for k in rng.zipf(1.5, size) % 40]
        shape = np.minimum(rng.zipf(1.3, size), 60) - 1
        messages = [f"{shapes[k]} {rng.integers(0, 9)}" for k in shape]
        levels = rng.choice([0.0, 1.0, 2.0], size).tolist()
        assert_same_view(
            new.observe(services, messages, levels), old.observe(services, messages, levels)
        )
    assert new.evictions == old.evictions > 0
    assert_same_template_state(new, old)
