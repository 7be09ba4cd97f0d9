"""Distinct values of an array, the one way the suites count and compare them.

numpy 2.4.6's default (SIMD) sort of float16 arrays is wrong on CPUs with AVX512_ICL for arrays of
tens of thousands of elements with many repeated values, and `np.unique` inherits the error
(docs/DECISIONS.md, "numpy's float16 sort"). Here values are widened to float32 (exact for
float16) and sorted with the stable sort, which takes another code path; ±0 count as one value
and every NaN as one, as `np.unique` does where it is right. tests/test_distinct.py checks this
against a set-based count, with and without numpy's AVX512_ICL sort.
"""

from __future__ import annotations

import numpy as np


def _sorted_wide(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    if flat.dtype == np.float16:
        flat = flat.astype(np.float32)
    return np.sort(flat, kind="stable")


def sorted_values(values: np.ndarray) -> np.ndarray:
    """All values in ascending order (NaNs last), in the input's dtype."""
    return _sorted_wide(values).astype(np.asarray(values).dtype)


def distinct(values: np.ndarray, *, return_counts: bool = False):
    """Sorted distinct values in the input's dtype, and with `return_counts` how often each occurs."""
    dtype = np.asarray(values).dtype
    wide = _sorted_wide(values)
    if wide.size == 0:
        empty = wide.astype(dtype)
        return (empty, np.zeros(0, dtype=np.int64)) if return_counts else empty
    new = np.empty(wide.size, dtype=bool)
    new[0] = True
    np.not_equal(wide[1:], wide[:-1], out=new[1:])
    if wide.dtype.kind in "fc":
        nan = np.isnan(wide)
        # NaN != NaN: keep only the first of them, like np.unique(equal_nan=True).
        new[1:] &= ~(nan[1:] & nan[:-1])
    starts = np.flatnonzero(new)
    unique = wide[starts].astype(dtype)
    if not return_counts:
        return unique
    counts = np.diff(np.append(starts, wide.size))
    return unique, counts


def distinct_count(values: np.ndarray) -> int:
    """How many distinct values an array holds."""
    return int(distinct(values).size)
