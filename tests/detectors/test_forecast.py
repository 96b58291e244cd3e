"""The seasonal forecast: judges latency against the time of day, and error counts per bucket."""

from __future__ import annotations

import numpy as np

from app.events import EventBatch
from app.forecasts import ForecastStore
from app.schemas.events import Level

DAY = 86_400.0


def _batch(times: np.ndarray, latency: np.ndarray, errors: np.ndarray | None = None) -> EventBatch:
    n = times.size
    flags = np.zeros(n, dtype=bool) if errors is None else errors
    levels = [Level.ERROR if e else Level.INFO for e in flags.tolist()]
    return EventBatch(
        ["svc"] * n, levels, np.where(flags, 2.0, 0.0), latency.astype(np.float64), times
    )


def _daily(days: int, step: float = 300.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fast at night (10 ms), slow in business hours (100 ms), with 10% noise."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, days * DAY, step)
    hour = (times % DAY) / 3600.0
    typical = np.where((hour >= 9) & (hour < 17), 100.0, 10.0)
    return times, typical * np.exp(0.1 * rng.standard_normal(times.size))


def test_a_daytime_latency_at_night_is_flagged_and_at_daytime_is_not() -> None:
    store = ForecastStore(slots=48, halflife_seconds=1800.0)
    times, latency = _daily(10)
    store.observe(_batch(times, latency))
    after = times[-1]
    night = after + 3 * 3600.0  # 03:00 of day 11
    noon = after + 12 * 3600.0
    view = store.observe(_batch(np.array([night, noon]), np.array([100.0, 100.0])))
    assert view.latency_residual_z[0] > 10
    assert view.latency_rarity[0] < 1e-6
    assert view.latency_rarity[1] > 0.01
    assert view.latency_low_ms[1] < 100.0 < view.latency_high_ms[1]


def test_normal_days_rarely_leave_the_prediction_interval() -> None:
    store = ForecastStore(slots=48, halflife_seconds=1800.0, interval_z=3.29)
    times, latency = _daily(14, seed=1)
    view = store.observe(_batch(times, latency))
    judged = ~np.isnan(view.latency_residual_z)
    last_week = judged & (times > 7 * DAY)
    outside = (view.latency_rarity[last_week] < 0.001).mean()
    assert outside < 0.01


def test_a_longer_seasonal_memory_learns_a_noisy_daily_profile_more_precisely() -> None:
    """Each 30-minute slot sees six events a day: with a one-week half-life its offset is the
    mean of its last ~60 events, with the default two weeks of ~120, so the noise left in the
    learned profile is smaller. The gain is a few percent of the forecast's error here (the
    level's own noise and the slots' width make most of it), on each of three seeds."""
    assert ForecastStore().season_halflife == 14.0 * DAY
    times = np.arange(0.0, 21 * DAY, 300.0)
    hour = (times % DAY) / 3600.0
    typical = 50.0 * np.exp(np.sin(2 * np.pi * hour / 24.0))
    third_week = times > 14 * DAY
    for seed in (4, 5, 6):
        latency = typical * np.exp(0.3 * np.random.default_rng(seed).standard_normal(hour.size))
        error = {}
        for days in (7.0, 14.0):
            store = ForecastStore(slots=48, halflife_seconds=DAY, season_halflife_days=days)
            forecast = store.observe(_batch(times, latency)).latency_forecast_ms[third_week]
            error[days] = np.sqrt(
                np.mean((np.log1p(forecast) - np.log1p(typical[third_week])) ** 2)
            )
        assert error[14.0] < 0.99 * error[7.0]


def test_an_error_burst_within_one_bucket_is_flagged() -> None:
    store = ForecastStore(bucket_seconds=10.0)
    rng = np.random.default_rng(2)
    times = np.arange(0.0, 3600.0, 0.1)
    store.observe(_batch(times, np.full(times.size, 20.0), rng.random(times.size) < 0.01))
    burst_times = 3600.0 + np.arange(0.0, 5.0, 0.1)
    errors = np.ones(burst_times.size, dtype=bool)
    view = store.observe(_batch(burst_times, np.full(burst_times.size, 20.0), errors))
    assert view.error_rarity[5] < 1e-6
    assert view.error_rate_forecast[0] < 0.05


def test_services_without_latency_get_no_latency_forecast() -> None:
    store = ForecastStore()
    times = np.arange(0.0, 100.0)
    view = store.observe(_batch(times, np.full(times.size, np.nan)))
    assert np.all(np.isnan(view.latency_forecast_ms))
    assert np.all(view.latency_rarity == 1.0)


def _steady(n: int, seed: int, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One event a minute around 50 ms (no daily cycle within the few hours tested)."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, 60.0 * n, 60.0)
    return times, 50.0 * np.exp(noise * rng.standard_normal(n))


def test_anomaly_likelihood_rarely_alarms_on_steady_noise() -> None:
    store = ForecastStore()
    times, latency = _steady(6000, seed=3)
    view = store.observe(_batch(times, latency))
    judged = ~np.isnan(view.likelihood_z)
    assert judged.sum() > 5000
    assert (view.likelihood_rarity[judged] < 0.001).mean() < 0.003


def test_anomaly_likelihood_sees_a_noisier_stretch_that_no_single_event_shows() -> None:
    """Every event of the stretch is within about 3 spreads (the forecast alone does not alarm),
    but ten of them in a row is news to the likelihood."""
    store = ForecastStore()
    times, latency = _steady(3000, seed=4)
    store.observe(_batch(times, latency))
    later = times[-1] + 60.0 * np.arange(1.0, 11.0)
    signs = np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
    view = store.observe(_batch(later, 50.0 * np.exp(0.28 * signs)))
    assert np.all(view.latency_rarity > 0.001)
    assert view.likelihood_rarity.min() < 1e-4


def test_anomaly_likelihood_sees_a_long_mildly_noisier_stretch() -> None:
    """Sixty events at 1.5 spreads each: the short average barely moves (its own spread is wide),
    the slow one (half-life ~14 events) is far outside its usual range."""
    store = ForecastStore()
    times, latency = _steady(3000, seed=4)
    store.observe(_batch(times, latency))
    later = times[-1] + 60.0 * np.arange(1.0, 61.0)
    signs = np.where(np.arange(60) % 2 == 0, 1.0, -1.0)
    view = store.observe(_batch(later, 50.0 * np.exp(0.15 * signs)))
    assert view.latency_rarity.min() > 0.01
    assert view.likelihood_rarity.min() < 1e-4


def test_anomaly_likelihood_is_quiet_again_soon_after_an_incident_ends() -> None:
    """Twenty events at ten times the latency, then normal ones: the slow average remembers the
    incident for tens of events, but speaks only for events that keep a run going."""
    store = ForecastStore()
    times, latency = _steady(3000, seed=0)
    store.observe(_batch(times, latency))
    later = times[-1] + 60.0 * np.arange(1.0, 61.0)
    after = 50.0 * np.exp(0.1 * np.random.default_rng(10).standard_normal(60))
    after[:20] *= 10.0
    view = store.observe(_batch(later, after))
    assert view.likelihood_rarity[:20].min() < 1e-20
    assert view.likelihood_rarity[30:].min() > 0.01
