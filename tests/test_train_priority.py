"""The ``train_priority`` setting: what each value does to the threads of a worker process.

Workers are real spawned processes, as the trainer makes them, because the scheduling class and
niceness are per thread and must not be changed in the test process itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any, cast

import pytest

from app.settings import Settings
from app.trainer import Trainer
from app.training_data import WORKER_NICENESS

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread scheduling is Linux's"
)


def thread_priorities() -> list[tuple[int, int]]:
    """(scheduling policy, niceness) of every thread of the calling process."""
    threads = [int(name) for name in os.listdir("/proc/self/task")]
    return [
        (os.sched_getscheduler(thread), os.getpriority(os.PRIO_PROCESS, thread))
        for thread in threads
    ]


@pytest.mark.parametrize("priority", ["idle", "low", "normal"])
def test_every_thread_of_a_trainer_worker_gets_the_priority_asked_for(priority: str) -> None:
    # The body-parsing pool, made by the trainer as it makes the fitting pools.
    trainer = Trainer(Settings(train_priority=priority), cast(Any, None), cast(Any, None))
    pool = trainer._parser()
    with pool:
        threads = pool.submit(thread_priorities).result(timeout=60)
    parent_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    # numpy's BLAS threads start when the worker imports app.training_data, before the
    # initializer runs; they are covered too.
    assert threads
    for policy, niceness in threads:
        if priority == "idle":
            assert policy == os.SCHED_IDLE
        elif priority == "low":
            assert policy == os.SCHED_OTHER
            assert niceness == max(parent_niceness, WORKER_NICENESS)
        else:
            assert policy == os.SCHED_OTHER
            assert niceness == parent_niceness


def test_the_setting_defaults_to_idle_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().train_priority == "idle"
    monkeypatch.setenv("INSIGHTHUB_TRAIN_PRIORITY", "low")
    assert Settings().train_priority == "low"
    monkeypatch.setenv("INSIGHTHUB_TRAIN_PRIORITY", "lowest")
    with pytest.raises(ValueError, match="train_priority"):
        Settings()
