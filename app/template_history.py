"""Each service's most recent template ids: the window a next-template model reads.

The n-gram model in ``app.sequences`` needs only the last two templates of a service; the LSTM
(``app.detectors.lstm_sequence``) reads a longer window, so it keeps its own short deque per
service here, bounded in length (``MAX_WINDOW``) and in services (``ServiceStates``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import partial

import numpy as np
import numpy.typing as npt

from app.service_states import ServiceStates
from app.templates import NO_TEMPLATE

IntArray = npt.NDArray[np.int64]

MAX_WINDOW = 32
NO_HISTORY = -2  # a window slot before the first template this engine saw from the service


class TemplateHistory(ServiceStates["deque[int]"]):
    """The last ``MAX_WINDOW`` template ids of at most ``max_services`` services."""

    def __init__(self, max_services: int = 100_000) -> None:
        super().__init__(partial(deque, maxlen=MAX_WINDOW), max_services)

    def observe(self, services: Sequence[str], template_ids: IntArray, window: int) -> IntArray:
        """For each event, its service's ``window`` previous template ids (oldest first,
        ``NO_HISTORY`` where the service has fewer), then learn the event: in batch order.
        Events without a template are neither judged nor remembered."""
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be within 1..{MAX_WINDOW}")
        n = len(services)
        history = np.full((n, window), NO_HISTORY, dtype=np.int64)
        for i, (service, template_id) in enumerate(
            zip(services, template_ids.tolist(), strict=True)
        ):
            if template_id == NO_TEMPLATE:
                continue
            recent = self.state_for(service)
            if recent:
                tail = list(recent)[-window:]
                history[i, window - len(tail) :] = tail
            recent.append(template_id)
        return history
