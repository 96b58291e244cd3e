"""The batch path's answers, byte for byte, on varied streams: new services, warm-up, missing
latencies, every level, messages with quotes, "%" and non-ASCII, a detector failing for some
batches, a model swap, and stores small enough to evict services, templates and contexts.

The one-event path (``ScoringEngine._score_one``) is written apart from the batch path, so the
fast test here scores the same stream both ways and compares the bytes. Run as a script, the
module writes every batch's answers to a file, so that two versions of ``app`` can be compared
(speed work keeps the answers of the code it replaces)::

    PYTHONPATH=<copy of main> python tests/test_batch_answers.py --out /tmp/main.bin
    PYTHONPATH=. python tests/test_batch_answers.py --out /tmp/branch.bin
    cmp /tmp/main.bin /tmp/branch.bin
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.detectors.base import MethodOutput, OneOutput, ScoringContext
from app.engine import ScoringEngine
from app.events import parse_events
from app.model import FitResult, Model, bootstrap_training_data, fit_model, model_from_arrays
from app.schemas.columns import columns_of
from app.settings import Settings

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
LEVELS = ["DEBUG", "INFO", "info", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"]
LEVEL_SHARES = [0.05, 0.6, 0.1, 0.08, 0.04, 0.08, 0.03, 0.02]
WORDS = ["GET", "POST", "/api/v1/users", "timeout", "upstream", "cache", "miss", "ok", "100%"]


def _message(rng: np.random.Generator, service: str) -> str:
    kind = rng.integers(0, 12)
    if kind == 0:
        return ""
    if kind == 1:
        return f"{service}: upstream {rng.integers(500, 504)} after {rng.integers(1, 9)} tries"
    if kind == 2:
        return f'quote " backslash \\ percent {rng.integers(0, 3)}% é ✓ tab\there'
    if kind == 3:
        # Many distinct shapes: new templates, evictions of the miner's least recent ones.
        return " ".join(WORDS[int(k)] for k in rng.integers(0, len(WORDS), rng.integers(1, 7)))
    if kind == 4:
        return f"job{rng.integers(0, 400)} word{rng.integers(0, 50)} finished"
    return f"request {rng.integers(0, 10**6)} served in {rng.integers(1, 900)} ms"


def events_of(rng: np.random.Generator, start: int, n: int, services: int) -> list[Any]:
    """``n`` raw events from index ``start`` of a stream over a growing set of services."""
    raw: list[dict[str, Any]] = []
    for i in range(start, start + n):
        pool = min(services, 3 + i // 40)  # services keep arriving
        service = f"svc-{int(rng.integers(0, pool))}" if rng.random() > 0.02 else f"new-{i}"
        event: dict[str, Any] = {
            "service": service,
            "level": LEVELS[
                int(rng.choice(len(LEVELS), p=[0.05, 0.6, 0.1, 0.08, 0.04, 0.08, 0.03, 0.02]))
            ],
            "message": _message(rng, service),
        }
        draw = rng.random()
        if draw < 0.08:
            pass  # no latency
        elif draw < 0.1:
            event["latency_ms"] = 0.0
        elif draw < 0.11:
            event["latency_ms"] = float(rng.choice([1e-300, 5e-324, 86_400_000.0, 3_600_000.0]))
        else:
            spike = 40.0 if rng.random() < 0.01 else 1.0
            event["latency_ms"] = float(rng.lognormal(3.0 + len(service) % 5, 0.5)) * spike
        if rng.random() > 0.05:  # else the receive time is used
            jitter = float(rng.normal(0, 2.0)) if rng.random() < 0.05 else 0.0
            event["timestamp"] = datetime.fromtimestamp(START + i * 0.3 + jitter, UTC)
        raw.append(event)
    return raw


@functools.cache
def _fit(seed: int) -> FitResult:
    # fit_model is a pure function of its inputs: the test's engines (and the swap to seed + 1,
    # which is the next case's seed) can share one fit per seed. ~2 s each otherwise.
    return fit_model(bootstrap_training_data(seed), {"n_estimators": 20, "random_state": seed}, 20)


def model(seed: int) -> Model:
    """A Model of its own (rebuilt from copies of the fitted arrays) for each engine."""
    result = _fit(seed)
    arrays = {name: array.copy() for name, array in result.arrays.items()}
    return model_from_arrays(f"test-{seed}", arrays, copy.deepcopy(result.description))


def settings(folder: Path, small: bool) -> Settings:
    values: dict[str, Any] = {"artifacts_dir": folder, "env": "test"}
    if small:  # every store evicts within a few thousand events
        values.update(max_services=12, template_max=20, sequence_max_contexts=16)
    return Settings(**values)


def _failing(name: str, when: Callable[[], bool], detector: Any) -> None:
    """``detector`` raises while ``when()`` holds, on both entry points: a batch's ``rarity``
    and the batch of one's ``rarity_one``."""
    rarity, rarity_one = detector.rarity, detector.rarity_one

    def flaky(context: ScoringContext) -> MethodOutput:
        if when():
            raise RuntimeError(f"{name} broke")
        output: MethodOutput = rarity(context)
        return output

    def flaky_one(context: ScoringContext) -> OneOutput:
        if when():
            raise RuntimeError(f"{name} broke")
        output: OneOutput = rarity_one(context)
        return output

    detector.rarity = flaky
    detector.rarity_one = flaky_one


def plan(seed: int, events: int, sizes: tuple[int, int]) -> list[int]:
    rng = np.random.default_rng(seed + 1000)
    lengths: list[int] = []
    while sum(lengths) < events:
        lengths.append(int(rng.integers(sizes[0], sizes[1] + 1)))
    return lengths


def batches(
    engine: ScoringEngine, seed: int, lengths: list[int], one_at_a_time: bool = False
) -> Iterator[list[bytes]]:
    """Every batch's answers of a stream through ``engine``: even batches as validated columns
    (as a list, or joined as POST /score/batch writes them), odd ones as events; or each event
    alone, with its batch's receive time. The pattern detector fails on every seventh batch,
    and the model is swapped halfway."""
    rng = np.random.default_rng(seed)
    batch = [0]
    _failing("pattern", lambda: batch[0] % 7 == 3, engine.online_detectors[5])
    done = 0
    swapped = False
    for b, n in enumerate(lengths):
        batch[0] = b
        parsed = parse_events(events_of(rng, done, n, services=40))
        received = START + done * 0.3
        if one_at_a_time:
            yield [answer for event in parsed for answer in engine.score_json([event], received)]
        elif b % 4 == 0:
            yield engine.score_columns(columns_of(parsed), received)
        elif b % 4 == 2:
            # POST /score/batch's path: the answers written into one text, split back here
            # between them (a raw NUL or quote is never inside a JSON string).
            joined = engine.score_columns_joined(columns_of(parsed), b"<", b">", received)
            assert joined.startswith(b"<{")
            assert joined.endswith(b"}>")
            boundary = b'},{"is_anomaly"'
            answers = joined[1:-1].replace(boundary, b'}\0{"is_anomaly"').split(b"\0")
            assert len(answers) == n
            yield answers
        else:
            yield engine.score_json(parsed, received)
        done += n
        if not swapped and done >= sum(lengths) // 2:
            engine.swap(model(seed + 1))
            swapped = True


def test_batches_answer_as_events_scored_one_at_a_time(tmp_path: Path) -> None:
    for small, seed in ((False, 1), (True, 2)):
        lengths = plan(seed, 2500, (3, 400))
        batched = ScoringEngine(settings(tmp_path, small), model(seed))
        alone = ScoringEngine(settings(tmp_path, small), model(seed))
        expected = batches(alone, seed, lengths, one_at_a_time=True)
        for answers in batches(batched, seed, lengths):
            assert answers == next(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--events", type=int, default=30_000)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the failing detector's tracebacks
    digest = hashlib.sha256()
    with args.out.open("wb") as out:
        for small, seed, sizes in ((False, 11, (3, 1000)), (True, 12, (3, 300))):
            engine = ScoringEngine(settings(args.out.parent, small), model(seed))
            for answers in batches(engine, seed, plan(seed, args.events, sizes)):
                text = b"\n".join(answers) + b"\n"
                out.write(text)
                digest.update(text)
    sys.stdout.write(f"{args.out} {digest.hexdigest()}\n")


if __name__ == "__main__":
    main()
