"""SIGTERM while serving: a real uvicorn process on a loopback port, under load, with a training
job running. In-flight requests complete, new connections are refused, the training job is
cancelled (its worker process stopped) and artifacts/ holds no partial files afterwards."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.model_store import ModelStore
from tests.hardening_support import API_KEY, seeded_settings

REPO = Path(__file__).resolve().parents[1]
EVENT = {"service": "api", "level": "INFO", "latency_ms": 42.0}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _request(
    port: int, method: str, path: str, body: object = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.update(int(child) for child in children)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(port: int) -> bool:
    try:
        return _request(port, "GET", "/ready", timeout=1.0)[0] == 200
    except OSError:
        return False


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


class _Load(threading.Thread):
    """Scores events in a loop on keep-alive connections until told to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.statuses: list[int] = []
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        body = json.dumps({"logs": [EVENT] * 50}).encode()
        while not self.stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                for _ in range(20):
                    connection.request(
                        "POST", "/score/batch", body, {"Content-Type": "application/json"}
                    )
                    response = connection.getresponse()
                    response.read()  # raises IncompleteRead on a truncated response
                    self.statuses.append(response.status)
            except (ConnectionError, http.client.RemoteDisconnected, OSError):
                self.refused += 1
                time.sleep(0.01)
            finally:
                connection.close()


def test_sigterm_drains_requests_and_cancels_training(tmp_path: Path) -> None:
    settings = seeded_settings(tmp_path)
    store = ModelStore(settings.artifacts_dir)
    versions_before = store.versions()
    active_before = store.active_version()
    port = _free_port()
    env = os.environ | {
        "INSIGHTHUB_ARTIFACTS_DIR": str(settings.artifacts_dir),
        "INSIGHTHUB_ENV": "test",
        "INSIGHTHUB_API_KEY": API_KEY,
    }
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "info", "--timeout-graceful-shutdown", "30"]
    server = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: an orphaned worker cannot block reading it
    )
    loads = [_Load(port) for _ in range(3)]
    workers: set[int] = set()
    try:
        _wait_for(lambda: _ready(port), 60, "the server to be ready")
        # A training job that runs for minutes unless cancelled.
        rows = [[float(10 + i % 500), 0.0] for i in range(100_000)]
        status, body = _request(
            port,
            "POST",
            "/train",
            {"data": rows, "parameters": {"n_estimators": 2000}, "activate": True},
        )
        assert status == 202, body
        job_id = json.loads(body)["job_id"]
        _wait_for(
            lambda: json.loads(_request(port, "GET", f"/train/{job_id}")[1])["status"] == "running",
            30,
            "the job to run",
        )
        workers = _children(server.pid)
        assert workers, "the training worker process should be running"
        for load in loads:
            load.start()
        _wait_for(lambda: sum(len(x.statuses) for x in loads) >= 30, 60, "load to flow")

        # One request is in flight: its headers and half its body have arrived.
        payload = json.dumps({"logs": [EVENT] * 200}).encode()
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = (
            f"POST /score/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        in_flight.sendall(head + payload[: len(payload) // 2])
        time.sleep(0.3)

        server.send_signal(signal.SIGTERM)
        _wait_for(lambda: _refuses_connections(port), 10, "new connections to be refused")
        assert server.poll() is None, "the server must wait for the request in flight"

        in_flight.sendall(payload[len(payload) // 2 :])
        response = b""
        while chunk := in_flight.recv(65536):
            response += chunk
        in_flight.close()
        head_part, _, body_part = response.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200"), response[:200]
        assert len(json.loads(body_part)["results"]) == 200

        # uvicorn re-raises the signal once shut down, so the exit status still says SIGTERM.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        for load in loads:
            load.stop.set()
        if server.poll() is None:
            server.kill()
            server.wait()
        # multiprocessing's resource tracker leaves a moment after its parent; an unstopped fit
        # would run on for minutes.
        deadline = time.monotonic() + 5.0
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [pid for pid in workers if _alive(pid)]
        for pid in orphans:  # the test's own grandchildren, by id: never leave them running
            os.kill(pid, signal.SIGKILL)
        for load in loads:
            if load.is_alive():
                load.join(timeout=15)
        log.close()
        stderr = log_path.read_text(errors="replace")

    for load in loads:
        # Every answer under load was a success; the rest could not connect once it stopped.
        assert load.statuses, "the load thread never got an answer"
        assert set(load.statuses) == {200}, (set(load.statuses), stderr)
    assert not orphans, "the training worker outlived the server"
    # Cancelled: no new version, the active one unchanged, no staging leftovers.
    after = ModelStore.__new__(ModelStore)  # read-only look, without cleaning leftovers
    after.root = settings.artifacts_dir
    after.versions_dir = settings.artifacts_dir / "versions"
    assert list(settings.artifacts_dir.glob(".tmp-*")) == [], stderr
    assert after.versions() == versions_before
    assert after.active_version() == active_before
    assert "Traceback" not in stderr, stderr
    assert "leaked" not in stderr, stderr  # the pool was shut down, not abandoned
    assert "Application shutdown complete" in stderr, stderr  # the lifespan's close ran
