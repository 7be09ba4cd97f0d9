"""The compression kernels on plain numpy arrays: palettize, quantize and prune one weight.

These are the functions the ``.mlpackage`` passes run on every weight, callable directly on
float16/float32 arrays of any rank (the work runs in the Rust engine with the GIL released; the
results do not depend on the number of threads). They compute what coremltools' static helpers
compute:

* :func:`palettize` — ``palettize_weights.grouped_channelwise_compress`` (plus the optional
  per-channel scale of ``enable_per_channel_scale``), in the iOS18 ``constexpr_lut_to_dense``
  layout;
* :func:`quantize` — ``linear_quantize_weights.blockwise_compress``;
* :func:`prune` — ``prune_weights.compress_by_magnitude`` / ``compress_by_nm_sparsity`` /
  ``compress_by_threshold``;
* :func:`lut_to_dense`, :func:`dequantize`, :func:`sparse_to_dense` — the inverse ops.

Arguments are validated like coremltools' configs (same exception types and messages). Where
coremltools would leave a weight uncompressed (a dimension not divisible by the group or block
size, too many unique values, ...), the function logs coremltools' warning and returns ``None``.

Granularity on a bare array: ``channel_axis`` / ``axis`` names the output-channel axis (default
0). ``per_channel`` and ``per_grouped_channel`` act on it; ``per_block`` with an ``int``
``block_size`` makes blocks of that size along the input axis (1 when the output axis is 0,
otherwise 0; as for a linear weight) and one block per output channel; ``block_size`` may also be a
list with one block size per axis (0 = the whole axis).
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _native
from .config import (
    CompressionGranularity,
    OpLinearQuantizerConfig,
    OpMagnitudePrunerConfig,
    OpPalettizerConfig,
    OpThresholdPrunerConfig,
)
from .errors import CompressionConfigError, MalformedPackageError

__all__ = [
    "LutParams",
    "QuantParams",
    "SparseParams",
    "dequantize",
    "lut_to_dense",
    "palettize",
    "prune",
    "quantize",
    "sparse_to_dense",
]

_logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


class LutParams(NamedTuple):
    """A palettized weight, as the iOS18 ops take it.

    ``lut`` has shape ``[1, …, C/G at the channel axis, …, 1, 2**nbits, cluster_dim]`` in the
    weight's dtype; ``indices`` is uint8 with the weight's shape (the channel axis divided by
    ``cluster_dim``); ``scale`` is the per-channel scale (the weight's shape with the channel axis
    set to 1) or ``None``; ``vector_axis`` is the channel axis for vector palettization, else
    ``None``.
    """

    lut: np.ndarray
    indices: np.ndarray
    scale: np.ndarray | None
    nbits: int
    vector_axis: int | None


class QuantParams(NamedTuple):
    """A linearly quantized weight (coremltools' ``QuantParams``): ``data`` holds the integer
    codes (int8 or uint8 containers, unpacked, the weight's shape), ``scale`` one value per block
    in the weight's dtype, ``offset`` the zero points (the codes' dtype) or ``None`` for symmetric
    signed quantization."""

    data: np.ndarray
    scale: np.ndarray
    offset: np.ndarray | None
    nbits: int

    @property
    def codes(self) -> np.ndarray:
        """The integer codes (same as ``data``)."""
        return self.data


class SparseParams(NamedTuple):
    """A pruned weight: the surviving values in row-major order, a boolean mask of the weight's
    shape (``True`` where a value survives), and the pruned weight as a dense array."""

    nonzero_data: np.ndarray
    mask: np.ndarray
    dense: np.ndarray


# --------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------


def _weight(array: Any) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ValueError(  # noqa: TRY004 - coremltools raises ValueError here
            f"Only numpy arrays are supported, but got {type(array)}"
        )
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"Only float16 and float32 weights are supported, but got dtype {array.dtype}"
        )
    # Not np.ascontiguousarray: it turns a rank-0 array into rank 1.
    return array if array.flags.c_contiguous else array.copy(order="C")


def _normalize_axis(axis: Any, rank: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, but got {axis!r}")
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(f"Invalid {name}. Should be in range [{-rank}, {rank}), but got {axis}")
    return axis + rank if axis < 0 else axis


def _as_float(value: Any) -> Any:
    """Ints are fine where coremltools' configs insist on floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


@contextlib.contextmanager
def _invalid_tensors() -> Iterator[None]:
    """The engine reports inconsistent op tensors as a malformed package; here they are the
    caller's arguments."""
    try:
        yield
    except MalformedPackageError as e:
        raise CompressionConfigError(str(e)) from None


def _skipped(result: Any) -> bool:
    if isinstance(result, str):
        _logger.warning(result)
        return True
    return False


# --------------------------------------------------------------------------------------
# Palettization
# --------------------------------------------------------------------------------------


def palettize(
    array: np.ndarray,
    nbits: int | None = None,
    mode: str = "kmeans",
    granularity: str | CompressionGranularity = "per_tensor",
    group_size: int = 32,
    channel_axis: int | None = None,
    cluster_dim: int = 1,
    enable_per_channel_scale: bool = False,
    lut_function: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> LutParams | None:
    """Palettize ``array`` as ``OpPalettizerConfig(...)`` would palettize a weight whose output
    channel axis is ``channel_axis`` (default 0).

    ``mode`` is ``"kmeans"`` (optimal 1-D k-means; bit-identical to coremltools for float16
    groups of at least 10,000 elements, never a worse fit elsewhere), ``"uniform"``, ``"unique"``
    or ``"custom"`` (``lut_function(group) -> (lut, indices)`` is called once per channel group,
    on the group with the channel axis moved first, as coremltools calls it). ``granularity`` is
    ``"per_tensor"`` or ``"per_grouped_channel"`` (groups of ``group_size`` channels).
    ``cluster_dim > 1`` makes vectors of that many consecutive channels. With
    ``enable_per_channel_scale`` the weight is first divided by its per-channel maximum magnitude,
    returned as ``scale``.

    Returns :class:`LutParams`, or ``None`` (with coremltools' warning logged) where coremltools
    would leave the weight alone.
    """
    config = OpPalettizerConfig(
        mode=mode,
        nbits=nbits,
        lut_function=lut_function,
        granularity=granularity,
        group_size=group_size,
        channel_axis=channel_axis,
        cluster_dim=cluster_dim,
        enable_per_channel_scale=enable_per_channel_scale,
    )
    w = _weight(array)
    if w.ndim == 0:
        raise ValueError("Palettization needs a weight of rank >= 1, but got a scalar.")
    axis = _normalize_axis(0 if channel_axis is None else channel_axis, w.ndim, "channel_axis")
    if config.cluster_dim < 1:
        raise ValueError(f"cluster_dim must be a positive integer, but got {config.cluster_dim}")
    per_group = config.granularity == CompressionGranularity.PER_GROUPED_CHANNEL
    if per_group and (
        isinstance(config.group_size, bool)
        or not isinstance(config.group_size, numbers.Integral)
        or config.group_size < 0
    ):
        raise ValueError(f"group_size must be a non-negative integer, but got {group_size}")
    groups = int(config.group_size) if per_group else 0

    if config.mode == "CUSTOM":
        return _palettize_custom(w, config.lut_function, axis, groups, config)

    result = _native.palettize_array(
        w,
        config.mode,
        config.nbits,
        axis,
        groups,
        config.cluster_dim,
        config.enable_per_channel_scale,
    )
    if _skipped(result):
        return None
    lut, indices, scale, used_nbits, vector_axis = result
    return LutParams(lut, indices, scale, int(used_nbits), vector_axis)


def _palettize_custom(
    w: np.ndarray,
    lut_function: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    axis: int,
    group_size: int,
    config: OpPalettizerConfig,
) -> LutParams | None:
    """CUSTOM mode: the user's function runs per channel group, in Python, on the groups
    coremltools would hand it; the results are stacked into the iOS18 layout."""
    scale = None
    if config.enable_per_channel_scale:
        scale = np.max(np.abs(w), axis=axis, keepdims=True)
        scale[scale == 0] = 1
        w = w / scale
    cluster_dim = config.cluster_dim
    channels = w.shape[axis]
    group_size = group_size or channels
    if group_size == 0 or channels % group_size != 0:
        _logger.warning(
            f"Can't perform palettization: The number of channels at {axis}th axis "
            f"({channels}) is not divisible by channel_group_size ({group_size})."
        )
        return None
    if group_size % cluster_dim != 0:
        _logger.warning(
            f"Can't perform palettization: The channel_group_size at {axis}th axis "
            f"({group_size}) is not divisible by cluster_dim ({cluster_dim})."
        )
        return None
    swapped = np.swapaxes(w, 0, axis)
    num_groups = channels // group_size
    luts, indices = [], []
    for g, group in enumerate(np.split(swapped, num_groups, axis=0)):
        out = lut_function(group)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(
                "lut_function must return a (lut, indices) pair of numpy arrays, "
                f"but got {type(out)} for channel group {g}"
            )
        lut, idx = (np.asarray(x) for x in out)
        luts.append(lut)
        indices.append(idx)
    try:
        lut = np.stack(luts, axis=0)
        idx = np.stack(indices, axis=0)
    except ValueError as e:
        raise ValueError(f"lut_function returned LUTs or indices of different shapes: {e}") from e
    palette = lut.shape[1] if lut.ndim >= 2 else 0
    nbits = int(np.ceil(np.log2(palette))) if palette > 0 else 0
    if palette != 2**nbits or nbits not in (1, 2, 3, 4, 6, 8):
        raise ValueError(
            "lut_function must return a LUT of 2**nbits entries with nbits in "
            f"(1, 2, 3, 4, 6, 8), but got {palette} entries"
        )
    entries = 2**nbits * cluster_dim
    if lut[0].size != entries:
        raise ValueError(
            f"lut_function must return a LUT of {entries} values (2**{nbits} entries of "
            f"cluster_dim={cluster_dim}), but got shape {lut.shape[1:]}"
        )
    expected = group_size * (w.size // channels) // cluster_dim
    if idx[0].size != expected:
        raise ValueError(
            f"lut_function must return {expected} indices per channel group, but got {idx[0].size}"
        )
    if not np.issubdtype(idx.dtype, np.integer) or (
        idx.size and (idx.min() < 0 or idx.max() >= palette)
    ):
        raise ValueError(
            f"lut_function must return integer indices in [0, {palette}), "
            f"but got dtype {idx.dtype} with range [{idx.min()}, {idx.max()}]"
        )
    target = list(swapped.shape)
    target[0] //= cluster_dim
    idx = idx.reshape(target)
    lut_shape = [1] * (w.ndim + 2)
    lut_shape[0] = num_groups
    lut_shape[-2] = 2**nbits
    lut_shape[-1] = cluster_dim
    lut = lut.reshape(lut_shape)
    if axis != 0:
        lut = np.swapaxes(lut, 0, axis)
        idx = np.swapaxes(idx, 0, axis)
    return LutParams(
        np.ascontiguousarray(lut),
        np.ascontiguousarray(idx.astype(np.uint8)),
        scale,
        nbits,
        axis if cluster_dim > 1 else None,
    )


def lut_to_dense(
    indices: np.ndarray | LutParams,
    lut: np.ndarray | None = None,
    vector_axis: int | None = None,
) -> np.ndarray:
    """The dense weight of an iOS18 ``constexpr_lut_to_dense`` (coremltools' ``lut_to_dense``).

    Either ``lut_to_dense(indices, lut, vector_axis)``, or ``lut_to_dense(params)`` with a
    :class:`LutParams`, which also multiplies the per-channel scale back in (in the weight's
    dtype, as ``constexpr_blockwise_shift_scale`` does).
    """
    scale = None
    if isinstance(indices, LutParams):
        if lut is not None:
            raise ValueError("pass either a LutParams or indices and lut, not both")
        params = indices
        indices, lut, vector_axis, scale = (
            params.indices,
            params.lut,
            params.vector_axis,
            params.scale,
        )
    if not isinstance(indices, np.ndarray) or not isinstance(lut, np.ndarray):
        raise TypeError("indices and lut must be numpy arrays")
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"indices must be an integer array, but got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() > 255):
        raise ValueError("indices must be in [0, 255]")
    if vector_axis is not None:
        vector_axis = int(vector_axis)
    with _invalid_tensors():
        dense = _native.lut_to_dense_array(
            np.ascontiguousarray(indices, dtype=np.uint8), np.ascontiguousarray(lut), vector_axis
        )
    if scale is not None:
        dense = dequantize(dense, scale)
    return dense


# --------------------------------------------------------------------------------------
# Linear quantization
# --------------------------------------------------------------------------------------


def _quant_block_sizes(
    shape: Sequence[int], config: OpLinearQuantizerConfig, axis: int | None
) -> list[int]:
    rank = len(shape)
    granularity = config.granularity
    block_size = config.block_size
    if granularity == CompressionGranularity.PER_BLOCK and not isinstance(block_size, int):
        if len(block_size) != rank:
            raise ValueError(
                "The block_size in config must has one element for each axis. However, there "
                f"are {len(block_size)} elements in block_size, but there are {rank} axes in the "
                "weight."
            )
        return [int(b) for b in block_size]
    blocks = [0] * rank
    if granularity == CompressionGranularity.PER_TENSOR or rank == 0:
        return blocks
    out_axis = _normalize_axis(0 if axis is None else axis, rank, "axis")
    blocks[out_axis] = 1
    if granularity == CompressionGranularity.PER_BLOCK:
        in_axis = 1 if out_axis == 0 else 0
        if in_axis < rank:
            blocks[in_axis] = int(block_size)
    return blocks


def quantize(
    array: np.ndarray,
    dtype: Any = "int8",
    mode: str = "linear_symmetric",
    granularity: str | CompressionGranularity = "per_channel",
    block_size: int | Sequence[int] = 32,
    axis: int | None = None,
) -> QuantParams | None:
    """Linearly quantize ``array`` as ``OpLinearQuantizerConfig(...)`` would quantize a weight
    whose output channel axis is ``axis`` (default 0): bit-identical to coremltools'
    ``linear_quantize_weights.blockwise_compress``.

    ``dtype`` is ``"int8"``, ``"uint8"``, ``"int4"`` or ``"uint4"`` (or a numpy/MIL type);
    ``mode`` ``"linear_symmetric"`` or ``"linear"``; ``granularity`` ``"per_tensor"``,
    ``"per_channel"`` or ``"per_block"``. Returns :class:`QuantParams`, or ``None`` (with
    coremltools' warning logged) when a dimension is not divisible by its block size.
    """
    config = OpLinearQuantizerConfig(
        mode=mode, dtype=dtype, granularity=granularity, block_size=block_size
    )
    w = _weight(array)
    blocks = _quant_block_sizes(w.shape, config, axis)
    result = _native.quantize_array(
        w, blocks, config.nbits, config.signed, config.mode == "LINEAR_SYMMETRIC"
    )
    if _skipped(result):
        return None
    data, scale, offset = result
    # coremltools' scale shape: one entry per axis (a rank-0 weight has a rank-0 scale).
    scale_shape = tuple(d // b if b > 0 else 1 for d, b in zip(w.shape, blocks))
    data, scale = data.reshape(w.shape), scale.reshape(scale_shape)
    if offset is not None:
        offset = offset.reshape(scale_shape)
    return QuantParams(data, scale, offset, config.nbits)


def dequantize(
    data: np.ndarray | QuantParams,
    scale: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """The value of an iOS18 ``constexpr_blockwise_shift_scale``: ``scale * (data - offset)``,
    scale and offset repeated blockwise (each axis of ``data`` a multiple of the scale's), every
    operation in the scale's dtype. Accepts a :class:`QuantParams` as the only argument."""
    if isinstance(data, QuantParams):
        if scale is not None:
            raise ValueError("pass either a QuantParams or data and scale, not both")
        data, scale, offset = data.data, data.scale, data.offset
    if not isinstance(data, np.ndarray) or not isinstance(scale, np.ndarray):
        raise TypeError("data and scale must be numpy arrays")
    if scale.ndim != data.ndim:
        scale = scale.reshape([1] * (data.ndim - scale.ndim) + list(scale.shape))
    if offset is not None:
        offset = np.asarray(offset)
        if offset.ndim != data.ndim:
            offset = offset.reshape([1] * (data.ndim - offset.ndim) + list(offset.shape))
        if offset.shape != scale.shape:
            offset = np.broadcast_to(offset, scale.shape)
        offset = np.ascontiguousarray(offset)
    with _invalid_tensors():
        dense = _native.dequantize_array(
            np.ascontiguousarray(data), np.ascontiguousarray(scale), offset
        )
    return dense.reshape(data.shape)


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


def prune(
    array: np.ndarray,
    target_sparsity: float | None = None,
    block_size: int | None = None,
    n_m_ratio: tuple[int, int] | None = None,
    dim: int | None = None,
    threshold: float | None = None,
    minimum_sparsity_percentile: float | None = None,
) -> SparseParams | None:
    """Prune ``array`` as coremltools' pruners do, bit for bit.

    * magnitude: ``target_sparsity`` (optionally block-structured with ``block_size`` along
      ``dim``, default 0), as ``OpMagnitudePrunerConfig``;
    * n:m: ``n_m_ratio=(n, m)`` along ``dim`` (default 1);
    * threshold: ``threshold`` (default 1e-12) and ``minimum_sparsity_percentile`` (default
      0.5), as ``OpThresholdPrunerConfig``.

    Returns :class:`SparseParams`, or ``None`` (with coremltools' warning logged) where
    coremltools would skip the weight.
    """
    w = _weight(array)
    if threshold is not None or minimum_sparsity_percentile is not None:
        if target_sparsity is not None or n_m_ratio is not None or block_size is not None:
            raise ValueError(
                '"threshold"/"minimum_sparsity_percentile" (threshold pruning) cannot be set '
                'together with "target_sparsity", "block_size" or "n_m_ratio" (magnitude pruning).'
            )
        if dim is not None:
            raise ValueError('"dim" can only be set along with "block_size" or "n_m_ratio".')
        tconfig = OpThresholdPrunerConfig(
            threshold=_as_float(1e-12 if threshold is None else threshold),
            minimum_sparsity_percentile=_as_float(
                0.5 if minimum_sparsity_percentile is None else minimum_sparsity_percentile
            ),
        )
        result = _native.prune_array(
            w,
            "threshold",
            threshold=tconfig.threshold,
            minimum_sparsity_percentile=tconfig.minimum_sparsity_percentile,
        )
    else:
        mconfig = OpMagnitudePrunerConfig(
            target_sparsity=_as_float(target_sparsity),
            block_size=block_size,
            n_m_ratio=None if n_m_ratio is None else tuple(n_m_ratio),
            dim=dim,
        )
        if mconfig.n_m_ratio is not None:
            n, m = (int(x) for x in mconfig.n_m_ratio)
            result = _native.prune_array(w, "n_m", n=n, m=m, dim=mconfig.dim)
        else:
            result = _native.prune_array(
                w,
                "magnitude",
                target_sparsity=mconfig.target_sparsity,
                block_size=mconfig.block_size,
                dim=mconfig.dim or 0,
            )
    if _skipped(result):
        return None
    mask, nonzero, dense = result
    return SparseParams(nonzero, mask.reshape(w.shape), dense.reshape(w.shape))


def sparse_to_dense(nonzero_data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The dense weight of ``constexpr_sparse_to_dense``: zeros, with ``nonzero_data`` written in
    row-major order where ``mask`` is set."""
    mask = np.asarray(mask) != 0
    nonzero_data = np.asarray(nonzero_data)
    if int(mask.sum()) != nonzero_data.size:
        raise ValueError(
            f"the mask has {int(mask.sum())} set values but there are {nonzero_data.size} "
            "nonzero values"
        )
    dense = np.zeros(mask.shape, dtype=nonzero_data.dtype)
    dense[mask] = nonzero_data.reshape(-1)
    return dense
