"""GET /stats/{service}: window aggregates over event time, checked against hand-computed sums."""

from __future__ import annotations

import httpx
import pytest

from app.settings import Settings
from tests.helpers import T0, assert_problem, event

# Default window: 5 minutes as 60 buckets of 5 s. Times below sit mid-bucket, away from edges.


@pytest.fixture
def settings(bootstrapped_settings: Settings) -> Settings:
    return bootstrapped_settings


async def test_stats_match_hand_computed_window(client: httpx.AsyncClient) -> None:
    first = [
        event("billing", "INFO", 100.0, 10),
        event("billing", "ERROR", 300.0, 60),
        event("billing", "WARN", None, 181),
        event("billing", "INFO", 200.0, 182),
        event("billing", "CRITICAL", 50.0, 241),
    ]
    response = await client.post("/score/batch", json={"logs": first})
    assert response.status_code == 200
    stats = (await client.get("/stats/billing")).json()
    assert stats == {
        "service": "billing",
        "window_minutes": 5.0,
        "window_end": (T0.replace(minute=4, second=1)).isoformat().replace("+00:00", "Z"),
        "total_logs": 5,
        "error_count": 2,  # ERROR and CRITICAL count as errors, WARN does not
        "error_rate": 2 / 5,
        "avg_latency": (100.0 + 300.0 + 200.0 + 50.0) / 4,
        "max_latency": 300.0,
        "min_latency": 50.0,
    }

    # Event time moves to 10:07:02: the window keeps buckets from 10:02:05 on, so the events at
    # 10:00:10 and 10:01:00 leave it. A late event at 10:05:00 still counts; one at 10:00:30 is
    # older than the whole window and does not.
    later = [
        event("billing", "INFO", 400.0, 422),
        event("billing", "ERROR", 10.0, 300),
        event("billing", "INFO", 999.0, 30),
    ]
    response = await client.post("/score/batch", json={"logs": later})
    assert response.status_code == 200
    stats = (await client.get("/stats/billing")).json()
    remaining = [200.0, 50.0, 400.0, 10.0]
    assert stats["total_logs"] == 5  # 10:03:01 (no latency), 10:03:02, 10:04:01, 10:07:02, 10:05
    assert stats["error_count"] == 2
    assert stats["error_rate"] == pytest.approx(2 / 5)
    assert stats["avg_latency"] == pytest.approx(sum(remaining) / len(remaining))
    assert stats["max_latency"] == 400.0
    assert stats["min_latency"] == 10.0
    assert stats["window_end"] == "2026-11-24T10:07:02Z"


async def test_stats_without_latencies_report_none(client: httpx.AsyncClient) -> None:
    await client.post("/score", json=event("cron", "INFO", None, 5))
    stats = (await client.get("/stats/cron")).json()
    assert stats["total_logs"] == 1
    assert stats["error_rate"] == 0.0
    assert stats["avg_latency"] is None
    assert stats["max_latency"] is None
    assert stats["min_latency"] is None


async def test_window_minutes_setting_is_honoured(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.conftest import make_settings, start_app

    settings = make_settings(tmp_path_factory.mktemp("w"), window_minutes=1.0, window_buckets=12)
    async for running in start_app(settings):
        logs = [
            event("q", "INFO", 10.0, 0),
            event("q", "INFO", 20.0, 59),
            event("q", "INFO", 30.0, 90),
        ]
        await running.client.post("/score/batch", json={"logs": logs})
        stats = (await running.client.get("/stats/q")).json()
        assert stats["window_minutes"] == 1.0
        assert stats["total_logs"] == 2  # the event at 0 s left the 1-minute window
        assert stats["avg_latency"] == pytest.approx(25.0)


async def test_unknown_service_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/stats/never-seen")
    assert_problem(response, 404)
    assert "never-seen" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/stats/..%2F..%2Fetc%2Fpasswd",
        "/stats/..%2F..",
        "/stats/a%00b",
        "/stats/%E2%80%AE",
        "/stats/" + "a" * 129,
        "/stats/" + "b" * 10_000,
        "/stats/a%20b",
        "/stats/a;b",
    ],
)
async def test_path_tricks_are_client_errors(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_service_name_at_the_length_limit_works(client: httpx.AsyncClient) -> None:
    name = "s" * 128
    assert (await client.post("/score", json=event(name, "INFO", 5.0, 0))).status_code == 200
    assert (await client.get(f"/stats/{name}")).json()["total_logs"] == 1
    assert_problem(await client.get("/stats/" + "s" * 129), 422, "service")
