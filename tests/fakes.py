"""Stand-ins for ``app.model.fit_model`` that fail on purpose, in the spirit of MLServer's failing
test models. The trainer sends the fit function to a *spawned* worker by reference, so a test that
patches ``app.trainer.fit_model`` with one of these makes the real worker process run it: the
failure travels the same path (pickled exception, or a dead process) as a real one would."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from app.model import TrainingData

INJECTED_MESSAGE = "injected failure: the fit could not converge"


def failing_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> NoReturn:
    raise ValueError(INJECTED_MESSAGE)


def dying_fit(data: TrainingData, parameters: dict[str, Any], warmup: int) -> NoReturn:
    # What the OOM killer does to a worker: no exception, no cleanup, the process is gone.
    os._exit(137)
