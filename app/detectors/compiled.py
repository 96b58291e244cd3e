"""Kept for imports by the detectors: the kernel compiler lives in ``app.compiled``, where the
online stores (imported by ``app.detectors.base``) can reach it without an import cycle."""

from __future__ import annotations

from app.compiled import compile_kernel, unchecked

__all__ = ["compile_kernel", "unchecked"]
