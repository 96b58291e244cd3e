"""Compiling numeric kernels with numba, where it is installed.

Every kernel compiled here has a plain-Python source that is also its reference: the source is
what numba compiles, and tests compare the two paths. Kernels are compiled eagerly for one
signature (the cost, ~0.5 s or a cache load, is paid at import, not by the first request) and
without fastmath, so sums are added in the order written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt

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


def unchecked(kernel: F) -> F:
    """``kernel``'s compiled code for its one signature, called without the dispatcher's type
    matching (numba's compiled entry point: it converts the arguments as the dispatcher's match
    would, without first typing each one), ~0.2 us less per call: for the one-event paths, which
    call a kernel per store per event with the store's own arrays.

    Nothing checks the arguments' types beyond an array's item size: a caller passes exactly
    the signature's (a read-only or non-contiguous array where the signature wants a writable or
    contiguous one is not refused). ``kernel`` itself where it is not a compiled dispatcher."""
    overloads = getattr(kernel, "overloads", None)
    if not overloads or len(overloads) != 1:
        return kernel
    (compiled,) = overloads.values()
    return cast(F, compiled.entry_point)


# The leaves of numpy's pairwise summation (``np.add.reduce`` of a contiguous float64 array).
PAIRWISE_BLOCK = 128


def pairwise_sum_python(values: npt.NDArray[np.float64], count: int) -> float:
    """``values[:count].sum()`` exactly as numpy adds a contiguous float64 array (its pairwise
    summation: blocks of at most ``PAIRWISE_BLOCK`` in eight running sums, larger spans halved at
    a multiple of eight), so a kernel's sum is the same double numpy's gives."""
    # The halving recursion, walked with an explicit stack (a compiled kernel cannot call
    # itself by name): each frame is a span and how far it got; results pass up in ``result``.
    starts = np.empty(64, dtype=np.int64)
    lengths = np.empty(64, dtype=np.int64)
    stages = np.empty(64, dtype=np.int64)
    lefts = np.empty(64, dtype=np.float64)
    top = 0
    starts[0] = 0
    lengths[0] = count
    stages[0] = 0
    result = 0.0
    while top >= 0:
        start, length = starts[top], lengths[top]
        if length < 8:
            total = 0.0
            for i in range(start, start + length):
                total += values[i]
            result = total
            top -= 1
        elif length <= PAIRWISE_BLOCK:
            r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
            r4, r5, r6, r7 = (
                values[start + 4], values[start + 5], values[start + 6], values[start + 7]
            )  # fmt: skip
            i = 8
            whole = length - length % 8
            while i < whole:
                at = start + i
                r0 += values[at]
                r1 += values[at + 1]
                r2 += values[at + 2]
                r3 += values[at + 3]
                r4 += values[at + 4]
                r5 += values[at + 5]
                r6 += values[at + 6]
                r7 += values[at + 7]
                i += 8
            total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < length:
                total += values[start + i]
                i += 1
            result = total
            top -= 1
        else:
            half = length // 2
            half -= half % 8
            if stages[top] == 0:
                stages[top] = 1
                top += 1
                starts[top] = start
                lengths[top] = half
                stages[top] = 0
            elif stages[top] == 1:
                stages[top] = 2
                lefts[top] = result
                top += 1
                starts[top] = start + half
                lengths[top] = length - half
                stages[top] = 0
            else:
                result = lefts[top] + result
                top -= 1
    return result


pairwise_sum = (
    compile_kernel(pairwise_sum_python, "float64(float64[::1], int64)") or pairwise_sum_python
)
