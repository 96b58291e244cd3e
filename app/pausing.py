"""Training processes stand still while the service answers a request.

SCHED_IDLE (``train_priority``) keeps a fit off the CPU the event loop wants, but not off the
other CPUs, and on a small virtual machine those are not independent: with two vCPUs, a process
that only spins on one of them, at idle priority, slowed pure-Python work pinned to the other by
35-60% (CPU time, not waiting: the two vCPUs share a physical core's execution units or the
host's power budget) and raised POST /score p99 under light load by 23-45%, about what a fit of
1,000,000 events costs (``python -m bench --only e``, the spinner row). No priority can undo
that; only not running at the same moment can. So while at least one request is being served,
the training processes are stopped (SIGSTOP), and they go on (SIGCONT) as soon as none is.

Under light load that costs a fit only the time the service is busy. A load that rarely leaves
the service idle (one client sending back to back, or many at once) would stop a fit for good,
so the pauses are budgeted: over time a fit stands still at most ``MAX_PAUSED_SHARE`` of the wall
clock, with bursts of up to ``PAUSE_BURST_SECONDS`` beyond that share (a leaky bucket: time
paused fills it at ``1 - share``, time running drains it at ``share``). A pause that would
overflow the bucket ends early (a forced resume), and none starts while less than
``MIN_PAUSE_SECONDS`` of it is left.

Only on platforms with SIGSTOP (not Windows), and only for processes this service started and
registered: their pids come from the trainer, which resumes them before it ends them.

Pausing has a price of its own: two signals per request, and on another machine of the same kind
(2 vCPUs, where a spinner on the other CPU slowed this one by 2% at most) POST /score's median
rose by ~30% with pausing against ~1% without (bench (e), alternated). So by default
(``train_pause_while_serving = "auto"``) the service measures at start-up what it would be
protecting against: ``neighbour_slowdown`` times a pure-Python loop on one CPU with and without
a SCHED_IDLE spinner on another (~0.15 s, in a child process), and pauses only when the spinner
slows the loop by ``PAUSE_FROM_SLOWDOWN`` or more. Until it knows, it pauses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager

# A fit keeps at least half of the wall clock whatever the load; a scoring request takes about a
# millisecond, so 50 ms of burst covers any ordinary cluster of them.
MAX_PAUSED_SHARE = 0.5
PAUSE_BURST_SECONDS = 0.05
MIN_PAUSE_SECONDS = 0.002  # below this a pause costs more in signals than it saves

SUPPORTED = hasattr(signal, "SIGSTOP")
# A neighbour that slows scoring by 10% or more costs more than pausing it does (bench (e)).
PAUSE_FROM_SLOWDOWN = 1.10
_PROBE_ROUNDS = 15
_PROBE_LOOP = 20_000  # ~1-2 ms of pure Python per timing


class TrainingPause:
    """Counts the requests being served; stops the watched processes while there are any.

    Called from the event loop only (the guard middleware, the trainer), so it needs no lock.
    """

    def __init__(
        self,
        enabled: bool = True,
        paused_share: float = MAX_PAUSED_SHARE,
        burst: float = PAUSE_BURST_SECONDS,
    ) -> None:
        self.enabled = enabled and SUPPORTED
        self.paused_share = paused_share
        self.burst = burst
        self.serving = 0
        self._pids: set[int] = set()
        self._held: set[int] = set()  # the watched processes stopped now
        self._stopped_at = 0.0  # monotonic; 0.0 when no pause is under way
        self._bucket = 0.0  # seconds, as of _bucket_at
        self._bucket_at = time.monotonic()
        self._forced_resume: asyncio.TimerHandle | None = None
        # Reported by /metrics: how much the fits were held back.
        self.pauses = 0
        self.forced_resumes = 0
        self.paused_seconds = 0.0

        # ``neighbour_slowdown``'s measure once ``decide`` has it (None: not measured).
        self.neighbour_slowdown: float | None = None

    @property
    def stopped(self) -> bool:
        return bool(self._held)

    def decide(self, slowdown: float | None) -> None:
        """Pause from now on only if a neighbour slows this CPU by ``PAUSE_FROM_SLOWDOWN`` or
        more (``slowdown`` as ``neighbour_slowdown`` measures it; None, not measurable: no)."""
        self.neighbour_slowdown = slowdown
        self.enabled = SUPPORTED and slowdown is not None and slowdown >= PAUSE_FROM_SLOWDOWN
        if not self.enabled:
            self.release()  # a pause under way ends now, and nothing is watched any more

    def watch(self, pid: int) -> None:
        """Pause ``pid`` (a training process of this service) from the next pause on."""
        if self.enabled:
            self._pids.add(pid)

    def forget(self, pid: int) -> None:
        """Stop pausing ``pid``, resuming it if it stands still now."""
        self._pids.discard(pid)
        if pid in self._held:
            self._held.discard(pid)
            _signal(pid, signal.SIGCONT)
            if not self._held:
                self._resume()

    def request_started(self) -> None:
        self.serving += 1
        if self.serving == 1 and self._pids and not self._held:
            self._stop()

    def request_finished(self) -> None:
        self.serving -= 1
        if self.serving == 0 and self._held:
            self._resume()

    @contextmanager
    def watching(self, pids: Iterable[int]) -> Iterator[None]:
        """``watch`` these pids for the block, then ``forget`` them."""
        watched = list(pids)
        for pid in watched:
            self.watch(pid)
        try:
            yield
        finally:
            for pid in watched:
                self.forget(pid)

    @contextmanager
    def set_aside(self) -> Iterator[None]:
        """For a request that only waits on a training process: not counted meanwhile."""
        self.request_finished()
        try:
            yield
        finally:
            self.request_started()

    def release(self) -> None:
        """Resume every watched process and watch none (at shutdown, before they are ended)."""
        self._resume()
        self._pids.clear()

    def _stop(self) -> None:
        now = time.monotonic()
        # Running since the last pause drained the bucket.
        self._bucket = max(0.0, self._bucket - (now - self._bucket_at) * self.paused_share)
        self._bucket_at = now
        longest = (self.burst - self._bucket) / (1.0 - self.paused_share)
        if longest < MIN_PAUSE_SECONDS:
            return
        for pid in list(self._pids):
            if _signal(pid, signal.SIGSTOP):
                self._held.add(pid)
            else:
                self._pids.discard(pid)  # gone: nothing to stop or resume
        if not self._held:
            return
        self._stopped_at = now
        self.pauses += 1
        self._forced_resume = asyncio.get_running_loop().call_later(longest, self._resume_forced)

    def _resume_forced(self) -> None:
        self._forced_resume = None
        self.forced_resumes += 1
        self._resume()

    def _resume(self) -> None:
        """Resume whatever is held (nothing, after ``forget`` took the last) and end the pause."""
        if self._forced_resume is not None:
            self._forced_resume.cancel()
            self._forced_resume = None
        for pid in self._held:
            _signal(pid, signal.SIGCONT)
        self._held.clear()
        if self._stopped_at:
            now = time.monotonic()
            paused = now - self._stopped_at
            self.paused_seconds += paused
            self._bucket += paused * (1.0 - self.paused_share)
            self._bucket_at = now
            self._stopped_at = 0.0


def neighbour_slowdown(cpus: Collection[int] | None = None, timeout: float = 10.0) -> float | None:
    """How much slower pure-Python work runs on one CPU while a SCHED_IDLE process spins on
    another (median over alternating rounds; 1.0: not at all). Measured in a child process (this
    one's affinity and scheduling stay as they are), on the first and last of ``cpus`` (default:
    the CPUs this process may use). None when there are fewer than two, on platforms without
    CPU affinity or SIGSTOP, or when the probe fails. Blocks for ~0.15 s: call it in a thread."""
    if not SUPPORTED or not hasattr(os, "sched_getaffinity") or not hasattr(os, "SCHED_IDLE"):
        return None
    chosen = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if len(chosen) < 2:
        return None
    command = [
        sys.executable,
        "-c",
        f"from app.pausing import _probe; _probe({chosen[0]}, {chosen[-1]})",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
        return float(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _probe(here: int, there: int) -> None:
    """``neighbour_slowdown``'s child: prints the ratio. The spinner is a fork of this process,
    stopped for the rounds alone and continued for the rounds beside it."""
    os.sched_setaffinity(0, {here})
    spinner = os.fork()
    if spinner == 0:  # pragma: no cover - the child spins until killed
        os.sched_setaffinity(0, {there})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        while True:
            pass
    try:
        alone: list[float] = []
        beside: list[float] = []
        for _ in range(_PROBE_ROUNDS):
            for signum, times in ((signal.SIGSTOP, alone), (signal.SIGCONT, beside)):
                os.kill(spinner, signum)
                time.sleep(0.002)  # the signal delivered, the spinner stopped or running
                started = time.perf_counter()
                total = 0
                for i in range(_PROBE_LOOP):
                    total += i * i
                times.append(time.perf_counter() - started)
        sys.stdout.write(f"{statistics.median(beside) / statistics.median(alone)}\n")
    finally:
        os.kill(spinner, signal.SIGKILL)
        os.waitpid(spinner, 0)


def _signal(pid: int, signum: int) -> bool:
    """False when the process is gone, or is no longer ours to signal (its pid taken by another
    user's process): either way it is dropped, and the request goes on."""
    try:
        os.kill(pid, signum)
    except OSError:
        return False
    return True
