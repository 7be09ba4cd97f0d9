"""Functional access to the native calibration kernels (numpy arrays or CPU torch tensors).

- :class:`Hessian` accumulates ``H = (2/n)·Σ x·xᵀ`` from activation batches;
- :func:`gptq` and :func:`sparsegpt` compress one weight matrix given its Hessian;
- :func:`weighted_kmeans` palettizes groups of values by exact weighted 1-D k-means.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _native
from ._arrays import as_f32


class Hessian:
    """A running layer Hessian with coremltools' normalisation (``n`` counts samples)."""

    def __init__(self, columns: int):
        self.h = np.zeros((columns, columns), dtype=np.float32)
        self.nsamples = 0.0

    @property
    def columns(self) -> int:
        return self.h.shape[0]

    def add(self, x: Any, samples: float | None = None) -> None:
        """Adds activations ``x [..., columns]`` (rows are tokens); ``samples`` defaults to the
        leading dimension of a 3-D input and 1 for a 2-D one (coremltools' counting)."""
        a = as_f32(x, "activations")
        if samples is None:
            samples = a.shape[0] if a.ndim >= 3 else 1
        a = a.reshape(-1, self.columns)
        self.nsamples = _native.hessian_accumulate(self.h, a, float(self.nsamples), float(samples))


def _dict(res: dict) -> dict:
    return {k: v for k, v in res.items()}


def gptq(
    weight: Any,
    hessian: Any,
    n_bits: int = 8,
    *,
    symmetric: bool = True,
    per_channel: bool = True,
    normal_float: bool = False,
    block_size: int | None = None,
    act_order: bool = False,
    damp: float = 0.01,
    group: int = 128,
) -> dict:
    """GPTQ of a ``[rows, cols]`` weight. Returns ``weight`` (on the grid), ``scale`` and
    ``zero_point`` (``[rows, n_blocks]``, unsigned-grid zero points) and ``loss``."""
    w = as_f32(weight, "weight")
    h = hessian.h if isinstance(hessian, Hessian) else as_f32(hessian, "hessian")
    return _dict(
        _native.gptq(
            w,
            h,
            int(n_bits),
            bool(symmetric),
            bool(per_channel),
            bool(normal_float),
            None if block_size is None else int(block_size),
            bool(act_order),
            float(damp),
            int(group),
        )
    )


def sparsegpt(
    weight: Any,
    hessian: Any,
    target_sparsity: float = 0.5,
    *,
    n_m: tuple[int, int] | None = None,
    n_bits: int | None = None,
    symmetric: bool = True,
    per_channel: bool = True,
    normal_float: bool = False,
    damp: float = 0.01,
    group: int = 128,
) -> dict:
    """SparseGPT of a ``[rows, cols]`` weight (optionally quantizing the survivors)."""
    w = as_f32(weight, "weight")
    h = hessian.h if isinstance(hessian, Hessian) else as_f32(hessian, "hessian")
    nm = None if n_m is None else (int(n_m[0]), int(n_m[1]))
    return _dict(
        _native.sparsegpt(
            w,
            h,
            float(target_sparsity),
            nm,
            None if n_bits is None else int(n_bits),
            bool(symmetric),
            bool(per_channel),
            bool(normal_float),
            float(damp),
            int(group),
        )
    )


def weighted_kmeans(
    values: Any, weights: Any | None, n_groups: int, k: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact weighted 1-D k-means of ``n_groups`` contiguous equal groups of ``values``.

    Returns ``(dense, luts [n_groups, k], weighted_sse)``; LUTs are ascending and zero-padded
    when a group has fewer than ``k`` distinct values."""
    v = as_f32(values, "values").reshape(-1)
    w = np.ones_like(v) if weights is None else as_f32(weights, "weights").reshape(-1)
    return _native.weighted_palettize(v, w, int(n_groups), int(k))
