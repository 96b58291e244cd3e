"""The contract every detector keeps, in the spirit of scikit-learn and PyOD.

* ``__init__`` stores parameters only; ``get_params`` returns them.
* A *batch* detector learns only in ``fit`` (which returns ``self`` and sets attributes ending in
  ``_``); ``rarity`` never changes it. An *online* detector learns from the stream and says so
  with ``kind = "online"``; its state lives in the engine's stores, not in the detector.
* ``rarity`` answers, for each event, the probability that a normal event looks at least this
  unusual to the method. Lower is more anomalous; the engine turns it into the shared score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, Self

import numpy as np
import numpy.typing as npt

from app.baselines import BaselineView
from app.events import EventBatch
from app.forecasts import ForecastView
from app.patterns import PatternView
from app.records import RecordView
from app.sequences import SequenceView
from app.templates import TemplateView
from app.windows import WindowView

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class NotFittedError(RuntimeError):
    """A batch detector was asked to score before it was fitted."""


# NamedTuples, immutable like the frozen dataclasses they replace at a fraction of their
# construction cost (a frozen dataclass sets each field through object.__setattr__): every call
# makes one context and one output per method, the batch of one of /score included.
class ScoringContext(NamedTuple):
    """What the engine knows about a batch when the detectors run."""

    batch: EventBatch
    features: FloatArray
    baseline: BaselineView
    window: WindowView
    # Online views beyond baselines and windows; None where the engine does not keep them.
    templates: TemplateView | None = None
    sequences: SequenceView | None = None
    forecasts: ForecastView | None = None
    # Each event's service's previous template ids (app.template_history); None unless a
    # detector of the model reads them.
    template_history: IntArray | None = None
    patterns: PatternView | None = None
    records: RecordView | None = None


_NO_METRICS: Mapping[str, FloatArray] = MappingProxyType({})  # read-only: shared by every default


class MethodOutput(NamedTuple):
    rarity: FloatArray
    metrics: Mapping[str, FloatArray] = _NO_METRICS  # NaN reads as "not known"


class OneOutput(NamedTuple):
    """``MethodOutput`` of a batch of one as Python floats: what ``Detector.rarity_one`` gives
    (every /score and ``AnomalyDetector.predict``), where a 1-element array per value would cost
    a numpy call to make and another to read back."""

    rarity: float
    # NaN reads as "not known". A dict made for this output alone: the engine hands it on in
    # its answer.
    metrics: dict[str, float]


# ``OneOutput(rarity, metrics)`` as ``one_output((rarity, metrics))``: the same tuple without
# NamedTuple's Python-level ``__new__``, whose frame cost more than a third of the cheapest
# detectors' ``rarity_one`` (eight outputs per event).
one_output: Callable[[tuple[float, dict[str, float]]], OneOutput] = partial(
    tuple.__new__, OneOutput
)


class Detector(ABC):
    name: ClassVar[str]
    method: ClassVar[str]
    kind: ClassVar[Literal["batch", "online"]]
    requires: ClassVar[tuple[str, ...]]
    unavailable_reason: ClassVar[str | None] = None
    # False for a method whose rarities are already frequencies of the service's own history,
    # learned online (see ``TemplateDetector``): the engine's online recalibration, which learns
    # the same thing again from the method's alarms, would count every long incident twice.
    recalibrated: ClassVar[bool] = True

    @classmethod
    def available(cls) -> bool:
        return cls.unavailable_reason is None

    @classmethod
    def absent_reason(cls) -> str:
        """Why a built batch detector is missing from the active model (GET /detectors)."""
        return "the active model has none: it is fitted at training time"

    @abstractmethod
    def get_params(self) -> dict[str, Any]: ...

    @abstractmethod
    def rarity(self, context: ScoringContext) -> MethodOutput: ...

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        """``rarity`` of a context of one event, each value as the Python float of its 1-element
        array (bit for bit; tests/detectors/test_contract.py checks every detector). Detectors
        override it with the same arithmetic on Python floats."""
        output = self.rarity(context)
        return OneOutput(
            float(output.rarity.item()),
            {name: float(column.item()) for name, column in output.metrics.items()},
        )


class BatchDetector(Detector):
    kind: ClassVar[Literal["batch", "online"]] = "batch"

    @abstractmethod
    def fit(self, features: FloatArray) -> Self: ...

    @property
    @abstractmethod
    def is_fitted(self) -> bool: ...

    @abstractmethod
    def to_arrays(self) -> dict[str, npt.NDArray[Any]]: ...

    @classmethod
    @abstractmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Self: ...
