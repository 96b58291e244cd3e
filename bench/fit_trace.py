"""Where the slow POST /score requests of section (e) fall, request by request.

wrk reports percentiles only. Here one keep-alive connection (a subprocess, so the status polls
do not share its GIL) sends POST /score every ``LIGHT_DELAY_MS`` and records each request's send
time and latency while a 1M-row fit runs, polling the job's status as (e) does. The requests
slower than a multiple of the idle p99 are then placed against the job's phases, read from the
service itself: parsing (the POST /train until its 202), the fit in the worker process (until
the version's manifest was stamped, ``created_at``), the publish (save, activate and swap, until
the job finished), and whether a status poll was under way. The idle parts around each fit
poll a finished job at the same rate, so idle and fit differ only by the fit.

    python -m bench.fit_trace [--rounds 3] [--factor 1.5]

Only 127.0.0.1 is used; every loop is bounded in time; the service is stopped by its own pid.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.http import FIT_ROWS, HOST, LIGHT_DELAY_MS, POLL_SECONDS, _single_bodies, serve

CLIENT_SECONDS = 180.0  # the client stops by itself at the latest after this


def run_client(port: int, bodies_path: Path, out: Path, stop: Path) -> None:
    """POST /score every ``LIGHT_DELAY_MS`` until ``stop`` exists; writes [send time, seconds]."""
    bodies = [body.encode() for body in json.loads(bodies_path.read_text())]
    requests = [
        b"POST /score HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), len(body), body)
        for body in bodies
    ]
    records: list[tuple[float, float]] = []
    deadline = time.monotonic() + CLIENT_SECONDS
    with socket.create_connection((HOST, port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not stop.exists() and time.monotonic() < deadline:
            sent, start = time.time(), time.perf_counter()
            connection.sendall(requests[len(records) % len(requests)])
            _read_response(connection)
            records.append((sent, time.perf_counter() - start))
            time.sleep(LIGHT_DELAY_MS / 1000)
    out.write_text(json.dumps(records))


def _read_response(connection: socket.socket) -> None:
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def trace(rounds: int, factor: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fit-trace-"))
    bodies_path = folder / "bodies.json"
    bodies_path.write_text(json.dumps([body.decode() for body in _single_bodies()]))
    rng = np.random.default_rng(5)
    latency = rng.lognormal(4.0, 0.6, FIT_ROWS).round(2)
    levels = rng.choice([0.0, 1.0, 2.0], FIT_ROWS, p=[0.96, 0.03, 0.01])
    body = orjson.dumps({"data": np.column_stack([latency, levels]).tolist(), "activate": True})
    env = {"INSIGHTHUB_ARTIFACTS_DIR": str(folder / "artifacts")}
    with serve("app.main:app", env, folder / "service.log") as service:
        client = httpx.Client(base_url=service.url, timeout=120)
        port = int(service.url.rsplit(":", 1)[1])
        small = [[float(v), 0.0] for v in rng.lognormal(4, 0.5, 2000)]
        warm = _poll(client, client.post("/train", json={"data": small, "activate": False}).json())
        for round_ in range(rounds):
            stop, out = folder / f"stop-{round_}", folder / f"requests-{round_}.json"
            command = [sys.executable, "-m", "bench.fit_trace", "--client", str(port)]
            command += [str(bodies_path), str(out), str(stop)]
            loader = subprocess.Popen(command)
            try:
                _poll_idle(client, warm["job_id"], 3.0)  # idle part, polled as the fit is
                posted = time.time()
                accepted = client.post(
                    "/train", content=body, headers={"content-type": "application/json"}
                ).json()
                answered = time.time()
                polls: list[tuple[float, float]] = []
                job = _poll(client, accepted, polls)
                manifest = client.get("/models").json()
                _poll_idle(client, warm["job_id"], 3.0)
            finally:
                stop.touch()
                loader.wait(60)
            stored = next(v for v in manifest["versions"] if v["version"] == job["model_version"])
            phases = {
                "parse": (posted, answered),
                "fit": (_stamp(job["created_at"]), _stamp(stored["created_at"])),
                "publish": (_stamp(stored["created_at"]), _stamp(job["finished_at"])),
            }
            _report(round_, json.loads(out.read_text()), phases, polls, factor)


def _poll(
    client: httpx.Client, accepted: dict[str, Any], polls: list[tuple[float, float]] | None = None
) -> Any:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        start = time.time()
        job = client.get(f"/train/{accepted['job_id']}").json()
        if polls is not None:
            polls.append((start, time.time()))
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(POLL_SECONDS)
    raise RuntimeError("training job not done within 150 s")


def _poll_idle(client: httpx.Client, job_id: str, seconds: float) -> None:
    """Poll a finished job's status for ``seconds``: the idle parts then differ from the fit's
    only by the fit, not by the polls' own cost."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.get(f"/train/{job_id}").raise_for_status()
        time.sleep(POLL_SECONDS)


def _report(
    round_: int,
    records: list[list[float]],
    phases: dict[str, tuple[float, float]],
    polls: list[tuple[float, float]],
    factor: float,
) -> None:
    sent = np.array([r[0] for r in records])
    ms = np.array([r[1] for r in records]) * 1000
    first, last = phases["parse"][0], phases["publish"][1]
    idle = (sent < first) | (sent > last + 0.3)
    window = (sent >= phases["parse"][1] + 0.5) & (sent <= last)
    idle_p99 = float(np.percentile(ms[idle], 99))
    # The machine's load says how far the figures are the service's own: helpers' tests and the
    # fit itself share its cores.
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"round {round_} (load average {load}): "
        f"idle p50/p99 {np.median(ms[idle]):.2f}/{idle_p99:.2f} ms; "
        f"(e)'s fit window p50/p99 {np.median(ms[window]):.2f}/"
        f"{np.percentile(ms[window], 99):.2f} ms over {window.sum()} requests; "
        + ", ".join(f"{name} {(b - a) * 1000:.0f} ms" for name, (a, b) in phases.items())
    )
    slow = np.flatnonzero(window & (ms > factor * idle_p99))
    counts: dict[str, int] = {}
    for i in slow:
        start, end = sent[i], sent[i] + ms[i] / 1000
        where = [name for name, (a, b) in phases.items() if a <= end and start <= b] or ["-"]
        if any(a - 0.002 <= end and start <= b for a, b in polls):
            where.append("poll")
        key = "+".join(where)
        counts[key] = counts.get(key, 0) + 1
    # The job's start (the data handed to the fitting process) falls in the 0.5 s after the 202,
    # which (e) leaves out of its window: counted apart, so a stall there is seen but not mixed in.
    start = (sent >= phases["parse"][1]) & (sent < phases["parse"][1] + 0.5)
    print(
        f"  {int((start & (ms > factor * idle_p99)).sum())} of {int(start.sum())} requests of the "
        f"0.5 s after the 202 (outside (e)'s window) above {factor:g}x idle p99, slowest "
        f"{ms[start].max() if start.any() else 0:.2f} ms"
    )
    print(
        f"  {slow.size} requests of the fit window above {factor:g}x idle p99 "
        f"({factor * idle_p99:.2f} ms), by phase: "
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--factor", type=float, default=1.5, help="slow: above this x idle p99")
    parser.add_argument("--client", nargs=4, metavar=("PORT", "BODIES", "OUT", "STOP"))
    arguments = parser.parse_args()
    if arguments.client:
        port, bodies, out, stop = arguments.client
        run_client(int(port), Path(bodies), Path(out), Path(stop))
    else:
        trace(arguments.rounds, arguments.factor)


if __name__ == "__main__":
    main()
