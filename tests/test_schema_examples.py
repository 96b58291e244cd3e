"""The examples the OpenAPI document shows are valid requests: Swagger UI's "Try it out" works."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.schemas import LogEvent, ScoreResult, TrainRequest


def _examples(model: type[BaseModel]) -> list[dict[str, Any]]:
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    examples = extra["examples"]
    assert isinstance(examples, list)
    assert examples
    return [dict(example) for example in examples if isinstance(example, dict)]


@pytest.mark.parametrize("model", [LogEvent, ScoreResult, TrainRequest])
def test_schema_examples_validate(model: type[BaseModel]) -> None:
    for example in _examples(model):
        model.model_validate(example)


async def test_train_examples_are_accepted_as_they_stand(client: httpx.AsyncClient) -> None:
    for example in _examples(TrainRequest):
        response = await client.post("/train", json=example)
        assert response.status_code == 202, response.text


async def test_score_example_is_accepted(client: httpx.AsyncClient) -> None:
    (example,) = _examples(LogEvent)
    response = await client.post("/score", json=example)
    assert response.status_code == 200
