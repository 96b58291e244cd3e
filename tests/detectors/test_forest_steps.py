"""The forest's step tables (``_Steps``) on the batch path and on disk: a batch looked up in the
tables gives bit for bit the kernel's paper scores and rarities (``FlatForest.paper_scores`` and
the calibrator's ``rarity``, the arithmetic the tables replace), and stored tables load as
built ones, while models stored without them (before they were stored) still load."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors.forest import FlatForest
from app.detectors.isolation_forest import STEPS_PREFIX, IsolationForestDetector, _Steps
from tests.detectors.test_contract import context_for, normal_features

FloatArray = npt.NDArray[np.float64]


def assert_batch_is_kernel(detector: IsolationForestDetector, features: FloatArray) -> None:
    forest, calibrator = detector.forest_, detector.calibrator_
    assert forest is not None
    assert calibrator is not None
    output = detector.rarity(context_for(features))
    paper = forest.paper_scores(features)
    assert output.metrics["paper_score"].tobytes() == paper.tobytes()
    assert output.rarity.tobytes() == calibrator.rarity(paper).tobytes()
    beyond = (paper > -forest.offset).astype(np.float64)
    assert output.metrics["beyond_contamination_threshold"].tobytes() == beyond.tobytes()


def threshold_rows(detector: IsolationForestDetector, seed: int) -> FloatArray:
    """Rows at and around every split on latency_z (the thresholds, their float64 and float32
    neighbours), at every level (and levels without a table), either latency_missing."""
    assert detector.forest_ is not None
    bounds = detector.forest_.split_thresholds(0)
    as_float32 = bounds.astype(np.float32)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    z = np.concatenate(
        [
            bounds,
            np.nextafter(bounds, np.inf),
            np.nextafter(bounds, -np.inf),
            as_float32,
            np.nextafter(as_float32, up),
            np.nextafter(as_float32, down),
        ]
    )
    rng = np.random.default_rng(seed)
    levels = rng.choice([0.0, 1.0, 2.0, 3.0, 0.5, 4.0, -0.0], z.size, p=[0.22] * 4 + [0.04] * 3)
    missing = rng.choice([0.0, 1.0, 0.5], size=z.size, p=[0.6, 0.39, 0.01])
    return np.column_stack([z, levels, missing])


def test_batch_at_and_around_every_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = IsolationForestDetector(n_estimators=30).fit(normal_features(600, 12))
    rows = threshold_rows(detector, 13)
    assert_batch_is_kernel(detector, rows)
    # Rows that every table has are looked up alone, without the kernel.
    tabled = rows[np.isin(rows[:, 1], [0.0, 1.0, 2.0, 3.0]) & (rows[:, 2] != 0.5)]
    assert_batch_is_kernel(detector, tabled)
    expected = detector.rarity(context_for(tabled))

    def no_kernel(*args: object, **kwargs: object) -> None:
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(FlatForest, "paper_scores", no_kernel)
    looked_up = detector.rarity(context_for(tabled))
    assert looked_up.rarity.tobytes() == expected.rarity.tobytes()
    assert looked_up.metrics["paper_score"].tobytes() == expected.metrics["paper_score"].tobytes()


z_values = st.one_of(
    st.floats(width=64),
    st.floats(-6.0, 6.0),
    st.floats(width=32).map(float),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 3.4028235e38, 3.4028236e38]),
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    rows=st.lists(
        st.tuples(
            z_values,
            st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, -1.0, math.nan]),
            st.sampled_from([0.0, 1.0, 0.5]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_batch_is_the_kernel_for_any_latency_z(rows: list[tuple[float, float, float]]) -> None:
    """Any float64 latency_z (NaN, infinities, beyond float32's range, subnormals), levels with
    and without a table, latency_missing of 0, 1 and neither."""
    assert_batch_is_kernel(_forest(), np.array(rows, dtype=np.float64))


_FORESTS: list[IsolationForestDetector] = []


def _forest() -> IsolationForestDetector:
    if not _FORESTS:
        _FORESTS.append(IsolationForestDetector(n_estimators=25).fit(normal_features(700, 18)))
    return _FORESTS[0]


def test_batch_tables_follow_a_refit() -> None:
    detector = IsolationForestDetector(n_estimators=20).fit(normal_features(500, 15))
    rows = normal_features(300, 16)
    assert_batch_is_kernel(detector, rows)
    before = detector._steps
    detector.fit(normal_features(500, 17) * 3.0)  # another forest, another calibrator
    assert_batch_is_kernel(detector, rows)
    assert detector._steps is not before
    assert_batch_is_kernel(detector, threshold_rows(detector, 19))


def test_a_forest_too_large_for_tables_scores_by_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.detectors.isolation_forest.MAX_STEP_WORK", 10)
    detector = IsolationForestDetector(n_estimators=20).fit(normal_features(500, 20))
    assert detector._steps is None or not detector._steps.tables
    assert_batch_is_kernel(detector, normal_features(100, 21))
    restored = IsolationForestDetector.from_arrays(detector.get_params(), detector.to_arrays())
    assert restored._steps is not None
    assert not restored._steps.tables
    assert_batch_is_kernel(restored, normal_features(100, 21))


def _same_tables(a: _Steps, b: _Steps) -> bool:
    return (
        a.bounds == b.bounds
        and a.tables == b.tables
        and a.levels.tobytes() == b.levels.tobytes()
        and a.paper.tobytes() == b.paper.tobytes()
        and a.rarity.tobytes() == b.rarity.tobytes()
    )


def test_stored_tables_load_as_built_and_models_without_them_build_them() -> None:
    detector = IsolationForestDetector(n_estimators=30).fit(normal_features(600, 22))
    arrays = detector.to_arrays()
    assert {k for k in arrays if k.startswith(STEPS_PREFIX)} == {
        f"{STEPS_PREFIX}{name}" for name in ("levels", "paper", "rarity")
    }
    stored = IsolationForestDetector.from_arrays(detector.get_params(), arrays)
    older = {k: v for k, v in arrays.items() if not k.startswith(STEPS_PREFIX)}
    built = IsolationForestDetector.from_arrays(detector.get_params(), older)
    assert stored._steps is not None
    assert built._steps is not None
    assert detector._steps is not None
    assert _same_tables(stored._steps, detector._steps)
    assert _same_tables(built._steps, detector._steps)
    rows = threshold_rows(detector, 23)
    for loaded in (stored, built):
        assert_batch_is_kernel(loaded, rows)


@pytest.mark.parametrize("damage", ["value", "shape", "levels"])
def test_stored_tables_that_disagree_with_the_forest_are_refused(damage: str) -> None:
    detector = IsolationForestDetector(n_estimators=30).fit(normal_features(600, 24))
    arrays = detector.to_arrays()
    paper = arrays[f"{STEPS_PREFIX}paper"].copy()
    if damage == "value":
        paper[1, 0, 0] = np.nextafter(paper[1, 0, 0], 2.0)  # the first step is always checked
        arrays[f"{STEPS_PREFIX}paper"] = paper
    elif damage == "shape":
        arrays[f"{STEPS_PREFIX}paper"] = paper[:, :, 1:]
    else:
        arrays[f"{STEPS_PREFIX}levels"] = arrays[f"{STEPS_PREFIX}levels"][::-1].copy()
    with pytest.raises(ValueError, match="step tables"):
        IsolationForestDetector.from_arrays(detector.get_params(), arrays)


def test_a_forest_of_other_features_has_no_tables_and_round_trips() -> None:
    rng = np.random.default_rng(25)
    detector = IsolationForestDetector(n_estimators=10).fit(rng.normal(size=(300, 5)))
    restored = IsolationForestDetector.from_arrays(detector.get_params(), detector.to_arrays())
    assert restored._steps is not None
    assert not restored._steps.tables
    probes = rng.normal(size=(50, 5))
    assert restored.paper_scores(probes).tobytes() == detector.paper_scores(probes).tobytes()
