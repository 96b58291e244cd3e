"""POST /train and GET /train/{job_id}."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, status

from app.bootstrap import forest_parameters
from app.errors import UNAUTHORIZED_RESPONSE, TrainingRejected, UnknownJob, problem_responses
from app.model import TrainingData
from app.routers.fast_json import JSONBodyRoute
from app.schemas.training import TrainAccepted, TrainingJob, TrainRequest
from app.security import RequireApiKey
from app.state import StateDep

# Bodies of up to 2M rows: validated from bytes in one pass, not json.loads then validate.
router = APIRouter(tags=["training"], route_class=JSONBodyRoute)


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {
            "description": "Accepted: the job runs in the background.",
            # Lets clients and stateful fuzzers follow a new job to its status.
            "links": {
                "GetTrainingJob": {
                    "operationId": "training-training_job",
                    "parameters": {"job_id": "$response.body#/job_id"},
                }
            },
        },
        **problem_responses(TrainingRejected),
        **UNAUTHORIZED_RESPONSE,
    },
    dependencies=[RequireApiKey],
)
async def start_training(request: TrainRequest, state: StateDep) -> TrainAccepted:
    """Retrain in the background on raw rows or log events; scoring goes on meanwhile."""
    settings = state.settings
    if request.data is not None:
        data = TrainingData.from_raw_rows(request.data)
    else:
        logs = request.logs or []
        data = TrainingData.from_columns(
            [e.service for e in logs],
            [e.level for e in logs],
            np.array([np.nan if e.latency_ms is None else e.latency_ms for e in logs]),
            source="logs",
            messages=[e.message for e in logs],
        )
    if not settings.train_min_rows <= len(data) <= settings.train_max_rows:
        field = "data" if request.data is not None else "logs"
        raise TrainingRejected(
            f"{field}: {len(data)} rows given; between {settings.train_min_rows} and "
            f"{settings.train_max_rows} are needed"
        )
    parameters = forest_parameters(settings) | request.parameters.model_dump(exclude_none=True)
    job = state.trainer.submit(data, parameters, activate=request.activate)
    return TrainAccepted(job_id=job.job_id, status=job.status)


@router.get(
    "/train/{job_id}",
    responses={
        200: {
            "description": "The job; `model_version` is set once it succeeded.",
            # The version a job produced can be activated (again) later: train -> status ->
            # activate is the sequence clients and the stateful fuzzer follow.
            "links": {
                "ActivateTrainedModel": {
                    "operationId": "models-activate_model",
                    "parameters": {"version": "$response.body#/model_version"},
                }
            },
        },
        **problem_responses(UnknownJob),
    },
)
async def training_job(job_id: str, state: StateDep) -> TrainingJob:
    """Status of a training job and, once it succeeded, the model version it produced."""
    job = state.trainer.get(job_id)
    if job is None:
        raise UnknownJob(f"no training job {job_id!r}")
    return job
