"""SIGKILL at random moments of saving: a real process saves and activates versions in a loop and
is killed mid-flight, again and again; every time, a fresh store finds a loadable active version
and no half-written folder under versions/."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.model_store import VERSION_PATTERN, ModelStore

KILLS = 25
REPO = Path(__file__).resolve().parents[1]

# Imports once, then forks one saver per "go": each fork is a real process that the test kills
# with SIGKILL, without paying numpy/scikit-learn imports for every kill.
SAVER = r"""
import os, sys
from pathlib import Path
from app.model_store import ModelStore
from tests.hardening_support import small_fit

root = Path(sys.argv[1])
fits = [small_fit(seed) for seed in range(3)]
ModelStore(root, keep_versions=3)  # creates the layout
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        store = ModelStore(root, keep_versions=3)
        i = 0
        while True:
            model = store.save(fits[i % len(fits)])
            store.activate(model.version)
            i += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def _check(root: Path) -> int:
    """Everything under versions/ loads, and so does what ACTIVE points at."""
    names = sorted(p.name for p in (root / "versions").iterdir())
    store = ModelStore(root, keep_versions=3)  # what a restarted service does first
    for name in names:
        assert VERSION_PATTERN.match(name), f"stray entry {name!r} under versions/"
        store.load(name)  # raises ModelStoreError on a half-written version
    active = store.active_version()
    model = store.load_active()
    assert model is not None
    # The pointer itself is never left on something unloadable: no fallback was needed.
    assert model.version == active
    assert list(root.glob(".tmp-*")) == []
    return len(names)


def test_sigkill_during_saves_never_loses_the_active_version(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert saver.stdin is not None
    assert saver.stdout is not None
    rng = random.Random(20261124)
    seen_versions: set[str] = set()
    # How long a saver lives before its kill, at most: doubled after a kill that found no new
    # active version (on a loaded machine a save can take longer than the first bound), so
    # the kills keep landing while versions are written rather than before the first is done.
    longest_life = 0.15
    try:
        assert saver.stdout.readline().strip() == "ready"
        for _ in range(KILLS):
            saver.stdin.write("go\n")
            saver.stdin.flush()
            pid = int(saver.stdout.readline())
            time.sleep(rng.uniform(0.0, longest_life))
            os.kill(pid, signal.SIGKILL)
            assert saver.stdout.readline().strip() == "reaped"
            _check(root)
            active = ModelStore(root).active_version()
            assert active is not None
            if active in seen_versions:
                longest_life = min(2 * longest_life, 2.4)
            else:
                longest_life = 0.15
            seen_versions.add(active)
    finally:
        saver.kill()
        saver.wait()
        saver.stdin.close()
        saver.stdout.close()
    # The kills landed while versions were being written, not before the loop began.
    assert len(seen_versions) > KILLS // 2
