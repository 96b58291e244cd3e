"""Training input as arrays, and the validation of POST /train bodies into it.

Kept apart from ``app.model`` (scikit-learn, numba, the detectors) so that the process that
validates large training bodies starts in a fraction of a second and stays small: it imports
only numpy, pandas and the schemas.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import ValidationError

from app.schemas.events import LEVEL_SCORES, Level
from app.schemas.training import TrainRequest

FloatArray = npt.NDArray[np.float64]
WORKER_NICENESS = 10


@dataclass(frozen=True, slots=True)
class TrainingData:
    """Training events as columns. ``service_codes`` index ``service_names``; raw rows (which
    carry no service) are one anonymous service whose baseline is not kept."""

    latency_ms: FloatArray
    level_scores: FloatArray
    service_codes: npt.NDArray[np.int64]
    service_names: list[str]
    source: str
    keep_baselines: bool = True
    messages: list[str] | None = None  # one per event when trained on log events

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])

    @classmethod
    def from_raw_rows(cls, rows: list[list[float]]) -> TrainingData:
        array = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        return cls(
            latency_ms=array[:, 0].copy(),
            level_scores=array[:, 1].copy(),
            service_codes=np.zeros(array.shape[0], dtype=np.int64),
            service_names=["(raw rows)"],
            source="raw_rows",
            keep_baselines=False,
        )

    @classmethod
    def from_columns(
        cls,
        services: list[str],
        levels: list[Level],
        latency_ms: FloatArray,
        source: str,
        messages: list[str] | None = None,
    ) -> TrainingData:
        # Sorted names and codes into them, as np.unique(return_inverse=True) gives, but by hashing:
        # np.unique sorts every one of the (up to millions of) strings.
        codes, names = pd.factorize(pd.Series(services, dtype=object), sort=True)
        return cls(
            latency_ms=np.asarray(latency_ms, dtype=np.float64),
            level_scores=np.fromiter((LEVEL_SCORES[lv] for lv in levels), np.float64, len(levels)),
            service_codes=codes.astype(np.int64),
            service_names=[str(name) for name in names],
            source=source,
            messages=messages,
        )


@dataclass(frozen=True, slots=True, weakref_slot=True)  # the trainer ties the file's life to it
class SpooledTrainingData:
    """``TrainingData`` that the parsing process wrote to a file, standing in for it on its way to
    the fitting process. Handing a million rows over as arrays costs the service pickling and
    unpickling ~24 MB with the GIL held twice (tens of milliseconds each: every /score waits); a
    path and a count cost nothing. The file is named ``.tmp-...`` in the artifacts folder, so a
    start-up after a crash removes it (``ModelStore``); the trainer removes it otherwise."""

    path: str
    rows: int

    def __len__(self) -> int:
        return self.rows

    def load(self) -> TrainingData:
        """The data, read back; the file is removed at once (no one needs it any more)."""
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        finally:
            discard(self.path)
        messages = (
            _strings(arrays["message_bytes"], arrays["message_ends"])
            if "message_ends" in arrays
            else None
        )
        return TrainingData(
            latency_ms=arrays["latency_ms"],
            level_scores=arrays["level_scores"],
            service_codes=arrays["service_codes"],
            service_names=_strings(arrays["name_bytes"], arrays["name_ends"]),
            source=str(arrays["source"]),
            keep_baselines=bool(arrays["keep_baselines"]),
            messages=messages,
        )


def spool(data: TrainingData, path: str) -> SpooledTrainingData:
    """Write ``data`` to ``path`` (npz, nothing pickled: loading it cannot run code)."""
    names = _packed_strings(data.service_names)
    arrays: dict[str, npt.NDArray[Any]] = {
        "latency_ms": data.latency_ms,
        "level_scores": data.level_scores,
        "service_codes": data.service_codes,
        "name_bytes": names[0],
        "name_ends": names[1],
        "source": np.array(data.source),
        "keep_baselines": np.array(data.keep_baselines),
    }
    if data.messages is not None:
        arrays["message_bytes"], arrays["message_ends"] = _packed_strings(data.messages)
    try:
        with open(path, "xb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
    except BaseException:
        discard(path)
        raise
    return SpooledTrainingData(path, len(data))


def discard(path: str | Path) -> None:
    """Remove a spooled file if it is still there."""
    Path(path).unlink(missing_ok=True)


def _packed_strings(strings: list[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Strings as their UTF-8 bytes end to end, and where each one ends: no object arrays."""
    encoded = [text.encode("utf-8") for text in strings]
    ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def _strings(packed: npt.NDArray[np.uint8], ends: npt.NDArray[np.int64]) -> list[str]:
    raw = packed.tobytes()
    starts = [0, *ends[:-1].tolist()]
    return [raw[a:b].decode("utf-8") for a, b in zip(starts, ends.tolist(), strict=True)]


@dataclass(frozen=True, slots=True)
class TrainingInput:
    """A validated POST /train body with its rows already as arrays, or spooled to a file."""

    data: TrainingData | SpooledTrainingData
    field: str  # "data" or "logs": which request field the rows came from
    parameters: dict[str, Any]  # the request's forest parameters (unset ones left out)
    activate: bool


def training_input(request: TrainRequest, spool_to: str | None = None) -> TrainingInput:
    """The request's rows as arrays, written to ``spool_to`` if given."""
    data: TrainingData | SpooledTrainingData
    if request.data is not None:
        data = TrainingData.from_raw_rows(request.data)
        source_field = "data"
    else:
        logs = request.logs or []
        data = TrainingData.from_columns(
            [e.service for e in logs],
            [e.level for e in logs],
            np.array([np.nan if e.latency_ms is None else e.latency_ms for e in logs]),
            source="logs",
            messages=[e.message for e in logs],
        )
        source_field = "logs"
    if spool_to is not None:
        try:
            data = spool(data, spool_to)
        except OSError:
            pass  # a full or read-only disk: the arrays then travel as they are, only slower
    return TrainingInput(
        data,
        source_field,
        request.parameters.model_dump(exclude_none=True),
        request.activate,
    )


def parse_training_body(
    raw: bytes, spool_to: str | None = None
) -> TrainingInput | list[dict[str, Any]]:
    """Validate a JSON POST /train body and turn its rows into arrays, or return pydantic's errors
    (without the input). Runs in a worker process for large bodies: pydantic-core holds the GIL
    while it validates (~0.5 s for a million rows), which on the event loop would stall scoring.
    With ``spool_to``, the arrays are written to that file and only its path crosses back."""
    try:
        request = TrainRequest.model_validate_json(raw)
    except ValidationError as exc:
        return [dict(error) for error in exc.errors(include_url=False, include_input=False)]
    return training_input(request, spool_to)


def lower_priority(priority: str = "idle", cpus: int = 0) -> None:
    """Initializer of the parsing and fitting processes (here, so the parser imports nothing
    heavier): every thread of the worker yields the CPU to the service's own threads, as
    ``priority`` (the ``train_priority`` setting) says, and with ``cpus`` (``train_cpus``) above
    zero runs only on the last ``cpus`` of the CPUs this process may use.

    ``idle``: on Linux each thread is put in SCHED_IDLE, so the kernel preempts it as soon as a
    normal thread (the event loop) wakes on its core, where a niced thread may first finish its
    slice. Both are per thread on Linux, which ``os.nice`` here missed: the BLAS threads numpy
    starts at import, before this initializer runs, kept normal priority. Elsewhere, or if the
    kernel refuses, the threads are niced instead. ``low`` nices them: a fit then always
    progresses, also on a machine that other work keeps fully busy, where SCHED_IDLE would leave
    it waiting until its timeout. ``normal`` leaves them alone."""
    threads = _own_threads()
    if cpus > 0:
        _confine(threads, cpus)
    if priority == "normal":
        return
    for thread in threads:
        if priority == "idle":
            try:
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
                continue
            except (AttributeError, OSError):
                pass
        _nice(thread)


def _confine(threads: list[int], cpus: int) -> None:
    """Affinity is per thread on Linux too, and threads started later inherit their creator's:
    each thread there is now is confined. Nothing happens where there are no more CPUs than
    ``cpus`` or the platform has no affinity."""
    if not hasattr(os, "sched_setaffinity"):
        return
    allowed = sorted(os.sched_getaffinity(0))
    if cpus >= len(allowed):
        return
    chosen = set(allowed[-cpus:])
    for thread in threads:
        try:
            os.sched_setaffinity(thread, chosen)
        except OSError:
            pass  # a thread that just ended


def _own_threads() -> list[int]:
    """Kernel ids of this process's threads (0, the caller, where /proc is not there)."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _nice(thread: int) -> None:
    if not hasattr(os, "setpriority"):  # not on Windows
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, max(current, WORKER_NICENESS))
    except OSError:
        pass  # a thread that just ended
