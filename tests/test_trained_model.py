"""A model trained on a service's own normal logs must not raise more false alarms on more normal
logs than the bootstrap model a fresh install starts with: users retrain to get better."""

from __future__ import annotations

from pathlib import Path

from app.eval.synthetic import EVAL_SERVICES, generate_stream
from app.eval.trained import _training_data
from app.local import AnomalyDetector
from tests.conftest import copy_artifacts

SECONDS = 600.0


def _false_alarms(detector: AnomalyDetector, events: list[dict[str, object]]) -> int:
    flagged = 0
    for start in range(0, len(events), 1000):
        flagged += sum(
            r["is_anomaly"] for r in detector.predict_batch(events[start : start + 1000])
        )
    return flagged


def test_trained_model_raises_no_more_false_alarms_than_the_bootstrap(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    history = generate_stream(SECONDS, [], EVAL_SERVICES, 11, varied_messages=True)
    later = generate_stream(SECONDS, [], EVAL_SERVICES, 12, varied_messages=True)
    replay = [e.model_dump() for e in later.events]
    bootstrap = AnomalyDetector(
        artifacts_dir=copy_artifacts(bootstrapped_artifacts, tmp_path / "b")
    )
    trained = AnomalyDetector(artifacts_dir=copy_artifacts(bootstrapped_artifacts, tmp_path / "t"))
    trained.train(_training_data([e.model_dump() for e in history.events]))
    baseline = _false_alarms(bootstrap, replay)
    after_training = _false_alarms(trained, replay)
    # Every event is normal. Before the fix the trained autoencoder flagged each normal error line
    # and each latency ~3 spreads out (~0.4% of events); the margin is 0.05% of the replay.
    assert after_training <= baseline + max(3, int(0.0005 * len(replay))), (
        f"trained {after_training} false alarms, bootstrap {baseline}, of {len(replay)} events"
    )
