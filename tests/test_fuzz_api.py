"""Schemathesis against the OpenAPI document, over the ASGI app with its lifespan running: zero
server errors, and every response (401/413/422/503 problem+json included) conforming to the
status codes, media types, headers and schemas the document declares.

Each operation gets positive and negative cases from the schema (plus schemathesis' boundary
"coverage" cases). A stateful run then follows the document's links through sequences of valid
calls: train -> job status -> activate the version it made, list models -> activate the oldest
(a rollback), score -> the service's stats. The budget keeps both runs well under a minute on two
cores.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
from schemathesis.hooks import HookContext

from app.factory import create_app
from tests.hardening_support import API_KEY, seeded_settings

EXAMPLES_PER_OPERATION = 300
STATEFUL_SCENARIOS = 10
STATEFUL_STEPS = 25
JOB_WAIT_SECONDS = 60.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}

_artifacts = Path(tempfile.mkdtemp(prefix="insighthub-fuzz-"))
atexit.register(shutil.rmtree, _artifacts, True)
# Small bounds so that generated data can reach them: the limits' own 413/422 paths get fuzzed.
app = create_app(
    seeded_settings(
        _artifacts,
        api_key=API_KEY,
        max_services=50,
        train_min_rows=10,
        train_max_rows=200,
        max_body_bytes=4096,
        max_body_bytes_score=8192,
        max_body_bytes_batch=65536,
        max_body_bytes_train=65536,
    )
)
config = SchemathesisConfig.from_dict(
    {
        "checks": {
            # 413 is the right answer to an oversized invalid body (e.g. 10,001 events).
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422]
            },
            # Off: some rules depend on settings and data, not on the schema (training needs
            # train_min_rows rows; timestamps must lie in 1970-2200), so schema-valid requests
            # are rightly refused with a 422 that names the rule.
            "positive_data_acceptance": {"enabled": False},
        }
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers=AUTH)


# The stateful run: its own app with the default limits (at least 50 training rows), and positive
# cases only (the run above covers invalid input operation by operation), so that sequences of
# valid calls reach the operations behind the links.
_stateful_artifacts = Path(tempfile.mkdtemp(prefix="insighthub-fuzz-stateful-"))
atexit.register(shutil.rmtree, _stateful_artifacts, True)
stateful_settings = seeded_settings(_stateful_artifacts, api_key=API_KEY)
TRAIN_MIN_ROWS = stateful_settings.train_min_rows
stateful_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(stateful_settings),
    config=SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "positive"},
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    ),
)

_levels = st.sampled_from(["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"])
_latency = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False)
_rows = st.lists(
    st.tuples(_latency, st.sampled_from([0, 1, 2, 3])).map(list),
    min_size=TRAIN_MIN_ROWS,
    max_size=2 * TRAIN_MIN_ROWS,
)
_events = st.lists(
    st.fixed_dictionaries(
        {"service": st.sampled_from(["api", "db", "queue.worker"]), "level": _levels},
        optional={"latency_ms": _latency, "message": st.sampled_from(["ok", "timeout after 3 s"])},
    ),
    min_size=TRAIN_MIN_ROWS,
    max_size=2 * TRAIN_MIN_ROWS,
)
# Small forests: a fit must take a fraction of a second, and the stateful run waits for each.
_parameters = st.fixed_dictionaries(
    {},
    optional={
        "contamination": st.floats(min_value=0.001, max_value=0.5),
        "n_estimators": st.integers(min_value=1, max_value=16),
        "max_samples": st.integers(min_value=2, max_value=400),
        "random_state": st.integers(min_value=0, max_value=2**32 - 1),
    },
)
VALID_TRAINING_BODIES = st.one_of(
    st.fixed_dictionaries(
        {"data": _rows}, optional={"parameters": _parameters, "activate": st.booleans()}
    ),
    st.fixed_dictionaries(
        {"logs": _events}, optional={"parameters": _parameters, "activate": st.booleans()}
    ),
)


@stateful_schema.hook
def before_generate_body(context: HookContext, strategy: st.SearchStrategy[Any]) -> Any:
    """The schema cannot say "at least train_min_rows rows" (a setting): apart from the
    document's two examples, bodies generated from it are refused, and the chain from POST /train
    would only ever start from those two."""
    if context.operation is not None and context.operation.label == "POST /train":
        return st.one_of(VALID_TRAINING_BODIES, strategy)
    return strategy


class Workflow(stateful_schema.as_state_machine()):  # type: ignore[misc]
    """Schemathesis' state machine over the links, counting what each step reached."""

    # (operation, status, link followed: "<source> -> [<status>] <name> -> <target>"), over
    # every scenario of the run
    reached: ClassVar[Counter[tuple[str, int, str]]] = Counter()
    job_outcomes: ClassVar[Counter[str]] = Counter()
    trained_bodies: ClassVar[set[str]] = set()

    def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
        return {"headers": AUTH}

    def step(self, input: StepInput) -> StepOutput:
        output: StepOutput = super().step(input)
        via = "no link"
        if input.transition is not None and input.is_applied:
            via = input.transition.id
        self.reached[(input.case.operation.label, output.response.status_code, via)] += 1
        return output

    def after_call(self, response: Response, case: schemathesis.Case[Any]) -> None:
        super().after_call(response, case)
        if case.operation.label == "POST /train" and response.status_code == 202:
            # Like a client that polls its job: the next steps see a finished job, so the
            # version it made can be followed to activation.
            self.job_outcomes[_wait_for_job(response.json()["job_id"])] += 1
            self.trained_bodies.add(json.dumps(case.body, sort_keys=True))
        if (
            case.operation.label == "POST /models/{version}/activate"
            and response.status_code == 200
        ):
            info = response.json()
            assert info["active"] is True
            assert info["version"] == case.path_parameters["version"]


def _wait_for_job(job_id: str) -> str:
    status = stateful_schema["/train/{job_id}"]["GET"]
    deadline = time.monotonic() + JOB_WAIT_SECONDS
    while time.monotonic() < deadline:
        job = status.Case(path_parameters={"job_id": job_id}).call().json()
        if job["status"] in ("succeeded", "failed"):
            # Accepted input must train: a failure here is a bug the request should have caught.
            assert job["status"] == "succeeded", job["error"]
            return str(job["status"])
        time.sleep(0.02)
    raise AssertionError(f"training job {job_id} unfinished after {JOB_WAIT_SECONDS} s")


def test_stateful_sequences_reach_linked_operations() -> None:
    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
    reached = Workflow.reached

    def successes(source: str, link: str, target: str) -> int:
        return sum(
            n
            for (operation, code, via), n in reached.items()
            if operation == target
            and 200 <= code < 300
            and via.startswith(f"{source} -> [")
            and via.endswith(f"] {link} -> {target}")
        )

    assert not [key for key in reached if key[1] >= 500]
    assert Workflow.job_outcomes["succeeded"] > 0
    # Trained on more than the OpenAPI document's two examples.
    assert len(Workflow.trained_bodies) > 2
    # Each link was followed with the value it carries, and its target answered 2xx.
    assert successes("POST /train", "GetTrainingJob", "GET /train/{job_id}") > 0
    activate = "POST /models/{version}/activate"
    assert successes("GET /train/{job_id}", "ActivateTrainedModel", activate) > 0
    assert successes("GET /models", "ActivateOldestModel", activate) > 0
    assert successes(activate, "ListModels", "GET /models") > 0
    assert successes("POST /score", "GetServiceStats", "GET /stats/{service}") > 0
    assert successes("POST /score/batch", "GetServiceStats", "GET /stats/{service}") > 0
