"""The explanation of an error burst names what the sliding window's burst scan found: the
horizon and count of its smallest tail, not the 5-minute window's error count."""

from __future__ import annotations

import httpx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors.base import MethodOutput
from app.detectors.sliding_window import (
    BURST_SHARE,
    SCAN_CORRECTION,
    _predictive_tail,
    error_burst_rarity,
    error_burst_scan,
)
from app.explain import _burst_finding
from app.settings import Settings
from app.windows import RECENT_EVENTS, WindowView
from tests.conftest import start_app
from tests.helpers import event


def window_of(
    bits: int, rate: float, weight: float, recent_total: int = RECENT_EVENTS
) -> WindowView:
    """One error event's window: only the fields the burst finding reads carry meaning (the
    5-minute counts are set to something the finding must not quote)."""
    return WindowView(
        total=np.array([32]),
        errors=np.array([2]),
        expected_error_rate=np.array([rate]),
        latency_zscore=np.array([np.nan]),
        in_window=np.array([True]),
        recent_total=np.array([recent_total]),
        recent_errors=np.array([bin(bits).count("1")]),
        recent_error_bits=np.array([bits]),
        error_rate_weight=np.array([weight]),
    )


def burst_drives(window: WindowView) -> MethodOutput:
    """The sliding window's output when the burst test is its smallest test."""
    rarity = error_burst_rarity(
        int(window.recent_error_bits[0]),
        float(window.expected_error_rate[0]),
        float(window.error_rate_weight[0]),
    )
    return MethodOutput(
        rarity=np.array([min(1.0, rarity / BURST_SHARE)]),
        metrics={"error_burst_rarity": np.array([rarity])},
    )


def test_a_burst_close_together_on_a_rarely_erring_service_names_its_horizon() -> None:
    # This error and errors 2 and 4 events back, on a service erring 0.8% of the time.
    window = window_of(0b10101, 0.008, 5000.0)
    finding = _burst_finding(window, burst_drives(window), 0)
    tail, errors, events = error_burst_scan(0b10101, 0.008, 5000.0)
    assert (errors, events) == (3, 5)
    assert finding is not None
    assert finding.startswith("3 errors in the last 5 events of this service (usually 0.8% of ")
    one_in = f"{float(f'{1 / (SCAN_CORRECTION * tail):.2g}'):,.0f}"
    assert finding.endswith(f"about 1 in {one_in} normal events looks like this)")
    assert "known from" not in finding  # a rate known from thousands of events
    assert "32" not in finding  # not the 5-minute window's count


def test_one_lone_error_says_it_is_the_only_one() -> None:
    window = window_of(0b1, 0.0001, 20000.0)
    finding = _burst_finding(window, burst_drives(window), 0)
    assert finding == (
        "an error, the only one in the last 16 events of this service (usually 0.01% of its "
        "events are errors; about 1 in 5,000 normal events looks like this)"
    )


def test_a_young_service_says_how_little_its_rate_rests_on() -> None:
    # Four events so far (and the prior's 10): its second error, one event after the first.
    window = window_of(0b11, 0.1 / 14 + 1 / 14, 14.0, recent_total=4)
    finding = _burst_finding(window, burst_drives(window), 0)
    assert finding is not None
    assert finding.startswith("2 errors in the last 2 events of this service (usually 7.9% of ")
    assert "known from about 14 events so far" in finding
    first = window_of(0b1, 0.01, 11.0, recent_total=1)
    assert str(_burst_finding(first, burst_drives(first), 0)).startswith(
        "an error as this service's first event"
    )


def test_no_burst_finding_when_a_latency_test_drives_the_window() -> None:
    window = window_of(0b10101, 0.008, 5000.0)
    output = burst_drives(window)
    latency_driven = MethodOutput(rarity=output.rarity / 10, metrics=output.metrics)
    assert _burst_finding(window, latency_driven, 0) is None


@settings(max_examples=300, deadline=None)
@given(
    bits=st.integers(0, (1 << RECENT_EVENTS) - 1),
    rate=st.floats(1e-6, 0.5),
    weight=st.floats(10.0, 1e6),
)
def test_the_scan_reports_where_error_burst_rarity_found_its_minimum(
    bits: int, rate: float, weight: float
) -> None:
    bits |= 1  # the burst test judges error events
    tail, errors, events = error_burst_scan(bits, rate, weight)
    assert error_burst_rarity(bits, rate, weight) == SCAN_CORRECTION * tail
    # The reported horizon holds the reported errors, and its tail is the smallest of all.
    assert bin(bits & ((1 << events) - 1)).count("1") == errors
    alpha = rate * weight
    tails = [rate]
    earlier = 0
    for distance in range(1, RECENT_EVENTS):
        if (bits >> distance) & 1:
            earlier += 1
            tails.append(rate * _predictive_tail(earlier, distance, alpha + 1.0, weight - alpha))
    assert tail == min(tails)
    if events > 1:
        at = rate * _predictive_tail(errors - 1, events - 1, alpha + 1.0, weight - alpha)
        assert at == tail


async def test_score_explains_a_burst_by_the_scan(bootstrapped_settings: Settings) -> None:
    async for running in start_app(bootstrapped_settings):
        client: httpx.AsyncClient = running.client
        # A quiet service with steady latency, then three errors close together.
        for second in range(200):
            response = await client.post("/score", json=event("quiet", "INFO", 50.0, second))
            assert response.status_code == 200
        bodies = []
        for second in (200, 201, 202):
            response = await client.post("/score", json=event("quiet", "ERROR", 50.0, second))
            assert response.status_code == 200
            bodies.append(response.json())
        last = bodies[-1]
        assert last["methods"]["sliding_window"]["anomaly_score"] >= 0.25
        explanation = last["explanation"]
        assert "3 errors in the last 3 events of this service (usually " in explanation
        assert "normal events looks like this" in explanation
        assert "errors in the last 203 events" not in explanation
