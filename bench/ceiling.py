"""The ceiling: a bare FastAPI app that validates the same request models as the service (in
FastAPI's ordinary way) and answers with a constant body the size of the service's answer.

Nothing can serve these routes faster with the same framework and validation, so the service's
throughput is reported as a share of this app's, measured by the same client in the same run.
Response sizes come from the environment (the benchmark measures the real answers first).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import Response

from app.schemas.events import LogEvent
from app.schemas.scoring import ScoreBatchRequest


def _constant_json(size: int) -> bytes:
    padding = max(size - len(b'{"pad":""}'), 0)
    return b'{"pad":"' + b"x" * padding + b'"}'


SCORE_BODY = _constant_json(int(os.environ.get("BENCH_SCORE_BYTES", "800")))
BATCH_BODY = _constant_json(int(os.environ.get("BENCH_BATCH_BYTES", "800000")))

app = FastAPI()


@app.post("/score")
async def score_log(event: LogEvent) -> Response:
    return Response(SCORE_BODY, media_type="application/json")


@app.post("/score/batch")
async def score_batch(request: ScoreBatchRequest) -> Response:
    return Response(BATCH_BODY, media_type="application/json")
