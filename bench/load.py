"""Load test: the service at capacity for minutes, on loopback only, bounded in time.

    .venv/bin/python -m bench.load                      # 3 min steady + 3 min while retraining
    .venv/bin/python -m bench.load --minutes 1 --json-out /tmp/load.json

Starts uvicorn (one process, the embedded default) on a free 127.0.0.1 port with a fresh artifacts
folder, then drives POST /score with wrk (closed loop: every connection sends its next request as
soon as the previous answer arrives, so the server runs at its capacity). Each phase is cut into
30-second wrk runs, so p99 and throughput are reported over time, not only as one average. Two
phases:

* steady: scoring only;
* training: the same load while POST /train jobs run back to back (each fit in its own process,
  each new version activated under load).

Recorded: requests/s, p50/p90/p99/max latency, every error wrk counts (connect, read, write,
timeout, non-2xx), the server's RSS every second (and the training worker's), and the service's
own /metrics counters at the end. Nothing here asserts a speed: it measures and reports.

wrk comes from Debian (``apt-get install wrk``); when it is missing the script installs it if it
runs as root, and otherwise says what to install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK_SECONDS = 30
API_KEY = "load-test-key-" + "0123456789abcdef"

WRK_SCRIPT = r"""
local counter = 0
request = function()
  counter = counter + 1
  local service = "svc-" .. ((counter * 7) % 50)
  local level = "INFO"
  if counter % 97 == 0 then level = "ERROR" elseif counter % 31 == 0 then level = "WARN" end
  local latency = 20 + (counter * 7919) % 200
  local body = string.format(
    '{"service":"%s","level":"%s","latency_ms":%d,"message":"GET /api/v1/orders 200"}',
    service, level, latency)
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class Chunk:
    phase: str
    started_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]


@dataclass
class Report:
    connections: int
    threads: int
    chunk_seconds: int
    cpu_count: int
    chunks: list[Chunk] = field(default_factory=list)
    rss_mib: list[tuple[float, float, float]] = field(default_factory=list)  # t, server, worker
    training_jobs: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it with `sudo apt-get install -y wrk` and run again")
    print("wrk is missing: installing it from Debian's packages", flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get ran but wrk is still not on PATH")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http(
    port: int, method: str, path: str, body: object = None, timeout: float = 30.0
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        pass
    return found


class RssSampler(threading.Thread):
    def __init__(self, pid: int, report: Report, started: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.report = report
        self.started = started
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            worker = sum(rss_mib(child) for child in children(self.pid))
            sample = (time.monotonic() - self.started, rss_mib(self.pid), worker)
            self.report.rss_mib.append(sample)


class Retrainer(threading.Thread):
    """Submits a training job as soon as the previous one ends, until stopped."""

    def __init__(self, port: int, rows: int, trees: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.body = {
            "data": [[float(20 + (i * 7919) % 200), 0.0 if i % 97 else 2.0] for i in range(rows)],
            "parameters": {"n_estimators": trees},
            "activate": True,
        }
        self.outcomes: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            status, body = http(self.port, "POST", "/train", self.body)
            if status != 202:
                self.outcomes[f"submit_{status}"] = self.outcomes.get(f"submit_{status}", 0) + 1
                self.stop.wait(1.0)
                continue
            job_id = json.loads(body)["job_id"]
            while not self.stop.wait(0.5):
                job = json.loads(http(self.port, "GET", f"/train/{job_id}")[1])
                if job["status"] in ("succeeded", "failed"):
                    self.outcomes[job["status"]] = self.outcomes.get(job["status"], 0) + 1
                    break


def run_wrk(
    wrk: str, script: Path, port: int, args: argparse.Namespace, seconds: int
) -> dict[str, int]:
    command = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds}s"]
    command += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/score"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result: dict[str, int] = json.loads(line.removeprefix("RESULT "))
    return result


def phase(
    name: str,
    minutes: float,
    wrk: str,
    script: Path,
    port: int,
    args: argparse.Namespace,
    report: Report,
    started: float,
) -> None:
    chunks = max(1, round(minutes * 60 / CHUNK_SECONDS))
    for _ in range(chunks):
        at = time.monotonic() - started
        result = run_wrk(wrk, script, port, args, CHUNK_SECONDS)
        errors = {k: result[k] for k in ("connect", "read", "write", "status", "timeout")}
        chunk = Chunk(
            phase=name,
            started_s=round(at, 1),
            requests=result["requests"],
            rps=round(result["requests"] / (result["duration_us"] / 1e6), 1),
            p50_ms=result["p50_us"] / 1000,
            p90_ms=result["p90_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
            max_ms=result["max_us"] / 1000,
            errors=errors,
        )
        report.chunks.append(chunk)
        print(
            f"{name:>8} t={chunk.started_s:6.0f}s  {chunk.rps:8.0f} req/s  p50 {chunk.p50_ms:6.2f}"
            f"  p99 {chunk.p99_ms:7.2f}  max {chunk.max_ms:7.1f} ms  errors {errors}",
            flush=True,
        )


def scrape_metrics(port: int) -> dict[str, float]:
    text = http(port, "GET", "/metrics")[1].decode()
    wanted = (
        "insighthub_http_requests_total",
        "insighthub_http_rejected_total",
        "insighthub_detector_failures_total",
        "insighthub_training_jobs_total",
        "insighthub_service_evictions_total",
    )
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def summary(report: Report) -> str:
    lines = [
        "| phase | 30-s runs | req/s (min / median / max) | p99 ms (min / median / max) "
        "| max ms | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(c.phase for c in report.chunks):
        chunks = [c for c in report.chunks if c.phase == name]
        rps = [c.rps for c in chunks]
        p99 = [c.p99_ms for c in chunks]
        errors = sum(sum(c.errors.values()) for c in chunks)
        lines.append(
            f"| {name} | {len(chunks)} | {min(rps):.0f} / {statistics.median(rps):.0f} / "
            f"{max(rps):.0f} | {min(p99):.1f} / {statistics.median(p99):.1f} / {max(p99):.1f} "
            f"| {max(c.max_ms for c in chunks):.0f} | {errors} |"
        )
    lines.append("")
    lines.append(
        "| phase | server RSS, first minute (median MiB) | last minute | peak | worker peak |"
    )
    lines.append("| --- | --- | --- | --- | --- |")
    for name in dict.fromkeys(c.phase for c in report.chunks):
        chunks = [c for c in report.chunks if c.phase == name]
        start = chunks[0].started_s
        end = chunks[-1].started_s + report.chunk_seconds
        samples = [s for s in report.rss_mib if start <= s[0] < end]
        if not samples:
            continue
        first = [s[1] for s in samples if s[0] < start + 60]
        last = [s[1] for s in samples if s[0] >= end - 60]
        lines.append(
            f"| {name} | {statistics.median(first):.1f} | {statistics.median(last):.1f} | "
            f"{max(s[1] for s in samples):.1f} | {max(s[2] for s in samples):.1f} |"
        )
    lines.append(f"Training jobs while loaded: {report.training_jobs or 'none'}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="per phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--train-trees", type=int, default=200)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--summarize", type=Path, help="only print the summary of a --json-out")
    args = parser.parse_args()
    if args.summarize:
        saved = json.loads(args.summarize.read_text())
        saved["chunks"] = [Chunk(**chunk) for chunk in saved["chunks"]]
        print(summary(Report(**saved)))
        return
    wrk = ensure_wrk()
    report = Report(args.connections, args.threads, CHUNK_SECONDS, os.cpu_count() or 0)
    with tempfile.TemporaryDirectory(prefix="insighthub-load-") as workdir:
        script = Path(workdir) / "score.lua"
        script.write_text(WRK_SCRIPT)
        port = free_port()
        env = os.environ | {
            "INSIGHTHUB_ARTIFACTS_DIR": str(Path(workdir) / "artifacts"),
            "INSIGHTHUB_API_KEY": API_KEY,
        }
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        server = subprocess.Popen(command, cwd=REPO, env=env)
        started = time.monotonic()
        sampler = RssSampler(server.pid, report, started)
        retrainer: Retrainer | None = None
        try:
            deadline = time.monotonic() + 120
            while http_ready(port) is False:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("the server did not become ready")
                time.sleep(0.2)
            sampler.start()
            print(f"warm-up {CHUNK_SECONDS} s (not reported)", flush=True)
            run_wrk(wrk, script, port, args, CHUNK_SECONDS)
            phase("steady", args.minutes, wrk, script, port, args, report, started)
            retrainer = Retrainer(port, args.train_rows, args.train_trees)
            retrainer.start()
            phase("training", args.minutes, wrk, script, port, args, report, started)
        finally:
            if retrainer is not None:
                retrainer.stop.set()
                retrainer.join(timeout=30)
                report.training_jobs = retrainer.outcomes
            if server.poll() is None:
                report.metrics = scrape_metrics(port)
            sampler.stop.set()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    print()
    print(summary(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(asdict(report), indent=1))


def http_ready(port: int) -> bool:
    try:
        return http(port, "GET", "/ready", timeout=1.0)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
