"""Stand-ins for ``app.model.fit_model`` and ``parse_training_body`` that fail on purpose, in the
spirit of MLServer's failing test models. The trainer sends these functions to *spawned* workers by
reference, so a test that patches ``app.trainer.fit_model`` with one of these makes the real worker
process run it: the failure travels the same path (pickled exception, or a dead process) as a real
one would."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from app.training_data import TrainingData, TrainingInput, parse_training_body

if TYPE_CHECKING:
    from app.model import FitResult

INJECTED_MESSAGE = "injected failure: the fit could not converge"


def failing_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> NoReturn:
    raise ValueError(INJECTED_MESSAGE)


def dying_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> NoReturn:
    # What the OOM killer does to a worker: no exception, no cleanup, the process is gone.
    os._exit(137)


def hanging_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> NoReturn:
    """Stuck as in one long compiled call: the worker's SIGALRM stays pending, its Python handler
    (which raises TrainingTimeout between bytecodes) never runs, and nothing comes back."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    threading.Event().wait()
    raise AssertionError("unreachable: nothing sets the event")


def parse_reporting_pid(raw: bytes, spool_to: str | None = None) -> list[dict[str, Any]]:
    """A training-body parser whose one "error" names the process it ran in."""
    return [{"type": "value_error", "loc": ("parsed_in_pid",), "msg": str(os.getpid())}]


def parse_dying_in_worker(
    raw: bytes, spool_to: str | None = None
) -> TrainingInput | list[dict[str, Any]]:
    """Dies like an OOM-killed process when run in a worker; the real parser in the test process
    (where the trainer falls back to validating on the event loop)."""
    if multiprocessing.parent_process() is not None:
        os._exit(137)
    return parse_training_body(raw, spool_to)


GATE_ENVIRONMENT = "INSIGHTHUB_TEST_FIT_GATE"


def gated_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> FitResult:
    """Waits (polling every few ms, as a running fit would keep being scheduled) until the file
    named by ``INSIGHTHUB_TEST_FIT_GATE`` exists, at most a minute, then fits for real: a fit
    that stays running for as long as a test needs it to."""
    from app.model import fit_model

    gate = Path(os.environ[GATE_ENVIRONMENT])
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    return fit_model(data, parameters, warmup)
