"""Recalibration reaches the extreme rarities a model of a heavy-tailed service claims."""

from __future__ import annotations

import numpy as np

from app.detectors.calibration import OnlineRecalibration, alarm_rarity

Q = 0.001


def test_a_spike_claimed_one_in_ten_to_the_80_that_comes_every_100_events_is_learned() -> None:
    """A normal-tail model calls a 20-sigma spike "1 in 10**80"; if the service makes one every
    100 events (a periodic job), the calibrated rarity must come back near 1 in 100, not stay
    beyond any alarm level (a power fitted only down to 1e-12 leaves it at ~1e-14)."""
    recalibration = OnlineRecalibration()
    alarm = alarm_rarity(Q, 0.5, 1.0)
    rng = np.random.default_rng(0)
    rarity = rng.random(3000)
    rarity[::100] = 1e-80
    # Five-minute rows, as a metric: every spike is an isolated alarm, learned in full.
    times = 300.0 * np.arange(rarity.size, dtype=np.float64)
    calibrated = recalibration.observe(["svc"] * rarity.size, times, {"m": rarity}, {"m": alarm})
    late_spikes = calibrated["m"][2000::100]
    assert np.all(late_spikes > Q)
    # The first spikes, before the service has shown ten of them, are still alarms.
    assert calibrated["m"][100] <= alarm
