"""Background training: fit in another process, store a version, swap it in.

Fitting is CPU-bound and would hold the GIL in a thread, so it runs in worker processes (started
with "spawn": forking a process that already runs an event loop and threads is unsafe). The event
loop only awaits the result; saving (file I/O and fsync) runs in a thread. A job that fails leaves
the active model exactly as it was: a version is stored only when whole and loadable, and the
engine sees a new model only after that. A fit that outlives its timeout without answering is
stuck where the worker's own timeout cannot reach it, and its process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import uuid
import weakref
from collections import Counter, OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.engine import ScoringEngine
from app.model import Model, fit_model
from app.model_store import ModelStore, PackedFit, fit_and_pack
from app.pausing import TrainingPause
from app.schemas.training import JobStatus, TrainingJob
from app.settings import Settings
from app.training_data import (
    SpooledTrainingData,
    TrainingData,
    TrainingInput,
    discard,
    lower_priority,
    parse_training_body,
)

log = logging.getLogger(__name__)

MAX_REMEMBERED_JOBS = 1000
WORKER_EXIT_SECONDS = 5.0


class TrainingStuck(Exception):
    """A fit gave no answer by ``train_timeout_seconds`` plus the watchdog's grace."""


@dataclass(slots=True)
class _Job:
    job_id: str
    rows: int
    status: JobStatus = JobStatus.queued
    model_version: str | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def view(self) -> TrainingJob:
        return TrainingJob(
            job_id=self.job_id,
            status=self.status,
            model_version=self.model_version,
            error=self.error,
            rows=self.rows,
            created_at=self.created_at,
            finished_at=self.finished_at,
        )


class Trainer:
    # The worker's own timeout (SIGALRM, app.model.fit_model_within) lands between bytecodes, so
    # one long compiled call (numba, a C loop) outlives it. The parent waits this much longer
    # (room for a fresh worker's start-up and for the result to travel back), then kills the
    # worker. A class attribute: tests shorten it.
    watchdog_grace_seconds: float = 30.0

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        engine: ScoringEngine,
        pause: TrainingPause | None = None,
    ) -> None:
        self.settings = settings
        self.pause = pause or TrainingPause(enabled=False)
        self.store = store
        self.engine = engine
        # One single-process pool per concurrent fit (train_workers of them): a stuck fit's
        # process can be killed, and its pool replaced, without failing the fits beside it, and
        # the watchdog's clock starts when a fit gets a process, not while it waits for one.
        self._fit_pools: list[ProcessPoolExecutor | None] = [None] * settings.train_workers
        self._free_slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(settings.train_workers):
            self._free_slots.put_nowait(slot)
        # Large training bodies are validated here, not in the fitting pool: a body must get its
        # 202 or 422 at once, not after the fits queued before it.
        self._parse_pool: ProcessPoolExecutor | None = None
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        # Saves and activations change artifacts/ and the engine: one at a time.
        self._publish_lock = asyncio.Lock()
        self._closing = False
        self.job_outcomes: Counter[str] = Counter()  # exported by /metrics

    def _parser(self) -> ProcessPoolExecutor:
        if self._parse_pool is None:
            self._parse_pool = _worker_pool(
                1, self.settings.train_priority, self.settings.train_cpus
            )
        return self._parse_pool

    async def parse(self, raw: bytes) -> TrainingInput | list[dict[str, Any]]:
        """``parse_training_body`` in the parsing process, so the event loop keeps scoring while
        pydantic validates a large body. The rows come back spooled to a ``.tmp-train-`` file in
        the artifacts folder, which lives as long as the ``SpooledTrainingData`` handle here (and
        is removed by the fitting process once read). If that process dies (killed, out of
        memory), the body is validated here instead: slower for the loop, but no request is lost
        to it."""
        path = str(self.store.root / f".tmp-train-{uuid.uuid4().hex}.npz")
        parser = self._parser()
        parsing: Future[TrainingInput | list[dict[str, Any]]] = parser.submit(
            parse_training_body, raw, path
        )
        try:
            # This request only waits for the parser meanwhile: counted as served, it would
            # hold the parser itself back. (The parser is forgotten before the request counts
            # again: the pause that would start then would stop it for nothing.)
            with self.pause.set_aside(), self.pause.watching(_pids(parser)):
                parsed = await asyncio.wrap_future(parsing)
        except BrokenProcessPool:
            discard(path)  # whatever the dead parser had written
            if self._closing:
                raise
            log.warning("training body parser died; validating on the event loop instead")
            self._parse_pool = None
            return parse_training_body(raw)
        except BaseException:
            # Cancelled (the client went away): the parser goes on and may still write the file.
            parsing.add_done_callback(lambda _: discard(path))
            raise
        if isinstance(parsed, TrainingInput) and isinstance(parsed.data, SpooledTrainingData):
            # Whatever becomes of the request (rejected, failed, done), the file goes with it.
            weakref.finalize(parsed.data, discard, parsed.data.path)
        return parsed

    def submit(
        self, data: TrainingData | SpooledTrainingData, parameters: dict[str, Any], activate: bool
    ) -> TrainingJob:
        job = _Job(job_id=uuid.uuid4().hex, rows=len(data))
        self._jobs[job.job_id] = job
        while len(self._jobs) > MAX_REMEMBERED_JOBS:
            self._jobs.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._run(job, data, parameters, activate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job.view()

    def get(self, job_id: str) -> TrainingJob | None:
        job = self._jobs.get(job_id)
        return job.view() if job else None

    async def _run(
        self,
        job: _Job,
        data: TrainingData | SpooledTrainingData,
        parameters: dict[str, Any],
        activate: bool,
    ) -> None:
        try:
            slot = await self._free_slots.get()
            try:
                job.status = JobStatus.running
                result = await self._fit(slot, data, parameters)
            finally:
                self._free_slots.put_nowait(slot)
            async with self._publish_lock:
                model = await asyncio.to_thread(self.store.save, result)
                if activate:
                    await self.activate(model, locked=True)
            job.model_version = model.version
            job.status = JobStatus.succeeded
        except asyncio.CancelledError:
            job.status = JobStatus.failed
            job.error = "cancelled: the service shut down"
            raise
        except BrokenProcessPool:
            job.status = JobStatus.failed
            if self._closing:
                job.error = "cancelled: the service shut down"
            else:
                log.exception("training worker died; the next fit starts a new one")
                job.error = "the training process died (out of memory?)"
        except Exception as exc:
            log.exception("training job %s failed", job.job_id)
            job.status = JobStatus.failed
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            if isinstance(data, SpooledTrainingData):
                discard(data.path)  # normally gone already (the fit read it), not if it died
            job.finished_at = datetime.now(UTC)
            self.job_outcomes[job.status.value] += 1

    async def _fit(
        self, slot: int, data: TrainingData | SpooledTrainingData, parameters: dict[str, Any]
    ) -> PackedFit:
        """Fit in slot ``slot``'s process, which also writes and hashes the model file; kill it
        if it does not answer in time."""
        pool = self._fit_pools[slot]
        if pool is None:
            pool = self._fit_pools[slot] = _worker_pool(
                1, self.settings.train_priority, self.settings.train_cpus
            )
        timeout = self.settings.train_timeout_seconds
        fitting = asyncio.get_running_loop().run_in_executor(
            pool,
            fit_and_pack,
            timeout,
            fit_model,  # looked up here, so tests can swap in a failing stand-in
            data,
            parameters,
            self.settings.baseline_warmup_events,
        )
        limit = timeout + self.watchdog_grace_seconds
        try:
            with self.pause.watching(_pids(pool)):
                return await asyncio.wait_for(fitting, limit)
        except TimeoutError:
            if not fitting.cancelled():
                raise  # the fit's own error, not the watchdog's
            self._fit_pools[slot] = None
            log.error("training worker gave no answer within %g s; killing it", limit)
            await _stop_pool(pool)
            raise TrainingStuck(
                f"training stopped after the {timeout:g} s limit (train_timeout_seconds): the "
                f"training process gave no answer within {limit:g} s and was killed"
            ) from None
        except BrokenProcessPool:
            if self._fit_pools[slot] is pool:
                self._fit_pools[slot] = None
            raise

    async def activate(self, model: Model, *, locked: bool = False) -> None:
        """Make ``model`` (as the store saved or loaded it: not read back) the active version
        on disk, then in the engine."""
        if not locked:
            async with self._publish_lock:
                await self.activate(model, locked=True)
            return
        await asyncio.to_thread(self.store.activate, model.version, model)
        self.engine.swap(model)

    async def close(self) -> None:
        """Cancel every job: stop the fits' processes, then the tasks; nothing is half-written
        (workers write nothing; saves are atomic)."""
        self._closing = True
        self.pause.release()
        pools = [*self._fit_pools, self._parse_pool]
        self._fit_pools = [None] * len(self._fit_pools)
        self._parse_pool = None
        for pool in pools:
            if pool is not None:
                await _stop_pool(pool)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _pids(pool: ProcessPoolExecutor) -> list[int]:
    """The pids of a pool's processes, started by the submit just made. ``_processes`` is
    private, but has been there since concurrent.futures was added (3.2) and typeshed types it;
    the pool offers no public way to them."""
    processes = pool._processes or {}
    return [pid for pid in processes if isinstance(pid, int)]


def _worker_pool(workers: int, priority: str, cpus: int = 0) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=lower_priority,
        initargs=(priority, cpus),
    )


async def _stop_pool(pool: ProcessPoolExecutor) -> None:
    workers = list((getattr(pool, "_processes", None) or {}).values())
    if not workers:
        pool.shutdown(wait=False, cancel_futures=True)
        return
    # A fit cannot be interrupted inside scikit-learn, and the interpreter's exit would wait for
    # it: its process is stopped instead. The pool's manager thread then fails every queued and
    # running call with BrokenProcessPool. This comes before cancelling the tasks: a cancelled
    # queued future makes Python 3.11's manager thread raise InvalidStateError when it marks the
    # pool broken.
    for worker in workers:
        worker.terminate()
        if worker.pid is not None and hasattr(signal, "SIGCONT"):
            # One that a request's pause (app/pausing.py) holds would not see its SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGCONT)
    await asyncio.to_thread(_join_all, workers, WORKER_EXIT_SECONDS)
    _close_result_writer(pool)
    # Waiting for the manager thread also closes the pool's queues (no semaphores left for the
    # resource tracker).
    await asyncio.to_thread(pool.shutdown, wait=True)


def _close_result_writer(pool: ProcessPoolExecutor) -> None:
    """A worker stopped while sending its result leaves half a message in the result pipe; the
    pool's manager thread then blocks for ever reading the rest, and shutdown (and interpreter
    exit) waits for that thread. Once every worker is gone, the parent's copy is the last write end
    of that pipe: closing it turns the blocked read into end-of-file, which the manager thread
    handles as a broken pool and exits. (The pipe belongs to the executor's internals, hence the
    guarded attribute access.)"""
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()


def _join_all(workers: list[Any], timeout: float) -> None:
    for worker in workers:
        worker.join(timeout)
        if worker.is_alive():
            worker.kill()
