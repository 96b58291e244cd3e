"""Per-service event-time windows: bucket expiry, late events, bounded memory, LRU eviction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.events import EventBatch
from app.schemas.events import Level, LogEvent
from app.windows import PRIOR_ERRORS, PRIOR_EVENTS, WindowStore
from tests.helpers import T0

BASE = T0.timestamp()  # a multiple of the 5 s bucket width


def batch(*rows: tuple[str, str, float | None, float]) -> EventBatch:
    """Rows of (service, level, latency_ms, seconds after T0)."""
    events = [
        LogEvent(service=s, level=Level(lv), latency_ms=lat, timestamp=None)
        for s, lv, lat, _ in rows
    ]
    built = EventBatch.from_events(events, received_at=0.0)
    times = np.array([BASE + seconds for *_, seconds in rows], dtype=np.float64)
    return EventBatch(built.services, built.levels, built.level_scores, built.latency_ms, times)


def store(**overrides: float) -> WindowStore:
    params: dict[str, float] = {
        "window_seconds": 300.0,
        "n_buckets": 60,
        "min_events": 3,
        "halflife_seconds": 3600.0,
        "max_services": 100,
    }
    params.update(overrides)
    return WindowStore(
        params["window_seconds"],
        int(params["n_buckets"]),
        int(params["min_events"]),
        params["halflife_seconds"],
        int(params["max_services"]),
    )


def test_buckets_expire_by_event_time_not_by_count() -> None:
    windows = store()
    windows.observe(
        batch(("a", "INFO", 10.0, 1), ("a", "ERROR", 20.0, 100), ("a", "INFO", 30.0, 200))
    )
    snap = windows.snapshot("a")
    assert snap is not None
    assert (snap.total, snap.errors) == (3, 1)
    assert (snap.min_latency, snap.max_latency) == (10.0, 30.0)
    # 10:05:02 -> the window keeps buckets from 10:00:05 on: the event at 1 s leaves.
    windows.observe(batch(("a", "INFO", 40.0, 302)))
    snap = windows.snapshot("a")
    assert snap is not None
    assert (snap.total, snap.errors) == (3, 1)
    assert snap.avg_latency == pytest.approx((20.0 + 30.0 + 40.0) / 3)
    assert snap.min_latency == 20.0
    assert snap.window_end == BASE + 302
    # 10:06:42 -> the event at 100 s leaves too, taking the error with it.
    windows.observe(batch(("a", "INFO", 50.0, 402)))
    snap = windows.snapshot("a")
    assert snap is not None
    assert (snap.total, snap.errors) == (3, 0)
    assert (snap.min_latency, snap.max_latency) == (30.0, 50.0)


def test_a_jump_past_the_whole_window_starts_from_exact_zeros() -> None:
    windows = store()
    windows.observe(batch(*[("a", "INFO", 0.1 * (i + 1), i) for i in range(50)]))
    windows.observe(batch(("a", "INFO", None, 10_000)))
    snap = windows.snapshot("a")
    assert snap is not None
    assert (snap.total, snap.errors) == (1, 0)
    assert snap.avg_latency is None
    assert (snap.min_latency, snap.max_latency) == (None, None)
    assert windows.running_sums("a") == (0.0, 0.0, 0.0)


def test_late_events_inside_the_window_count_and_older_ones_do_not() -> None:
    windows = store()
    view = windows.observe(
        batch(
            ("a", "INFO", 10.0, 400),
            ("a", "ERROR", 20.0, 350),  # late, inside the window
            ("a", "INFO", 30.0, 95),  # older than the window's start (10:01:45)
            ("a", "INFO", 40.0, 401),
        )
    )
    assert view.in_window.tolist() == [True, True, False, True]
    assert view.total.tolist() == [1, 2, 2, 3]
    assert view.errors.tolist() == [0, 1, 1, 1]
    snap = windows.snapshot("a")
    assert snap is not None
    assert snap.total == 3
    assert snap.avg_latency == pytest.approx((10.0 + 20.0 + 40.0) / 3)
    assert snap.window_end == BASE + 401  # a late event does not move the window's end


def test_latency_zscore_compares_with_the_window_before_the_event() -> None:
    windows = store(min_events=3)
    latencies = [100.0, 110.0, 90.0, 105.0]
    view = windows.observe(
        batch(*[("a", "INFO", lat, i) for i, lat in enumerate([*latencies, 400.0])])
    )
    logs = np.log1p(latencies)
    expected = (math.log1p(400.0) - logs.mean()) / logs.std()
    assert np.isnan(view.latency_zscore[:3]).all()  # fewer than min_events latencies before
    assert view.latency_zscore[4] == pytest.approx(expected, rel=1e-9)


def test_long_run_error_rate_starts_at_the_prior_and_learns() -> None:
    windows = store()
    view = windows.observe(batch(*[("a", "ERROR" if i < 5 else "INFO", 1.0, i) for i in range(40)]))
    assert view.expected_error_rate[0] == pytest.approx(PRIOR_ERRORS / PRIOR_EVENTS)
    assert view.expected_error_rate[5] > view.expected_error_rate[0]
    assert view.recent_total.tolist()[:3] == [1, 2, 3]
    assert view.recent_total.max() == 16
    assert view.recent_errors[4] == 5
    assert view.recent_errors[-1] == 0  # the five errors have left the last 16 events
    # The same flags as bits, newest (this event) in bit 0.
    assert view.recent_error_bits.tolist()[:6] == [1, 3, 7, 15, 31, 62]
    assert view.recent_error_bits[-1] == 0
    # The weight behind the rate: the events before this one, decayed (39 s against an hour's
    # half-life: 0.4% at most), plus the prior's.
    assert view.error_rate_weight[0] == pytest.approx(PRIOR_EVENTS)
    assert view.error_rate_weight[39] == pytest.approx(39 + PRIOR_EVENTS, rel=5e-3)
    assert view.error_rate_weight[39] < 39 + PRIOR_EVENTS


def test_window_memory_does_not_grow_with_events() -> None:
    windows = store()
    windows.observe(batch(("busy", "INFO", 1.0, 0)))
    size_before = windows.nbytes
    rows = [
        ("busy", "ERROR" if i % 9 == 0 else "INFO", float(i % 50), i * 0.05) for i in range(20_000)
    ]
    windows.observe(batch(*rows))
    assert windows.nbytes == size_before
    assert len(windows) == 1


def test_window_memory_grows_with_services_up_to_the_bound() -> None:
    windows = store(max_services=100)
    windows.observe(batch(*[(f"s{i}", "INFO", 1.0, i) for i in range(1000)]))
    per_service = windows.nbytes / 100
    assert per_service < 60 * 9 * 8 + 200  # the buckets and a few running totals
    assert len(windows) == 100


def test_least_recently_seen_service_is_evicted_past_max_services() -> None:
    windows = store(max_services=3)
    windows.observe(batch(("a", "INFO", 1.0, 0), ("b", "INFO", 1.0, 1), ("c", "INFO", 1.0, 2)))
    windows.observe(batch(("a", "INFO", 1.0, 3)))  # a is now the most recently seen
    windows.observe(batch(("d", "INFO", 1.0, 4)))
    assert len(windows) == 3
    assert windows.evictions == 1
    assert windows.snapshot("b") is None
    for service in ("a", "c", "d"):
        assert windows.snapshot(service) is not None
    snap = windows.snapshot("a")
    assert snap is not None
    assert snap.total == 2


def test_services_do_not_share_windows() -> None:
    windows = store()
    windows.observe(
        batch(("fast", "INFO", 2.0, 0), ("slow", "ERROR", 4000.0, 1), ("fast", "INFO", 3.0, 2))
    )
    fast, slow = windows.snapshot("fast"), windows.snapshot("slow")
    assert fast is not None
    assert slow is not None
    assert (fast.total, fast.errors, fast.max_latency) == (2, 0, 3.0)
    assert (slow.total, slow.errors, slow.max_latency) == (1, 1, 4000.0)
