"""The Numenta Anomaly Benchmark's scoring rules, implemented from their published description.

Sources: Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta Anomaly
Benchmark", ICMLA 2015, and the numenta/NAB repository's documentation (README, wiki "NAB scoring").
The rules, as used here:

- A detector gives every row of a series a score; ``score >= threshold`` is a detection.
- The first ``min(floor(0.15 * n), 750)`` rows of a series are a probationary period: nothing
  there counts, for or against (a window with no row after it would not count either).
- Each labelled window counts once. Its earliest detection earns ``A_TP * S(p) / S(-1)``, where
  ``S(p) = 2 * sigmoid(-5 p) - 1`` is the scaled sigmoid and ``p = -(right - i + 1) / width`` is
  the row's position relative to the window (``-1`` at its first row, just below 0 at its last),
  so a detection at the very start of a window earns exactly ``A_TP``. A window without any
  detection costs ``A_FN``.
- A detection outside every window costs ``A_FP * S(p)`` (``S`` is negative there): after a window
  ``p = (i - right) / (width - 1)`` of that window, so a detection just after a window costs
  little and one three widths later costs the full ``A_FP`` (``S(p) = -1`` for ``p >= 3``); before
  the first window it costs the full ``A_FP``.
- The raw score of a corpus is the sum over its series; it is normalised as
  ``100 * (raw - null) / (perfect - null)`` with ``perfect = A_TP * windows`` and ``null`` the
  optimised score of NAB's null detector (a constant score): the better of detecting nothing
  (``-A_FN * windows``) and detecting every row. On any real corpus the first is better.
- Each profile (standard, reward low FP, reward low FN) uses the one threshold that maximises its
  raw score over the whole corpus. We search every distinct score value exactly, where NAB's
  optimiser runs a local search; the exact search can only find an equal or better threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # 0.15 * 5000 in NAB's description


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    a_tp: float
    a_fp: float
    a_fn: float


PROFILES = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def scaled_sigmoid(position: FloatArray | float) -> FloatArray:
    """``2 * sigmoid(-5 p) - 1``, and exactly -1 from ``p >= 3`` on (far behind any window)."""
    p = np.asarray(position, dtype=np.float64)
    value = 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0
    return np.asarray(np.where(p >= 3.0, -1.0, value), dtype=np.float64)


MAX_TP = float(scaled_sigmoid(-1.0))


def probation_rows(n_rows: int) -> int:
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS)


@dataclass(frozen=True, slots=True)
class SeriesLayout:
    """Where each row of one series stands, independent of any detector or profile.

    ``window[i]`` is the window index of row i (-1 outside every window), ``tp_unit[i]`` its
    credit as the earliest detection of its window per unit of A_TP, ``fp_unit[i]`` (<= 0) its cost
    as a false positive per unit of A_FP, and ``scorable[i]`` is False in the probationary period.
    """

    name: str
    window: IntArray
    tp_unit: FloatArray
    fp_unit: FloatArray
    scorable: npt.NDArray[np.bool_]
    n_windows: int  # every labelled window, the base of the perfect score
    scorable_windows: int  # windows with at least one row after the probationary period

    def __len__(self) -> int:
        return int(self.window.shape[0])


def layout_series(name: str, n_rows: int, windows: Sequence[tuple[int, int]]) -> SeriesLayout:
    """``windows`` are (first row, last row) index pairs, inclusive, in time order, disjoint."""
    window = np.full(n_rows, -1, dtype=np.int64)
    tp_unit = np.zeros(n_rows)
    fp_unit = np.full(n_rows, -1.0)  # before the first window: a full false positive
    index = np.arange(n_rows, dtype=np.float64)
    previous_end = -1
    for number, (left, right) in enumerate(windows):
        if not 0 <= left <= right < n_rows or left <= previous_end:
            raise ValueError(f"{name}: window {number} ({left}, {right}) is out of order or range")
        width = right - left + 1
        rows = slice(left, right + 1)
        window[rows] = number
        tp_unit[rows] = scaled_sigmoid(-(right - index[rows] + 1.0) / width) / MAX_TP
        fp_unit[rows] = 0.0
        # Rows after this window, up to the next one (or the end), are judged against it.
        following_end = windows[number + 1][0] if number + 1 < len(windows) else n_rows
        after = slice(right + 1, following_end)
        if width > 1:
            fp_unit[after] = scaled_sigmoid((index[after] - right) / (width - 1.0))
        # A one-row window has no width to measure distance by: NAB's formula divides by zero;
        # such rows keep the full false-positive cost.
        previous_end = right
    scorable = np.arange(n_rows) >= probation_rows(n_rows)
    scorable_windows = len(np.unique(window[scorable & (window >= 0)]))
    return SeriesLayout(name, window, tp_unit, fp_unit, scorable, len(windows), scorable_windows)


@dataclass(frozen=True, slots=True)
class SeriesOutcome:
    """One series at one threshold, in counts and in raw score per profile."""

    name: str
    windows: int
    detected_windows: int
    false_positives: int  # detections outside windows (rows, after probation)
    raw: dict[str, float]


def score_series(
    layout: SeriesLayout, scores: FloatArray, threshold: float, profiles: Iterable[Profile]
) -> SeriesOutcome:
    if scores.shape != layout.window.shape:
        raise ValueError(f"{layout.name}: {scores.shape[0]} scores for {len(layout)} rows")
    detected = (scores >= threshold) & layout.scorable
    inside = layout.window >= 0
    best: dict[int, float] = {}
    for row in np.flatnonzero(detected & inside):
        w = int(layout.window[row])
        best[w] = max(best.get(w, -math.inf), float(layout.tp_unit[row]))
    fp_cost = float(layout.fp_unit[detected & ~inside].sum())
    tp_credit = sum(best.values())
    missed = layout.scorable_windows - len(best)
    raw = {p.name: p.a_tp * tp_credit + p.a_fp * fp_cost - p.a_fn * missed for p in profiles}
    return SeriesOutcome(
        layout.name,
        layout.scorable_windows,
        len(best),
        int((detected & ~inside).sum()),
        raw,
    )


@dataclass(frozen=True, slots=True)
class Sweep:
    """Profile-free sums at every candidate threshold (descending), for a whole corpus.

    At ``thresholds[k]`` the detections are all rows scoring at least that much: ``tp_credit[k]``
    sums the earliest-detection credit of the detected windows, ``detected[k]`` counts them and
    ``fp_cost[k]`` sums the false-positive costs. ``thresholds[0]`` is +inf (nothing detected).
    """

    thresholds: FloatArray
    tp_credit: FloatArray
    detected: FloatArray
    fp_cost: FloatArray
    windows: int  # scorable windows
    all_windows: int

    def raw(self, profile: Profile) -> FloatArray:
        missed = self.windows - self.detected
        return np.asarray(
            profile.a_tp * self.tp_credit + profile.a_fp * self.fp_cost - profile.a_fn * missed,
            dtype=np.float64,
        )


def sweep(layouts: Sequence[SeriesLayout], scores: Sequence[FloatArray]) -> Sweep:
    """Raw-score ingredients at every distinct score value of the corpus, in one sorted pass."""
    frames = []
    for number, (layout, series_scores) in enumerate(zip(layouts, scores, strict=True)):
        if series_scores.shape != layout.window.shape:
            raise ValueError(
                f"{layout.name}: {series_scores.shape[0]} scores for {len(layout)} rows"
            )
        keep = layout.scorable
        frames.append(
            pd.DataFrame(
                {
                    "score": np.asarray(series_scores, dtype=np.float64)[keep],
                    # Windows are numbered per corpus so that two series never share one.
                    "window": np.where(
                        layout.window[keep] >= 0, layout.window[keep] + 1_000_000 * number, -1
                    ),
                    "tp_unit": layout.tp_unit[keep],
                    "fp_unit": layout.fp_unit[keep],
                }
            )
        )
    windows = sum(layout.scorable_windows for layout in layouts)
    all_windows = sum(layout.n_windows for layout in layouts)
    if not frames or sum(len(f) for f in frames) == 0:
        return Sweep(
            np.array([math.inf]), np.zeros(1), np.zeros(1), np.zeros(1), windows, all_windows
        )
    points = pd.concat(frames, ignore_index=True)
    if not np.isfinite(points["score"].to_numpy()).all():
        raise ValueError("anomaly scores must be finite")
    points = points.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    inside = points["window"].to_numpy() >= 0
    fp_step = np.where(inside, 0.0, points["fp_unit"].to_numpy())
    # The credit of a window at a threshold is the best (earliest) of its detected rows, so as the
    # threshold falls its credit is the running maximum over its rows in score order; each row
    # adds what it raises that maximum by.
    in_window = points[inside]
    running = in_window.groupby("window")["tp_unit"].cummax()
    previous = running.groupby(in_window["window"]).shift(1)
    tp_step = np.zeros(len(points))
    tp_step[inside] = (running - previous.fillna(0.0)).to_numpy()
    first_step = np.zeros(len(points))
    first_step[inside] = previous.isna().to_numpy().astype(np.float64)
    score = points["score"].to_numpy()
    # A threshold equal to a score detects every row with that score: cut after each run of ties.
    last_of_run = np.append(score[1:] != score[:-1], True)
    return Sweep(
        thresholds=np.concatenate([[math.inf], score[last_of_run]]),
        tp_credit=np.concatenate([[0.0], np.cumsum(tp_step)[last_of_run]]),
        detected=np.concatenate([[0.0], np.cumsum(first_step)[last_of_run]]),
        fp_cost=np.concatenate([[0.0], np.cumsum(fp_step)[last_of_run]]),
        windows=windows,
        all_windows=all_windows,
    )


@dataclass(frozen=True, slots=True)
class ProfileResult:
    profile: str
    threshold: float  # +inf means "never detect" was best
    raw: float
    null: float
    perfect: float
    normalised: float


def optimise(corpus: Sweep, profiles: Iterable[Profile]) -> dict[str, ProfileResult]:
    results = {}
    for profile in profiles:
        raw = corpus.raw(profile)
        # Ties go to the highest threshold: fewer detections for the same score.
        best = int(np.argmax(raw))
        # NAB's baseline is the null detector's own optimised score: a constant score either
        # detects nothing (every window missed) or every row, whichever scores more.
        null = max(float(raw[0]), float(raw[-1]))
        perfect = profile.a_tp * corpus.all_windows
        span = perfect - null
        normalised = 100.0 * (float(raw[best]) - null) / span if span > 0 else math.nan
        results[profile.name] = ProfileResult(
            profile.name,
            float(corpus.thresholds[best]),
            float(raw[best]),
            null,
            perfect,
            normalised,
        )
    return results


def score_corpus(
    layouts: Sequence[SeriesLayout], scores: Sequence[FloatArray], profiles: Sequence[Profile]
) -> dict[str, ProfileResult]:
    return optimise(sweep(layouts, scores), profiles)


def window_indices(
    timestamps: Sequence[str] | pd.Series, windows: Iterable[Sequence[str]]
) -> list[tuple[int, int]]:
    """Label windows given as timestamps -> (first row, last row) indices of the series.

    NAB's labels name rows exactly (with a ``.000000`` fraction); a window edge between rows is
    rounded inwards, so the window keeps only rows inside its time range.
    """
    times = pd.to_datetime(pd.Series(list(timestamps))).to_numpy()
    pairs = []
    for start, end in windows:
        left = int(np.searchsorted(times, np.datetime64(pd.Timestamp(start)), side="left"))
        right = int(np.searchsorted(times, np.datetime64(pd.Timestamp(end)), side="right")) - 1
        if left > right:
            raise ValueError(f"label window {start} .. {end} contains no row")
        pairs.append((left, right))
    return pairs
