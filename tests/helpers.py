"""Assertions and builders shared by the test modules."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import numpy as np

from app.events import EventBatch
from app.model import FitResult, Model, bootstrap_training_data, fit_model, model_from_arrays
from app.schemas.training import JobStatus

T = TypeVar("T")

T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
FINAL_STATUSES = {JobStatus.succeeded.value, JobStatus.failed.value}
# A guard against a hung job, not a speed requirement: polls stop after this many seconds.
JOB_GIVE_UP_SECONDS = 300.0


@functools.cache
def _bootstrap_fit(n_estimators: int) -> FitResult:
    return fit_model(bootstrap_training_data(), {"n_estimators": n_estimators}, 20)


def bootstrap_data_model(version: str, n_estimators: int) -> Model:
    """``fit_model(bootstrap_training_data(), {"n_estimators": n_estimators}, 20)`` as a Model.

    fit_model is a pure function of its inputs, so each fit is done once per session (~2 s each)
    and every caller gets a Model of its own, rebuilt from copies of the fitted arrays."""
    result = _bootstrap_fit(n_estimators)
    arrays = {name: array.copy() for name, array in result.arrays.items()}
    return model_from_arrays(version, arrays, copy.deepcopy(result.description))


def raw_rows(n: int, seed: int = 0) -> list[list[float]]:
    """``n`` raw training rows, ``[latency_ms, level_score]``, with ~4% warnings and errors."""
    rng = np.random.default_rng(seed)
    latency = np.round(rng.lognormal(4.5, 0.4, n), 3)
    level = rng.choice([0.0, 1.0, 2.0], n, p=[0.96, 0.03, 0.01])
    table: list[list[float]] = np.column_stack([latency, level]).tolist()
    return table


def at(seconds: float) -> str:
    """RFC 3339 text ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event(
    service: str = "api",
    level: str = "INFO",
    latency_ms: float | None = 100.0,
    seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"service": service, "level": level, **extra}
    if latency_ms is not None:
        body["latency_ms"] = latency_ms
    if seconds is not None:
        body["timestamp"] = at(seconds)
    return body


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    """An RFC 9457 body with the given status that, when ``field`` is given, names that field
    (dotted path, prefix match so 'logs.3' accepts 'logs.3.level') in ``errors`` or ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        named = [e["field"] for e in body.get("errors", [])]
        assert any(name == field or name.startswith(field + ".") for name in named) or (
            field in body["detail"]
        ), f"{field!r} not named in {body}"


async def wait_for_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """Poll GET /train/{job_id} until the job is final; returns its last body."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + JOB_GIVE_UP_SECONDS
    while True:
        response = await client.get(f"/train/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in FINAL_STATUSES:
            return body
        assert loop.time() < give_up, f"training job {job_id} never finished: {body}"
        await asyncio.sleep(0.05)


async def active_version(client: httpx.AsyncClient) -> str:
    response = await client.get("/models")
    assert response.status_code == 200
    active: str = response.json()["active"]
    return active


async def stored_versions(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/models")
    assert response.status_code == 200
    return [info["version"] for info in response.json()["versions"]]


def sliced(value: T, i: int) -> T:
    """``value`` (an array, a list or a dataclass of them) for event i alone."""
    if isinstance(value, np.ndarray):
        return value[i : i + 1].copy()  # type: ignore[return-value]
    if isinstance(value, list):
        return value[i : i + 1]  # type: ignore[return-value]
    if isinstance(value, EventBatch):  # built from its five given columns; the rest derived
        one = EventBatch(
            sliced(value.services, i),
            sliced(value.levels, i),
            sliced(value.level_scores, i),
            sliced(value.latency_ms, i),
            sliced(value.timestamps, i),
        )
        return one  # type: ignore[return-value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # the stores' NamedTuple views
        return type(value)(*(sliced(column, i) for column in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: sliced(getattr(value, f.name), i) for f in dataclasses.fields(value)}
        init = {f.name: fields[f.name] for f in dataclasses.fields(value) if f.init}
        return type(value)(**init)
    return value
