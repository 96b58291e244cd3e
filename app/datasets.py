"""Reading training data from files: CSV or JSON lines, of events or of raw rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from app.errors import field_errors, summarise
from app.model import TrainingData
from app.schemas.events import LogEvent
from app.schemas.training import TrainRequest

EVENT_COLUMNS = {"service", "level", "message", "latency_ms", "timestamp"}
TEXT_COLUMNS = ("service", "level", "message", "timestamp")


class DataFileError(ValueError):
    """The file cannot be used for training; the message says where and why."""


def _from_events(records: list[dict[str, Any]], where: str) -> TrainingData:
    events = []
    for index, record in enumerate(records):
        try:
            events.append(LogEvent.model_validate(record))
        except ValidationError as exc:
            message = summarise(field_errors(exc.errors()))
            raise DataFileError(f"{where} {index + 1}: {message}") from exc
    return TrainingData.from_columns(
        [e.service for e in events],
        [e.level for e in events],
        np.array([np.nan if e.latency_ms is None else e.latency_ms for e in events]),
        source="logs",
        messages=[e.message for e in events],
    )


def _from_raw_rows(rows: list[Any]) -> TrainingData:
    try:
        request = TrainRequest.model_validate({"data": rows})
    except ValidationError as exc:
        raise DataFileError(summarise(field_errors(exc.errors()))) from exc
    return TrainingData.from_raw_rows(request.data or [])


def load_training_file(path: Path) -> TrainingData:
    """CSV with event columns (service, level, latency_ms, ...) or two numeric columns
    (latency_ms, level_score); JSON lines of event objects or of ``[latency_ms, level_score]``."""
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        # Text columns stay text: a service named "123" or a level column pandas would guess as
        # numbers must reach validation as the strings they are.
        frame = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str))
        if "service" in frame.columns:
            columns = [c for c in frame.columns if c in EVENT_COLUMNS]
            records = [
                {str(k): v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
                for row in frame[columns].to_dict(orient="records")
            ]
            return _from_events(records, "row")
        if frame.shape[1] != 2:
            raise DataFileError(
                f"{path}: a CSV needs event columns (service, level, ...) or exactly two "
                "columns latency_ms, level_score"
            )
        return _from_raw_rows(frame.to_numpy(dtype=float).tolist())
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"line {number}: not JSON ({exc.msg})") from exc
    if not items:
        raise DataFileError(f"{path}: no rows")
    if all(isinstance(item, list) for item in items):
        return _from_raw_rows(items)
    if all(isinstance(item, dict) for item in items):
        return _from_events(items, "line")
    raise DataFileError(f"{path}: lines must all be event objects or all [latency_ms, level_score]")
