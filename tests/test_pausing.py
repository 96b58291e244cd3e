"""``train_pause_while_serving``: training processes stand still while a request is served.

The processes are real (a child process here, the trainer's spawned workers in the service
tests), and whether one stands still is read from the kernel (/proc/<pid>/stat), not from the
pause's own bookkeeping. Only the state-machine property test records the signals instead of
sending them, to run thousands of sequences.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.pausing import PAUSE_FROM_SLOWDOWN, TrainingPause, neighbour_slowdown
from app.settings import Settings
from tests import fakes
from tests.conftest import RunningApp, make_settings, start_app
from tests.helpers import event, raw_rows, wait_for_job

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process states from Linux's /proc"
)


def process_state(pid: int) -> str:
    """The kernel's one-letter state: T when stopped by a signal."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


async def wait_state(pid: int, stopped: bool, within: float = 10.0) -> None:
    """Signals are delivered asynchronously: wait until the kernel shows the state wanted."""
    deadline = time.monotonic() + within
    while (process_state(pid) == "T") != stopped:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"process {pid} is {process_state(pid)!r}, wanted {'T' if stopped else 'not T'}"
            )
        await asyncio.sleep(0.002)


@pytest.fixture
def child() -> Iterator[int]:
    """A process that keeps waking up, as a fit keeps computing."""
    process = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.001)"])
    try:
        yield process.pid
    finally:
        process.kill()  # SIGKILL ends a stopped process too
        process.wait(timeout=10)


async def test_a_watched_process_stands_still_while_any_request_is_served(child: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(child)
    await wait_state(child, stopped=False)
    pause.request_started()
    await wait_state(child, stopped=True)
    pause.request_started()  # a second request, overlapping
    pause.request_finished()
    await asyncio.sleep(0.05)
    assert process_state(child) == "T", "resumed while a request was still being served"
    pause.request_finished()
    await wait_state(child, stopped=False)
    assert pause.pauses == 1
    assert pause.paused_seconds > 0.04
    assert pause.forced_resumes == 0


async def test_a_long_pause_ends_when_the_fit_s_share_runs_out(child: int) -> None:
    pause = TrainingPause(paused_share=0.5, burst=0.05)  # 0.1 s at most from an empty bucket
    pause.watch(child)
    started = time.monotonic()
    pause.request_started()
    await wait_state(child, stopped=True)
    # The request goes on, but the process gets the CPU back after ~0.1 s.
    await wait_state(child, stopped=False, within=5)
    assert time.monotonic() - started >= 0.09
    assert pause.forced_resumes == 1
    assert pause.serving == 1
    pause.request_finished()


async def test_back_to_back_requests_leave_a_fit_at_least_its_share(child: int) -> None:
    """One client sending with no gap would otherwise stop a fit for good."""
    pause = TrainingPause(paused_share=0.5, burst=0.05)
    pause.watch(child)
    started = time.monotonic()
    requests = 0
    while time.monotonic() - started < 1.0:
        pause.request_started()
        await asyncio.sleep(0.001)  # a request being served
        pause.request_finished()
        requests += 1
    elapsed = time.monotonic() - started
    assert pause.pauses > 10
    # Once the share is used up, requests are served with the fit running: whether by refusing
    # a pause or by ending one early depends on the timing, so neither is asserted alone.
    assert pause.pauses < requests
    # Half the wall clock, plus at most one burst's worth.
    assert pause.paused_seconds <= 0.5 * elapsed + 0.1
    await wait_state(child, stopped=False)


async def test_forgetting_a_stopped_process_resumes_it(child: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(child)
    pause.request_started()
    await wait_state(child, stopped=True)
    pause.forget(child)
    await wait_state(child, stopped=False)
    assert not pause.stopped
    pause.request_finished()
    pause.request_started()
    await asyncio.sleep(0.05)
    assert process_state(child) != "T"
    pause.request_finished()


async def test_release_resumes_and_watches_nothing_more(child: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(child)
    pause.request_started()
    await wait_state(child, stopped=True)
    pause.release()
    await wait_state(child, stopped=False)
    pause.request_finished()
    pause.request_started()
    await asyncio.sleep(0.05)
    assert process_state(child) != "T"
    pause.request_finished()


def test_a_process_that_is_gone_is_dropped_without_an_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    asyncio.run(_stop_a_gone_process(process.pid))


async def _stop_a_gone_process(pid: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(pid)
    pause.request_started()
    assert not pause.stopped
    pause.request_finished()
    assert pause.pauses == 0


async def test_disabled_it_never_signals(child: int) -> None:
    pause = TrainingPause(enabled=False)
    pause.watch(child)
    pause.request_started()
    await asyncio.sleep(0.05)
    assert process_state(child) != "T"
    pause.request_finished()
    assert pause.pauses == 0


async def test_a_request_set_aside_does_not_hold_the_process_back(child: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(child)
    pause.request_started()
    await wait_state(child, stopped=True)
    with pause.set_aside():  # the only request waits on the process: it must run
        await wait_state(child, stopped=False)
        pause.request_started()  # another request meanwhile stops it again
        await wait_state(child, stopped=True)
        pause.request_finished()
        await wait_state(child, stopped=False)
    assert pause.serving == 1
    pause.request_finished()
    assert pause.serving == 0


# (operation, pid) steps; pids 1 and 2 never exist as real processes here: the signals are
# recorded instead of sent, to check the order the pause sends them in.
steps = st.lists(
    st.tuples(
        st.sampled_from(["start", "finish", "watch", "forget", "aside", "release"]),
        st.sampled_from([1, 2]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_every_stop_is_followed_by_a_resume_and_nothing_is_left_stopped(
    steps: list[tuple[str, int]],
) -> None:
    sent: dict[int, list[int]] = {}

    def record(pid: int, signum: int) -> None:
        sent.setdefault(pid, []).append(signum)

    async def run() -> TrainingPause:
        pause = TrainingPause(burst=60)
        serving = 0
        for operation, pid in steps:
            if operation == "start":
                pause.request_started()
                serving += 1
            elif operation == "finish" and serving > 0:
                pause.request_finished()
                serving -= 1
            elif operation == "watch":
                pause.watch(pid)
            elif operation == "forget":
                pause.forget(pid)
            elif operation == "aside" and serving > 0:
                with pause.set_aside():
                    pass
            elif operation == "release":
                pause.release()
            # A process is stopped only while something is being served, and only if watched.
            if pause.stopped:
                assert pause.serving > 0
            assert all(sent[pid][-1] == signal.SIGCONT for pid in sent if pid not in pause._pids)
        for _ in range(serving):
            pause.request_finished()
        return pause

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.pausing.os.kill", record)
        pause = asyncio.run(run())
    assert not pause.stopped
    for signals in sent.values():
        # STOP, CONT, STOP, CONT...: never stopped twice, never resumed without a stop, and
        # the last word is a resume.
        assert signals[::2] == [signal.SIGSTOP] * len(signals[::2])
        assert signals[1::2] == [signal.SIGCONT] * len(signals[1::2])
        assert len(signals) % 2 == 0


# --- In the service: the guard counts requests, the trainer registers its processes ---------


@pytest.fixture
async def gated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningApp, Path]]:
    """A service whose fits wait for a gate file before fitting for real."""
    gate = tmp_path / "gate"
    monkeypatch.setenv(fakes.GATE_ENVIRONMENT, str(gate))
    monkeypatch.setattr("app.trainer.fit_model", fakes.gated_fit)
    async for running in start_app(make_settings(tmp_path)):
        yield running, gate


async def _fit_process(running: RunningApp) -> tuple[str, int]:
    """Starts a training job; its id and the pid of the process fitting it, once the trainer
    has registered that process with the pause (when the pause is on)."""
    accepted = await running.client.post("/train", json={"data": raw_rows(300)})
    assert accepted.status_code == 202, accepted.text
    trainer = running.app.state.insighthub.trainer
    deadline = time.monotonic() + 60
    while True:
        pool = trainer._fit_pools[0]
        if pool is not None and pool._processes:
            pid = int(next(iter(pool._processes)))
            if pid in trainer.pause._pids or not trainer.pause.enabled:
                return str(accepted.json()["job_id"]), pid
        assert time.monotonic() < deadline, "the fit did not start"
        await asyncio.sleep(0.01)


async def test_the_fit_stands_still_while_a_request_is_being_received(
    gated: tuple[RunningApp, Path],
) -> None:
    running, gate = gated
    job_id, pid = await _fit_process(running)
    await wait_state(pid, stopped=False)
    more = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"service": "api", "level": "INFO", '
        await more.wait()
        yield b'"latency_ms": 12.0}'

    request = asyncio.create_task(
        running.client.post(
            "/score", content=slow_body(), headers={"content-type": "application/json"}
        )
    )
    await wait_state(pid, stopped=True)
    more.set()
    response = await request
    assert response.status_code == 200, response.text
    await wait_state(pid, stopped=False)
    gate.touch()
    job = await wait_for_job(running.client, job_id)
    assert job["status"] == "succeeded", job


async def test_a_fit_succeeds_through_many_requests_and_is_left_running(
    gated: tuple[RunningApp, Path],
) -> None:
    running, gate = gated
    job_id, pid = await _fit_process(running)
    trainer = running.app.state.insighthub.trainer
    for _ in range(20):
        assert (await running.client.post("/score", json=event())).status_code == 200
    gate.touch()
    # Scored back to back, with no gap but the test's own, for as long as the fit runs.
    deadline = time.monotonic() + 60
    while trainer.get(job_id).status not in ("succeeded", "failed"):
        assert (await running.client.post("/score", json=event())).status_code == 200
        if time.monotonic() > deadline:
            raise AssertionError(f"the fit did not finish: {vars(trainer.pause)}")
    job = await wait_for_job(running.client, job_id)
    assert job["status"] == "succeeded", job
    pause = trainer.pause
    assert pause.pauses >= 20
    assert not pause.stopped
    assert process_state(pid) != "T"
    metrics = (await running.client.get("/metrics")).text
    assert f"insighthub_training_pauses_total {float(pause.pauses)}" in metrics
    assert "insighthub_training_paused_seconds_total" in metrics
    assert "insighthub_training_forced_resumes_total" in metrics


async def test_shutting_down_ends_a_fit_that_a_request_holds_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fakes.GATE_ENVIRONMENT, str(tmp_path / "never"))
    monkeypatch.setattr("app.trainer.fit_model", fakes.gated_fit)
    async for running in start_app(make_settings(tmp_path)):
        _, pid = await _fit_process(running)
        pause = running.app.state.insighthub.trainer.pause
        pause.burst = 60
        pause.request_started()  # as a request still being served at shutdown
        await wait_state(pid, stopped=True)
        started = time.monotonic()
    # The lifespan has ended: the worker was resumed and ended, not left stopped for ever.
    assert time.monotonic() - started < 30
    with pytest.raises(FileNotFoundError):
        process_state(pid)


async def test_a_large_body_s_parser_is_not_held_back_by_its_own_request(
    gated: tuple[RunningApp, Path],
) -> None:
    running, gate = gated
    body = {"data": raw_rows(30_000), "activate": False}  # > 256 KiB: the parsing process
    accepted = await running.client.post("/train", json=body)
    assert accepted.status_code == 202, accepted.text
    # No other request was served meanwhile, so nothing was paused: the POST /train itself,
    # only waiting for the parser, did not count.
    assert running.app.state.insighthub.trainer.pause.pauses == 0
    gate.touch()
    job = await wait_for_job(running.client, accepted.json()["job_id"])
    assert job["status"] == "succeeded", job


async def test_off_the_service_never_stops_its_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fakes.GATE_ENVIRONMENT, str(tmp_path / "gate"))
    monkeypatch.setattr("app.trainer.fit_model", fakes.gated_fit)
    async for running in start_app(make_settings(tmp_path, train_pause_while_serving=False)):
        job_id, pid = await _fit_process(running)
        for _ in range(10):
            assert (await running.client.post("/score", json=event())).status_code == 200
            assert process_state(pid) != "T"
        assert running.app.state.insighthub.trainer.pause.pauses == 0
        (tmp_path / "gate").touch()
        job = await wait_for_job(running.client, job_id)
        assert job["status"] == "succeeded"


def test_the_setting_defaults_to_auto_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().train_pause_while_serving == "auto"
    monkeypatch.setenv("INSIGHTHUB_TRAIN_PAUSE_WHILE_SERVING", "false")
    assert Settings().train_pause_while_serving is False


async def test_a_process_no_longer_ours_to_signal_is_dropped_without_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pid reused by another user's process: the kernel refuses the signal."""

    def refuse(pid: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("app.pausing.os.kill", refuse)
    pause = TrainingPause(burst=60)
    pause.watch(4242)
    pause.request_started()
    assert not pause.stopped
    pause.request_finished()
    assert pause.pauses == 0
    assert not pause._pids


def test_neighbour_slowdown_is_measured_in_a_child() -> None:
    """A ratio near 1 or above (a spinner never makes the loop faster by much), within the
    probe's time; fewer than two CPUs: nothing to measure."""
    started = time.monotonic()
    slowdown = neighbour_slowdown()
    assert slowdown is not None
    assert 0.5 < slowdown < 20.0
    assert time.monotonic() - started < 10.0  # the probe's own timeout
    assert neighbour_slowdown(cpus=[0]) is None


async def test_deciding_not_to_pause_resumes_a_held_process_and_watches_none(child: int) -> None:
    pause = TrainingPause(burst=60)
    pause.watch(child)
    pause.request_started()
    await wait_state(child, stopped=True)
    pause.decide(1.02)  # a neighbour costs 2%: not worth the signals
    await wait_state(child, stopped=False)
    assert not pause.enabled
    assert pause.neighbour_slowdown == 1.02
    pause.watch(child)
    pause.request_finished()
    pause.request_started()
    await asyncio.sleep(0.05)
    assert process_state(child) != "T"
    pause.request_finished()
    pause.decide(1.4)
    assert pause.enabled
    pause.watch(child)
    pause.request_started()
    await wait_state(child, stopped=True)
    pause.request_finished()
    await wait_state(child, stopped=False)
    pause.decide(None)  # not measurable: no pausing
    assert not pause.enabled


async def test_auto_measures_at_start_up_and_reports_the_decision(tmp_path: Path) -> None:
    async for app in start_app(make_settings(tmp_path, train_pause_while_serving="auto")):
        pause = app.app.state.insighthub.trainer.pause
        deadline = time.monotonic() + 30
        while pause.neighbour_slowdown is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another task's result
            await asyncio.sleep(0.05)
        assert pause.neighbour_slowdown is not None
        assert pause.enabled == (pause.neighbour_slowdown >= PAUSE_FROM_SLOWDOWN)
        text = (await app.client.get("/metrics")).text
        assert f"insighthub_training_pause_enabled {float(pause.enabled)}" in text
        assert "insighthub_neighbour_slowdown " in text


def test_the_setting_reads_true_false_and_auto_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for given_value, expected in (("auto", "auto"), ("true", True), ("false", False)):
        monkeypatch.setenv("INSIGHTHUB_TRAIN_PAUSE_WHILE_SERVING", given_value)
        assert Settings().train_pause_while_serving == expected
    monkeypatch.setenv("INSIGHTHUB_TRAIN_PAUSE_WHILE_SERVING", "sometimes")
    with pytest.raises(ValueError, match="train_pause_while_serving"):
        Settings()
