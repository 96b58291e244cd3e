"""(b)-(e): the service over HTTP on loopback, loaded by wrk, against the ceiling app.

Every load run is bounded in time (wrk -d, or a SIGINT at a deadline) and every wait has a
timeout. Only 127.0.0.1 is used. Processes started here are stopped here, by their own pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import Row, event_stream

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SINGLE_CONNECTIONS = 16
BATCH_CONNECTIONS = 2
BATCH_EVENTS = 1000
MEMORY_SERVICES = 10_000
FIT_ROWS = 1_000_000
LIGHT_DELAY_MS = 2  # one connection, one request every ~2 ms: latency, not throughput
# A 1M-event fit takes ~2 s, so one fit window holds only ~400-800 requests and its p99 is set by
# its 4th-8th slowest: seven fits, for the median of the windows' p99 to settle.
FIT_ROUNDS = 7
IDLE_SECONDS = 5.0
POLL_SECONDS = 0.1  # how often the fit's status is read, in the fit and the idle windows alike


class Missing(RuntimeError):
    """Something the HTTP benchmarks need is not installed; the message says what."""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's wrk package (apt-get install -y wrk)")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=300)
        found = shutil.which("wrk")
        if found:
            return found
    raise Missing(
        "wrk is missing: install Debian's package with `sudo apt-get install -y wrk` "
        "(run `make bench` as root and it installs it itself); HTTP figures were not measured"
    )


@dataclass(slots=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: str, env: dict[str, str], log_path: Path) -> Iterator[Server]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"http://{HOST}:{port}", process)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{app} exited at start-up; see {log_path}")
            try:
                if httpx.get(f"{server.url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} not ready within 120 s; see {log_path}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(slots=True)
class Load:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_seconds: float = 0.0  # CPU time the server used during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU per answered request: unlike req/s, hardly moved by neighbours that take
        CPU from the server (only their cache and memory-bus contention shows)."""
        return self.server_cpu_seconds / self.requests * 1e6 if self.requests else 0.0


_LUA = """
local bodies = {%(bodies)s}
local prepared = {}
local counter = 0
init = function(args)
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  counter = counter + 1
  return prepared[(counter %% #prepared) + 1]
end
%(delay)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "errors": %%d, "p50": %%d, "p90": %%d, ' ..
    '"p99": %%d, "max": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua(path: str, bodies: list[bytes], delay_ms: int | None, folder: Path) -> Path:
    literals = ",\n".join("[==[" + body.decode() + "]==]" for body in bodies)
    delay = f"delay = function() return {delay_ms} end" if delay_ms else ""
    script = folder / f"load-{abs(hash((path, len(bodies), delay_ms)))}.lua"
    script.write_text(_LUA % {"bodies": literals, "path": path, "delay": delay})
    return script


def _parse(output: str) -> Load:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[len("BENCH ") :])
            return Load(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                errors=data["errors"],
                p50_ms=data["p50"] / 1000,
                p90_ms=data["p90"] / 1000,
                p99_ms=data["p99"] / 1000,
                max_ms=data["max"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary:\n{output}")


def run_wrk(
    wrk: str,
    server: Server,
    script: Path,
    path: str,
    connections: int,
    seconds: float,
) -> Load:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s"]
    command += ["-s", str(script), server.url + path]
    cpu_before = server.cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    load = _parse(done.stdout)
    load.server_cpu_seconds = server.cpu_seconds() - cpu_before
    return load


def _sizes(server: Server, path: str, bodies: list[bytes]) -> int:
    sizes = []
    for body in bodies:
        response = httpx.post(
            server.url + path,
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        response.raise_for_status()
        sizes.append(len(response.content))
    return int(statistics.mean(sizes))


def _single_bodies() -> list[bytes]:
    events = event_stream(64, services=16, seed=3)
    for event in events:
        event.pop("timestamp")  # live traffic: stamped on receipt
    return [orjson.dumps(event) for event in events]


def _batch_bodies() -> list[bytes]:
    bodies = []
    for seed in range(4):
        events = event_stream(BATCH_EVENTS, services=100, seed=10 + seed)
        for event in events:
            event.pop("timestamp")
        bodies.append(orjson.dumps({"logs": events}))
    return bodies


def bench_http(rounds: int = 3, seconds: float = 5.0, wanted: str = "bcde") -> list[Row]:
    """The HTTP sections in ``wanted`` (b, c, d, e); only what they need is run."""
    wrk = ensure_wrk()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        service_env = {"INSIGHTHUB_ARTIFACTS_DIR": str(folder / "artifacts")}
        single, batch = _single_bodies(), _batch_bodies()
        with serve("app.main:app", service_env, folder / "service.log") as service:
            single_size = _sizes(service, "/score", single[:8])
            batch_size = _sizes(service, "/score/batch", batch[:1])
            ceiling_env = {
                "BENCH_SCORE_BYTES": str(single_size),
                "BENCH_BATCH_BYTES": str(batch_size),
            }
            if "b" in wanted or "c" in wanted:
                with serve("bench.ceiling:app", ceiling_env, folder / "ceiling.log") as ceiling:
                    rows += _throughput(
                        wrk, service, ceiling, single, batch, folder, rounds, seconds, wanted
                    )
                    if "b" in wanted:
                        rows += _half_load(
                            wrk, service, ceiling, single, folder, rows[0].value, seconds
                        )
                if "c" in wanted:
                    rows += _batch_edge(wrk, batch, folder, rounds, seconds, service_env)
            if "e" in wanted:
                rows += _fit_under_load(wrk, service, single, folder)
        if "d" in wanted:
            rows += _memory(folder, service_env)
    return rows


def _throughput(
    wrk: str,
    service: Server,
    ceiling: Server,
    single: list[bytes],
    batch: list[bytes],
    folder: Path,
    rounds: int,
    seconds: float,
    wanted: str = "bc",
) -> list[Row]:
    single_script = _lua("/score", single, None, folder)
    batch_script = _lua("/score/batch", batch, None, folder)
    for server in (service, ceiling):  # warm-up: JIT caches, connection pools, page faults
        if "b" in wanted:
            run_wrk(wrk, server, single_script, "/score", SINGLE_CONNECTIONS, 2)
        if "c" in wanted:
            run_wrk(wrk, server, batch_script, "/score/batch", BATCH_CONNECTIONS, 2)
    runs: dict[str, list[Load]] = {"s1": [], "c1": [], "sb": [], "cb": []}
    for _ in range(rounds):  # alternate, so both see the same neighbours on a shared machine
        if "b" in wanted:
            runs["c1"].append(
                run_wrk(wrk, ceiling, single_script, "/score", SINGLE_CONNECTIONS, seconds)
            )
            runs["s1"].append(
                run_wrk(wrk, service, single_script, "/score", SINGLE_CONNECTIONS, seconds)
            )
        if "c" in wanted:
            runs["cb"].append(
                run_wrk(wrk, ceiling, batch_script, "/score/batch", BATCH_CONNECTIONS, seconds)
            )
            runs["sb"].append(
                run_wrk(wrk, service, batch_script, "/score/batch", BATCH_CONNECTIONS, seconds)
            )
    errors = {key: sum(load.errors for load in loads) for key, loads in runs.items()}
    rate = {
        key: statistics.median(load.rate for load in loads) for key, loads in runs.items() if loads
    }
    cpu = {
        key: statistics.median(load.cpu_us_per_request for load in loads)
        for key, loads in runs.items()
        if loads
    }
    note = f"wrk -t1 -c{SINGLE_CONNECTIONS}, {rounds} x {seconds:.0f} s alternating, median"
    rows: list[Row] = []
    if "b" in wanted:
        rows.append(
            Row(
                "b",
                "POST /score, one uvicorn worker",
                rate["s1"],
                "req/s",
                "ceiling app, same request model",
                rate["c1"],
                better="higher",
                target=">= 0.70",
                note=note + f"; non-2xx/socket errors: {errors['s1']} vs {errors['c1']}; server "
                f"CPU per request (median) {cpu['s1']:.0f} us vs {cpu['c1']:.0f} us",
                extra={
                    "all": {k: [load.rate for load in v] for k, v in runs.items()},
                    "cpu_us_per_request": {
                        k: [load.cpu_us_per_request for load in v] for k, v in runs.items()
                    },
                },
            )
        )
    if "c" in wanted:
        rows.append(
            Row(
                "c",
                f"POST /score/batch, {BATCH_EVENTS} events per request",
                rate["sb"] * BATCH_EVENTS,
                "events/s",
                "ceiling app, same request model",
                rate["cb"] * BATCH_EVENTS,
                better="higher",
                target=">= 0.50",
                note=f"wrk -t1 -c{BATCH_CONNECTIONS}; errors: {errors['sb']} vs {errors['cb']}; "
                f"server CPU per {BATCH_EVENTS}-event request (median) {cpu['sb'] / 1000:.1f} ms "
                f"vs {cpu['cb'] / 1000:.1f} ms",
                extra={
                    "events_per_s": {
                        k: [load.rate * BATCH_EVENTS for load in runs[k]] for k in ("sb", "cb")
                    },
                    "cpu_us_per_request": {
                        k: [load.cpu_us_per_request for load in runs[k]] for k in ("sb", "cb")
                    },
                },
            )
        )
    return rows


def _batch_edge(
    wrk: str,
    batch: list[bytes],
    folder: Path,
    rounds: int,
    seconds: float,
    service_env: dict[str, str],
) -> list[Row]:
    """The server's CPU per 1,000-event request outside the engine: the service with canned
    engine answers (bench/edge_app.py) against the ceiling app, alternating, CPU per request
    (the rate of either is the client's and the loopback's as much as the server's)."""
    script = _lua("/score/batch", batch, None, folder)
    edge_env = service_env | {"INSIGHTHUB_ARTIFACTS_DIR": str(folder / "edge-artifacts")}
    with serve("bench.edge_app:app", edge_env, folder / "edge.log") as edge:
        ceiling_env = {"BENCH_BATCH_BYTES": str(_sizes(edge, "/score/batch", batch[:1]))}
        with serve("bench.ceiling:app", ceiling_env, folder / "ceiling-edge.log") as ceiling:
            for server in (edge, ceiling):
                run_wrk(wrk, server, script, "/score/batch", BATCH_CONNECTIONS, 2)
            edge_cpu, ceiling_cpu = [], []
            for _ in range(rounds):
                load = run_wrk(wrk, ceiling, script, "/score/batch", BATCH_CONNECTIONS, seconds)
                ceiling_cpu.append(load.cpu_us_per_request)
                load = run_wrk(wrk, edge, script, "/score/batch", BATCH_CONNECTIONS, seconds)
                edge_cpu.append(load.cpu_us_per_request)
    return [
        Row(
            "c",
            f"POST /score/batch server CPU per {BATCH_EVENTS}-event request, engine answers canned",
            statistics.median(edge_cpu) / 1000,
            "ms",
            "ceiling app's CPU per request",
            statistics.median(ceiling_cpu) / 1000,
            note=f"wrk -t1 -c{BATCH_CONNECTIONS}, {rounds} x {seconds:.0f} s alternating, median; "
            "bench/edge_app.py (the service, engine.score_columns answering copies of its first "
            f"batch's results); all: {', '.join(f'{v / 1000:.2f}' for v in edge_cpu)} ms vs "
            f"{', '.join(f'{v / 1000:.2f}' for v in ceiling_cpu)} ms",
        )
    ]


def _half_load(
    wrk: str,
    service: Server,
    ceiling: Server,
    single: list[bytes],
    folder: Path,
    service_rate: float,
    seconds: float,
) -> list[Row]:
    """wrk has no fixed-rate mode (wrk2 is not in Debian): each connection waits ``delay`` ms
    between its requests, and the connection count is chosen so the offered rate is half of
    the service's measured maximum. Like all closed-loop clients, it does not correct for
    coordinated omission; the rate actually achieved is reported next to the p99."""
    delay_ms = 10
    target = service_rate / 2
    connections = max(1, round(target * delay_ms / 1000))
    script = _lua("/score", single, delay_ms, folder)
    service_runs, ceiling_runs = [], []
    for _ in range(3):  # alternating; the median p99 resists a neighbour's burst
        service_runs.append(run_wrk(wrk, service, script, "/score", connections, seconds))
        ceiling_runs.append(run_wrk(wrk, ceiling, script, "/score", connections, seconds))
    service_load = sorted(service_runs, key=lambda load: load.p99_ms)[1]
    ceiling_load = sorted(ceiling_runs, key=lambda load: load.p99_ms)[1]
    note = (
        f"{connections} connections x 1 request per {delay_ms} ms, 3 alternating runs, median "
        f"p99 (all: {', '.join(f'{load.p99_ms:.1f}' for load in service_runs)} ms vs "
        f"{', '.join(f'{load.p99_ms:.1f}' for load in ceiling_runs)} ms); achieved "
        f"{service_load.rate:.0f} req/s (ceiling {ceiling_load.rate:.0f}); p50 "
        f"{service_load.p50_ms:.2f} ms vs {ceiling_load.p50_ms:.2f} ms"
    )
    return [
        Row(
            "b",
            "POST /score p99 latency at half the max rate",
            service_load.p99_ms,
            "ms",
            "ceiling app at the same offered load",
            ceiling_load.p99_ms,
            note=note,
        )
    ]


def _start_light_load(wrk: str, service: Server, script: Path) -> subprocess.Popen[bytes]:
    """wrk with one connection until SIGINT (at most 120 s)."""
    command = [wrk, "-t1", "-c1", "-d120s", "--timeout", "10s", "-s", str(script)]
    return subprocess.Popen(
        [*command, service.url + "/score"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _stop_light_load(load: subprocess.Popen[bytes]) -> Load:
    load.send_signal(signal.SIGINT)
    output, _ = load.communicate(timeout=30)
    return _parse(output.decode())


def _pause_decision(client: httpx.Client) -> str:
    """What the service decided about pausing its fits (app/pausing.py), from /metrics."""
    values = {}
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("insighthub_neighbour_slowdown", "insighthub_training_pause_enabled"):
            values[name] = float(value)
    slowdown = values.get("insighthub_neighbour_slowdown")
    measured = "not measured" if slowdown is None else f"x{slowdown:.2f}"
    state = "on" if values.get("insighthub_training_pause_enabled") else "off"
    return f"the service's start-up neighbour measure {measured}, so pausing fits {state}"


def _fit_under_load(wrk: str, service: Server, single: list[bytes], folder: Path) -> list[Row]:
    """Light load in phases, over ``FIT_ROUNDS`` fits: idle; while POST /train with 1M rows is
    received and validated (in the parsing process); while the fit runs in the worker process;
    idle again; then, as long as the fit window lasted, next to a spinner: a process that only
    burns CPU at the fit's priority (SCHED_IDLE), touching almost no memory. Every window polls
    a job's status as the fit windows do, so they differ only by their neighbour; figures are
    medians over the windows, as a neighbour's burst on a shared machine can double one
    window's p99. The spinner is the floor of any fit's cost here: what a CPU-bound neighbour
    at the lowest priority costs scoring on this machine, whatever it computes."""
    client = httpx.Client(base_url=service.url, timeout=120)
    # Warm the training pool first: spawning the worker and importing numpy/sklearn/numba there
    # is a one-off start-up cost, not the cost of a fit.
    rng = np.random.default_rng(5)
    small = [[float(v), 0.0] for v in rng.lognormal(4, 0.5, 2000)]
    warm = _wait_job(client, client.post("/train", json={"data": small, "activate": False}).json())
    script = _lua("/score", single, LIGHT_DELAY_MS, folder)
    idles = [_idle_window(wrk, service, script, client, warm["job_id"])]
    latency = rng.lognormal(4.0, 0.6, FIT_ROWS).round(2)
    levels = rng.choice([0.0, 1.0, 2.0], FIT_ROWS, p=[0.96, 0.03, 0.01])
    body = orjson.dumps({"data": np.column_stack([latency, levels]).tolist(), "activate": True})
    postings: list[Load] = []
    post_seconds: list[float] = []
    fits: list[Load] = []
    spinning: list[Load] = []
    jobs: list[dict[str, Any]] = []
    for _ in range(FIT_ROUNDS):
        load = _start_light_load(wrk, service, script)
        time.sleep(0.5)
        start = time.perf_counter()
        accepted = client.post("/train", content=body, headers={"content-type": "application/json"})
        post_seconds.append(time.perf_counter() - start)
        # The request's million small lists are freed just after the answer is sent: part of it.
        time.sleep(0.5)
        postings.append(_stop_light_load(load))
        accepted.raise_for_status()
        load = _start_light_load(wrk, service, script)
        try:
            jobs.append(_wait_job(client, accepted.json(), timeout=110))
        finally:
            fits.append(_stop_light_load(load))
        idles.append(_idle_window(wrk, service, script, client, accepted.json()["job_id"]))
        with _spinner():
            spinning.append(
                _idle_window(
                    wrk, service, script, client, accepted.json()["job_id"], fits[-1].seconds
                )
            )
    fit_seconds = statistics.median(_job_seconds(job) for job in jobs)
    pausing = _pause_decision(client)

    def median(loads: list[Load], figure: str) -> float:
        return float(statistics.median(float(getattr(load, figure)) for load in loads))

    def listed(loads: list[Load]) -> str:
        return ", ".join(f"{load.p50_ms:.2f}/{load.p99_ms:.2f}" for load in loads)

    note = (
        f"1 connection, 1 request per {LIGHT_DELAY_MS} ms; {FIT_ROUNDS} fits of {FIT_ROWS:,} raw "
        f"rows ({', '.join(job['status'] for job in jobs)}; "
        f"{', '.join(f'{_job_seconds(job):.1f}' for job in jobs)} s, queued to stored, worker "
        f"process), each measured from 0.5 s after the 202 until the job finished "
        f"({', '.join(f'{load.seconds:.1f} s' for load in fits)}); {IDLE_SECONDS:.0f}-s idle "
        f"windows before and after each, polling a job's status every {POLL_SECONDS} s as the "
        f"fit windows do. p50/p99 ms per window: during {listed(fits)}; idle {listed(idles)}; "
        f"next to a SCHED_IDLE spinner {listed(spinning)}; {pausing}"
    )
    return [
        Row("e", "POST /score p50 while a 1M-event fit runs (median of fits)",
            median(fits, "p50_ms"), "ms", "idle p50 (median of windows)", median(idles, "p50_ms"),
            target="within 25%", note=note),
        Row("e", "POST /score p99 while a 1M-event fit runs (median of fits)",
            median(fits, "p99_ms"), "ms", "idle p99 (median of windows)", median(idles, "p99_ms"),
            target="within 25%"),
        Row("e", "POST /score p99 next to a SCHED_IDLE CPU spinner, no fit (median)",
            median(spinning, "p99_ms"), "ms", "idle p99 (median of windows)",
            median(idles, "p99_ms"),
            note="the floor under the fit's p99: a process at the fit's priority that only "
            "spins, for as long as each fit window lasted, polled alike"),
        Row("e", "fit of 1,000,000 events in the worker (queued to stored)", fit_seconds, "s",
            target="a few seconds"),
        Row("e", "POST /train with 1,000,000 raw rows (15 MB body), request time",
            statistics.median(post_seconds), "s"),
        Row("e", "POST /score max latency while that POST /train is handled",
            median(postings, "max_ms"), "ms", "idle max", median(idles, "max_ms"),
            note="median over the rounds; bodies of 256 KiB and more are validated in the "
            "parsing process (app/training_data.py), which returns arrays; the loop only "
            "receives and hands over the bytes"),
    ]  # fmt: skip


def _idle_window(
    wrk: str,
    service: Server,
    script: Path,
    client: httpx.Client,
    job_id: str,
    seconds: float = IDLE_SECONDS,
) -> Load:
    """Light load for ``seconds`` with nothing training, polling a finished job."""
    load = _start_light_load(wrk, service, script)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.get(f"/train/{job_id}").raise_for_status()
            time.sleep(POLL_SECONDS)
    finally:
        idle = _stop_light_load(load)
    return idle


# Lowered exactly as the fitting process lowers itself, then spinning in the interpreter (a few
# KiB of memory) until killed, or for two minutes at most.
_SPIN = (
    "import time\n"
    "from app.training_data import lower_priority\n"
    "lower_priority('idle')\n"
    "end = time.monotonic() + 120\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


@contextmanager
def _spinner() -> Iterator[None]:
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN], cwd=ROOT)
    try:
        time.sleep(0.3)  # past its imports, spinning
        yield
    finally:
        spinner.kill()
        spinner.wait(timeout=10)


def _wait_job(client: httpx.Client, accepted: dict[str, Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/train/{accepted['job_id']}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"training job {accepted['job_id']} not done within {timeout:.0f} s")


def _job_seconds(job: dict[str, Any]) -> float:
    from datetime import datetime

    created = datetime.fromisoformat(job["created_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - created).total_seconds()


def _memory(folder: Path, service_env: dict[str, str]) -> list[Row]:
    events = event_stream(MEMORY_SERVICES, services=MEMORY_SERVICES, seed=7)
    with serve("app.main:app", service_env, folder / "memory.log") as service:
        client = httpx.Client(base_url=service.url, timeout=60)
        client.post("/score", json=events[0]).raise_for_status()
        loaded = service.rss_bytes()
        for start in range(0, len(events), BATCH_EVENTS):
            chunk = events[start : start + BATCH_EVENTS]
            client.post("/score/batch", json={"logs": chunk}).raise_for_status()
        with_services = service.rss_bytes()
        tracked = client.get(f"/stats/{events[-1]['service']}").status_code
    per_service = _per_service_bytes(events)
    buckets = 60
    return [
        Row("d", f"service RSS, model loaded, {MEMORY_SERVICES:,} services in the windows",
            with_services / 2**20, "MiB", "RSS with the model loaded, one service",
            loaded / 2**20, better="neutral",
            note=f"/proc/<pid>/status VmRSS; last service's /stats: HTTP {tracked}"),
        Row("d", "RSS growth per service", (with_services - loaded) / MEMORY_SERVICES, "bytes",
            better="neutral"),
        Row("d", "window per service (tracemalloc)", per_service["windows"], "bytes",
            f"bucket payload {buckets} x 9 x 8 B", buckets * 9 * 8, better="neutral"),
        Row("d", "baseline per service (tracemalloc)", per_service["baselines"], "bytes",
            better="neutral"),
    ]  # fmt: skip


def _per_service_bytes(raw_events: list[dict[str, Any]]) -> dict[str, float]:
    from app.baselines import BaselineStore
    from app.events import EventBatch, parse_events
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(artifacts_dir=Path(tmp))
    batch = EventBatch.from_events(parse_events(raw_events))
    result = {}
    from app.windows import WindowStore

    for name in ("windows", "baselines"):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        store: WindowStore | BaselineStore
        if name == "windows":
            store = WindowStore(
                settings.window_seconds, settings.window_buckets, settings.window_min_events,
                settings.baseline_halflife_minutes * 60, settings.max_services,
            )  # fmt: skip
        else:
            store = BaselineStore(
                settings.baseline_warmup_events,
                settings.baseline_halflife_minutes * 60,
                settings.max_services,
            )
        view = store.observe(batch)
        del view
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        result[name] = (after - before) / len(raw_events)
        del store
    return result
