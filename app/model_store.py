"""Versioned, crash-safe model storage in ``artifacts/``.

Layout::

    artifacts/versions/<version>/model.npz      arrays only (loaded with allow_pickle=False)
    artifacts/versions/<version>/manifest.json  what, when, from how much data, checksum
    artifacts/ACTIVE                            the active version's name
    artifacts/.tmp-train-<id>.npz               a large POST /train body's rows on their way
                                                from the parsing to the fitting process

A version is written in a temporary folder beside ``versions/``, every file fsynced, then renamed
into place in one ``os.replace`` (the commit point) and the parent folder fsynced; ``ACTIVE`` is
replaced the same way. A crash at any moment leaves either the old state or the new one, and a
half-written folder is never under ``versions/``. Nothing is loaded unless its checksum matches
the manifest, and the format cannot run code when loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.model import FitResult, Model, TrainingData, fit_model_within, model_from_arrays
from app.training_data import SpooledTrainingData

log = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"^v(\d{4,})-\d{8}T\d{6}Z$")
MAX_MODEL_BYTES = 512 * 1024 * 1024


class ModelStoreError(Exception):
    """A version is missing, damaged or not ours."""


@dataclass(frozen=True, slots=True)
class PackedFit:
    """A fit with its model file already written to bytes and hashed, as ``save`` stores it."""

    result: FitResult
    payload: bytes  # the model.npz file
    checksum: str  # sha256 of ``payload``


def pack(result: FitResult) -> PackedFit:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **result.arrays)
    payload = buffer.getvalue()
    return PackedFit(result, payload, hashlib.sha256(payload).hexdigest())


def fit_and_pack(
    seconds: float,
    fit: Callable[[TrainingData, dict[str, Any], int], FitResult],
    data: TrainingData | SpooledTrainingData,
    parameters: dict[str, Any],
    warmup: int,
) -> PackedFit:
    """``fit_model_within``, then ``pack``: what the trainer's worker process runs. np.savez
    writes the zip in Python and holds the GIL for 2-6 ms; done in the service's saving thread,
    that was time the event loop waited for its own thread before it could answer requests.
    Spooled data is read (and its file removed) here, in the worker."""
    if isinstance(data, SpooledTrainingData):
        data = data.load()
    return pack(fit_model_within(seconds, fit, data, parameters, warmup))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class ModelStore:
    def __init__(self, root: Path, keep_versions: int = 10) -> None:
        self.root = root
        self.versions_dir = root / "versions"
        self.keep_versions = keep_versions
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Temporary folders of saves that a crash interrupted are never valid, and spooled
        training rows (``.tmp-train-``) belong to jobs that died with the service: remove them."""
        for leftover in self.root.glob(".tmp-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:  # an ACTIVE pointer whose replace never happened
                leftover.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Stored version names, oldest first."""
        names = [p.name for p in self.versions_dir.iterdir() if VERSION_PATTERN.match(p.name)]
        return sorted(names, key=lambda name: int(VERSION_PATTERN.match(name).group(1)))  # type: ignore[union-attr]

    def active_version(self) -> str | None:
        try:
            name = (self.root / "ACTIVE").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if VERSION_PATTERN.match(name) else None

    def manifest(self, version: str) -> dict[str, Any]:
        if not VERSION_PATTERN.match(version):
            raise ModelStoreError(f"{version!r} is not a model version name")
        path = self.versions_dir / version / "manifest.json"
        try:
            manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelStoreError(f"model version {version} does not exist") from exc
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"manifest of {version} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("version") != version:
            raise ModelStoreError(f"manifest of {version} does not describe {version}")
        return manifest

    def load(self, version: str) -> Model:
        """Load and verify one version; raises ModelStoreError if anything is off."""
        manifest = self.manifest(version)
        path = self.versions_dir / version / "model.npz"
        try:
            if path.stat().st_size > MAX_MODEL_BYTES:
                raise ModelStoreError(f"model file of {version} is implausibly large")
            payload = path.read_bytes()
        except OSError as exc:
            raise ModelStoreError(f"model file of {version} is unreadable: {exc}") from exc
        if hashlib.sha256(payload).hexdigest() != manifest.get("checksum"):
            raise ModelStoreError(f"model file of {version} does not match its manifest checksum")
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            return model_from_arrays(version, arrays, manifest)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ModelStoreError(f"model version {version} is not a valid model: {exc}") from exc

    def load_active(self) -> Model | None:
        """The active version or, if it cannot be loaded, the newest version that can."""
        active = self.active_version()
        candidates = ([active] if active else []) + [
            v for v in reversed(self.versions()) if v != active
        ]
        for version in candidates:
            try:
                model = self.load(version)
            except ModelStoreError as exc:
                log.error("refusing model version %s: %s", version, exc)
                continue
            if version != active:
                log.warning("active model %s unusable; serving %s instead", active, version)
                self.activate(version)
            return model
        return None

    # -- writing -------------------------------------------------------------------------------

    def _next_version(self) -> str:
        existing = self.versions()
        sequence = int(VERSION_PATTERN.match(existing[-1]).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        return f"v{sequence:04d}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"

    def save(self, fitted: FitResult | PackedFit) -> Model:
        """Store a fitted model as a new version (not activated). Callers serialise saves.
        A ``PackedFit`` (its file made and hashed in the training worker) is stored as packed."""
        packed = fitted if isinstance(fitted, PackedFit) else pack(fitted)
        result, payload = packed.result, packed.payload
        version = self._next_version()
        manifest = {
            **result.description,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "checksum": packed.checksum,
        }
        # Validate before writing anything: a model that cannot be loaded is never stored.
        model = model_from_arrays(version, result.arrays, manifest)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            _write_durably(staging / "model.npz", payload)
            _write_durably(
                staging / "manifest.json", json.dumps(manifest, indent=2).encode("utf-8")
            )
            _fsync_path(staging)
            os.replace(staging, self.versions_dir / version)
            _fsync_path(self.versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._prune()
        return model

    def activate(self, version: str, checked: Model | None = None) -> None:
        """Point ACTIVE at ``version`` atomically. The version must load cleanly: it is loaded
        here unless ``checked`` is that version as ``save`` or ``load`` returned it, checked
        whole already (the service's trainer: reading it back held the GIL for ~10 ms of the
        worker thread while requests waited on the event loop)."""
        if checked is None or checked.version != version:
            self.load(version)
        staging = self.root / f".tmp-active-{os.getpid()}"
        _write_durably(staging, version.encode("utf-8"))
        os.replace(staging, self.root / "ACTIVE")
        _fsync_path(self.root)

    def _prune(self) -> None:
        active = self.active_version()
        versions = self.versions()
        excess = len(versions) - self.keep_versions
        for version in versions:
            if excess <= 0:
                break
            if version in (active, versions[-1]):
                continue
            # rmtree is not atomic: a crash inside it would leave a half-deleted version under
            # versions/. Move it out in one rename first; a crash after that leaves a .tmp-
            # folder that the next start removes.
            doomed = self.root / f".tmp-prune-{version}"
            try:
                os.replace(self.versions_dir / version, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            excess -= 1
