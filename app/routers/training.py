"""POST /train and GET /train/{job_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import TypeAdapter
from starlette.types import Scope

from app.bootstrap import forest_parameters
from app.errors import UNAUTHORIZED_RESPONSE, TrainingRejected, UnknownJob, problem_responses
from app.routers.fast_json import JSONBodyRoute, body_validation_error, content_type
from app.schemas.training import TrainAccepted, TrainingJob, TrainRequest
from app.security import RequireApiKey
from app.state import ServiceState, StateDep, get_state
from app.training_data import SpooledTrainingData, TrainingInput, discard, training_input

# Bodies above this are validated in the parsing process (see TrainingBodyRoute). Below it,
# validating on the event loop costs well under ten milliseconds and no hop to another process.
OFFLOAD_BODY_BYTES = 256 * 1024


class TrainingBodyRoute(JSONBodyRoute):
    """JSONBodyRoute whose large bodies are validated in another process.

    pydantic-core holds the GIL while it validates, so a 15 MB body (a million rows) would stop
    the event loop, and every /score waiting on it, for most of a second; a thread would not
    help. The
    parsing process returns the rows as arrays or pydantic's errors, which become the same 422
    naming each field as a body validated here.
    """

    def reads_as_json(self, scope: Scope) -> bool:
        # FastAPI reads a body without a Content-Type as JSON too (requests' data=bytes sends
        # none): those must not be parsed on the loop either.
        return super().reads_as_json(scope) or not content_type(scope)

    async def validate_body(self, request: Request, adapter: TypeAdapter[Any], raw: bytes) -> Any:
        if len(raw) < OFFLOAD_BODY_BYTES:
            return await super().validate_body(request, adapter, raw)
        parsed = await get_state(request).trainer.parse(raw)
        if isinstance(parsed, list):
            raise body_validation_error(parsed)
        return TrainRequest.from_prepared(parsed)


# Bodies of up to 2M rows: validated from bytes in one pass, not json.loads then validate.
router = APIRouter(tags=["training"], route_class=TrainingBodyRoute)


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
    given: TrainingInput = request.prepared_input() or training_input(request)
    try:
        return _start(given, state)
    except TrainingRejected:
        if isinstance(given.data, SpooledTrainingData):
            discard(given.data.path)  # at once, not when the handle is collected
        raise


def _start(given: TrainingInput, state: ServiceState) -> TrainAccepted:
    settings = state.settings
    data = given.data
    if not settings.train_min_rows <= len(data) <= settings.train_max_rows:
        raise TrainingRejected(
            f"{given.field}: {len(data)} rows given; between {settings.train_min_rows} and "
            f"{settings.train_max_rows} are needed"
        )
    parameters = forest_parameters(settings) | given.parameters
    trees = int(parameters["n_estimators"])
    if len(data) * trees > settings.train_max_row_trees:
        raise TrainingRejected(
            f"parameters.n_estimators: {len(data)} rows x {trees} trees exceeds this service's "
            f"limit of {settings.train_max_row_trees} (train_max_row_trees); use fewer trees "
            "or rows"
        )
    job = state.trainer.submit(data, parameters, activate=given.activate)
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
