"""NAB's scoring rules on series small enough to score by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.eval.nab_scoring import (
    PROFILES,
    layout_series,
    probation_rows,
    scaled_sigmoid,
    score_corpus,
    score_series,
    sweep,
    window_indices,
)

LOW_FP = PROFILES[1]


def hand_sigmoid(p: float) -> float:
    """NAB's scaled sigmoid written out: 2 / (1 + e^(5p)) - 1, and -1 from p = 3 on."""
    return -1.0 if p >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def flags(n: int, rows: list[int], value: float = 1.0) -> np.ndarray:
    scores = np.zeros(n)
    scores[rows] = value
    return scores


# 40 rows: the first 6 are probationary (floor(0.15 * 40)); one window over rows 10..14.
N = 40
LAYOUT = layout_series("toy", N, [(10, 14)])


def standard_raw(rows: list[int]) -> float:
    return score_series(LAYOUT, flags(N, rows), 0.5, PROFILES).raw["standard"]


def test_scaled_sigmoid_matches_the_published_anchor_values() -> None:
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(scaled_sigmoid(-0.5)) == pytest.approx(0.84828, abs=1e-5)
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(1.0)) == pytest.approx(-0.98661, abs=1e-5)
    assert float(scaled_sigmoid(3.0)) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_rows() -> None:
    assert probation_rows(40) == 6
    assert probation_rows(4032) == 604
    assert probation_rows(22695) == 750


def test_detection_at_window_start_earns_exactly_a_tp() -> None:
    assert standard_raw([10]) == pytest.approx(1.0)


def test_later_detection_earns_the_sigmoid_of_its_relative_position() -> None:
    # Row 12 of window 10..14 (width 5): position -(14 - 12 + 1) / 5 = -0.6.
    expected = hand_sigmoid(-0.6) / hand_sigmoid(-1.0)
    assert standard_raw([12]) == pytest.approx(expected)
    # The last row of the window: position -1/5, still a (small) reward.
    assert standard_raw([14]) == pytest.approx(hand_sigmoid(-0.2) / hand_sigmoid(-1.0))


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    assert standard_raw([12, 13, 14]) == pytest.approx(standard_raw([12]))
    assert standard_raw([10, 11, 12]) == pytest.approx(1.0)


def test_missed_window_costs_a_fn_and_profiles_weigh_it() -> None:
    outcome = score_series(LAYOUT, np.zeros(N), 0.5, PROFILES)
    assert outcome.raw == {
        "standard": -1.0,
        "reward_low_FP_rate": -1.0,
        "reward_low_FN_rate": -2.0,
    }


def test_false_positive_before_any_window_costs_the_full_a_fp() -> None:
    outcome = score_series(LAYOUT, flags(N, [10, 7]), 0.5, PROFILES)
    assert outcome.raw["standard"] == pytest.approx(1.0 - 0.11)
    assert outcome.raw["reward_low_FP_rate"] == pytest.approx(1.0 - 0.22)
    assert outcome.false_positives == 1


def test_false_positive_after_a_window_costs_less_the_closer_it_is() -> None:
    # Row 16 is 2 rows after the window's end; window width 5 -> position 2 / (5 - 1) = 0.5.
    near = standard_raw([10, 16])
    assert near == pytest.approx(1.0 + 0.11 * hand_sigmoid(0.5))
    # Row 26 is 12 rows after: position 3, the full cost.
    assert standard_raw([10, 26]) == pytest.approx(1.0 - 0.11)
    assert 1.0 - 0.11 < near < 1.0


def test_probationary_rows_count_neither_way() -> None:
    assert standard_raw([10, 0, 3, 5]) == pytest.approx(1.0)
    early = layout_series("early", N, [(2, 8)])  # starts inside the probationary period
    outcome = score_series(early, flags(N, [3]), 0.5, PROFILES)
    assert outcome.detected_windows == 0
    assert outcome.raw["standard"] == -1.0  # the window still counts: rows 6..8 are scorable
    late_credit = score_series(early, flags(N, [6]), 0.5, PROFILES).raw["standard"]
    assert late_credit == pytest.approx(hand_sigmoid(-3 / 7) / hand_sigmoid(-1.0))


def test_normalisation_null_is_zero_and_perfect_is_100() -> None:
    other = layout_series("other", 30, [(8, 10), (20, 25)])
    layouts = [LAYOUT, other]
    null = score_corpus(layouts, [np.zeros(N), np.zeros(30)], PROFILES)
    perfect = score_corpus(layouts, [flags(N, [10]), flags(30, [8, 20])], PROFILES)
    for profile in PROFILES:
        assert null[profile.name].normalised == 0.0
        assert perfect[profile.name].normalised == pytest.approx(100.0)
        assert perfect[profile.name].perfect == 3.0


def test_null_baseline_is_the_better_of_detecting_nothing_or_everything() -> None:
    # On a long series flagging every row costs far more than missing the window.
    long = layout_series("long", 2000, [(1500, 1600)])
    result = score_corpus([long], [np.zeros(2000)], PROFILES)["reward_low_FN_rate"]
    assert result.null == -2.0
    assert math.isinf(result.threshold)
    # On two short series, flagging every row (three windows at their start, few costly rows)
    # beats missing all three windows, and that is then the baseline.
    other = layout_series("other", 30, [(8, 10), (20, 25)])
    layouts, zeros = [LAYOUT, other], [np.zeros(N), np.zeros(30)]
    everything = sum(
        score_series(layout, z, 0.0, PROFILES).raw["standard"]
        for layout, z in zip(layouts, zeros, strict=True)
    )
    assert everything > -3.0
    result = score_corpus(layouts, zeros, PROFILES)["standard"]
    assert result.null == pytest.approx(everything)
    assert result.normalised == 0.0


def test_threshold_is_optimised_over_the_corpus() -> None:
    # Window start scores 0.9, a false positive before the window 0.8, another row 0.3.
    scores = np.zeros(N)
    scores[10], scores[7], scores[20] = 0.9, 0.8, 0.3
    result = score_corpus([LAYOUT], [scores], PROFILES)["standard"]
    assert result.threshold == 0.9
    assert result.raw == pytest.approx(1.0)
    assert result.normalised == pytest.approx(100.0)
    # Hand-computed normalised score at threshold 0.8: 100 * ((1 - 0.11) + 1) / (1 + 1).
    at_08 = score_series(LAYOUT, scores, 0.8, PROFILES).raw["standard"]
    assert 100 * (at_08 + 1) / 2 == pytest.approx(94.5)


def test_window_timestamps_map_to_rows() -> None:
    stamps = [f"2014-04-01 00:{m:02d}:00" for m in range(0, 60, 5)]
    pairs = window_indices(stamps, [["2014-04-01 00:10:00.000000", "2014-04-01 00:20:00.000000"]])
    assert pairs == [(2, 4)]
    with pytest.raises(ValueError, match="no row"):
        window_indices(stamps, [["2014-04-01 00:11:00", "2014-04-01 00:12:00"]])


def test_overlapping_or_out_of_range_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="out of order"):
        layout_series("bad", 20, [(5, 10), (8, 12)])
    with pytest.raises(ValueError, match="out of order"):
        layout_series("bad", 20, [(15, 25)])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0]), min_size=N, max_size=N),
    st.lists(st.sampled_from([0.0, 0.3, 0.5, 1.0]), min_size=30, max_size=30),
)
def test_sweep_agrees_with_scoring_each_threshold_directly(a: list[float], b: list[float]) -> None:
    other = layout_series("other", 30, [(8, 10), (20, 25)])
    scores = [np.array(a), np.array(b)]
    corpus = sweep([LAYOUT, other], scores)
    for threshold, expected in zip(corpus.thresholds, corpus.raw(LOW_FP), strict=True):
        direct = sum(
            score_series(layout, s, threshold, PROFILES).raw["reward_low_FP_rate"]
            for layout, s in zip([LAYOUT, other], scores, strict=True)
        )
        assert expected == pytest.approx(direct)
    best = score_corpus([LAYOUT, other], scores, PROFILES)["reward_low_FP_rate"]
    assert best.raw == pytest.approx(float(np.max(corpus.raw(LOW_FP))))
