"""Online recalibration: exact rarities pass through, over-confident ones are tamed per service."""

from __future__ import annotations

import numpy as np

from app.detectors.calibration import OnlineRecalibration, alarm_rarity

Q = 0.001


def _run(recalibration: OnlineRecalibration, service: str, rarity: np.ndarray) -> np.ndarray:
    alarm = alarm_rarity(Q, 0.5, 1.0)
    # One event a second: alarms in a sustained run are a second apart (an incident under way).
    times = np.arange(rarity.size, dtype=np.float64)
    out = [
        recalibration.observe([service] * 1000, t, {"m": chunk}, {"m": alarm})["m"]
        for chunk, t in zip(
            np.split(rarity, rarity.size // 1000), np.split(times, rarity.size // 1000), strict=True
        )
    ]
    return np.concatenate(out)


def test_alarm_rarity_is_the_target_rate_at_full_weight() -> None:
    assert alarm_rarity(Q, 0.5, 1.0) == Q
    assert alarm_rarity(Q, 0.5, 0.5) == Q**2
    assert alarm_rarity(Q, 0.5, 0.0) == 0.0


def test_exact_rarities_keep_their_false_alarm_rate() -> None:
    rng = np.random.default_rng(0)
    exact = rng.random(100_000)  # uniform: P(rarity <= q) = q, the definition of exact
    calibrated = _run(OnlineRecalibration(), "a", exact)
    rate = float((calibrated[20_000:] <= Q).mean())
    assert 0.3 * Q <= rate <= 2.0 * Q


def test_over_confident_rarities_are_brought_back_near_the_target() -> None:
    rng = np.random.default_rng(1)
    claims = rng.random(100_000) ** 3  # claims "one in a million" for one event in a hundred
    raw_rate = (claims[20_000:] <= Q).mean()
    assert raw_rate > 0.05
    calibrated = _run(OnlineRecalibration(), "a", claims)
    # Flagged events are never learned beyond the alarm level, so a tail that keeps getting
    # heavier past it is corrected only by the ratio seen up to it: far fewer alarms, not q.
    assert (calibrated[20_000:] <= Q).mean() < raw_rate / 10


def test_a_sustained_incident_is_not_learned_as_normal() -> None:
    rng = np.random.default_rng(2)
    recalibration = OnlineRecalibration()
    _run(recalibration, "a", rng.random(20_000))
    incident = np.full(1000, 1e-9)
    calibrated = _run(recalibration, "a", incident)
    assert np.all(calibrated <= Q)


def test_services_are_calibrated_separately() -> None:
    rng = np.random.default_rng(3)
    recalibration = OnlineRecalibration()
    _run(recalibration, "noisy", rng.random(50_000) ** 3)
    _run(recalibration, "quiet", rng.random(50_000))
    probe = np.array([1e-5])
    alarm = {"m": Q}
    now = np.array([1e6])
    noisy = recalibration.observe(["noisy"], now, {"m": probe}, alarm)["m"][0]
    quiet = recalibration.observe(["quiet"], now, {"m": probe}, alarm)["m"][0]
    assert quiet < Q < noisy
