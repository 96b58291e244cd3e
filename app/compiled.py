"""Compiling numeric kernels with numba, where it is installed.

Every kernel compiled here has a plain-Python source that is also its reference: the source is
what numba compiles, and tests compare the two paths. Kernels are compiled eagerly for one
signature (the cost, ~0.5 s or a cache load, is paid at import, not by the first request) and
without fastmath, so sums are added in the order written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

F = TypeVar("F", bound=Callable[..., object])

# Kernels that decay by half-lives take 2.0 as an argument (``two``) rather than writing it:
# LLVM rewrites ``pow(2.0, x)`` with a constant base as ``exp2(x)``, which differs from the
# ``pow`` that Python's ``2.0 ** x`` calls in the last bit for about one x in a thousand.
TWO = 2.0


def compile_kernel(function: F, signature: str) -> F | None:
    """``function`` compiled by numba for ``signature``; None when numba is not installed."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; this keeps numpy-only installs
        return None
    try:
        compiled = numba.njit(signature, cache=True, nogil=True)(function)
    except RuntimeError:  # pragma: no cover - needs an install with no writable cache directory
        # numba refuses cache=True when neither the package folder nor the user's cache folder
        # is writable (a read-only image without a home): compile afresh at every start instead.
        compiled = numba.njit(signature, nogil=True)(function)
    # The dispatcher is called exactly like ``function``, for the signature's types.
    return cast(F, compiled)
