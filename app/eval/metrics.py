"""Per-event detection counts and the rates derived from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, truth: npt.ArrayLike, flagged: npt.ArrayLike) -> Confusion:
        is_anomaly: BoolArray = np.asarray(truth, dtype=bool)
        is_flagged: BoolArray = np.asarray(flagged, dtype=bool)
        if is_anomaly.shape != is_flagged.shape:
            raise ValueError(f"{is_anomaly.size} labels for {is_flagged.size} decisions")
        return cls(
            tp=int((is_anomaly & is_flagged).sum()),
            fp=int((~is_anomaly & is_flagged).sum()),
            fn=int((is_anomaly & ~is_flagged).sum()),
            tn=int((~is_anomaly & ~is_flagged).sum()),
        )

    @property
    def precision(self) -> float:
        # Nothing flagged: no false alarm was raised, so precision is vacuously perfect; recall
        # (and so F1) still reports the misses.
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        positives = self.tp + self.fn
        return self.tp / positives if positives else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alarm_rate(self) -> float:
        negatives = self.fp + self.tn
        return self.fp / negatives if negatives else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "false_alarm_rate": self.false_alarm_rate,
        }
