"""``coreml_compress.kernels`` on bare numpy arrays against coremltools' own static helpers.

Exact where coremltools is deterministic: uniform and unique palettization, k-means on float16
groups of at least 10,000 values (coremltools' kmeans1d), custom LUT functions, linear
quantization and all three pruners give the same bits. Where coremltools uses scikit-learn
(float32, small groups, vectors) our squared error is never larger.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import coremltools.optimize.coreml as cto
import numpy as np
import pytest
from coreml_compress import CompressionConfigError, kernels
from coremltools.optimize.coreml._quantization_passes import (
    linear_quantize_weights as ct_quant,
)
from coremltools.optimize.coreml._quantization_passes import (
    palettize_weights as ct_pal,
)
from coremltools.optimize.coreml._quantization_passes import (
    prune_weights as ct_prune,
)

DTYPES = [np.float16, np.float32]
_BITS = {np.dtype(np.float16): np.uint16, np.dtype(np.float32): np.uint32}


def rand(
    shape: tuple[int, ...], dtype: Any, seed: int = 0, distinct: int | None = None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if distinct is not None:
        palette = rng.standard_normal(distinct)
        return palette[rng.integers(0, distinct, size=shape)].astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_bits_equal(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    if a.dtype in _BITS:
        np.testing.assert_array_equal(a.view(_BITS[a.dtype]), b.view(_BITS[b.dtype]))
    else:
        np.testing.assert_array_equal(a, b)


def assert_same_lut(ours: kernels.LutParams, theirs: Any) -> None:
    assert theirs is not None
    assert_bits_equal(ours.lut, theirs.lut)
    assert ours.indices.dtype == np.uint8
    np.testing.assert_array_equal(ours.indices, theirs.indices.astype(np.uint8))
    assert ours.vector_axis == theirs.vector_axis
    assert ours.nbits == int(np.log2(theirs.lut.shape[-2]))


def sse(w: np.ndarray, dense: np.ndarray) -> float:
    return float(np.sum((w.astype(np.float64) - dense.astype(np.float64)) ** 2))


# --------------------------------------------------------------------------------------
# Palettization
# --------------------------------------------------------------------------------------

# (shape, channel_axis, group_size (0 = per tensor), cluster_dim)
LAYOUTS = [
    ((16, 24), 0, 0, 1),
    ((16, 24), 0, 4, 1),
    ((8, 12), 1, 6, 1),
    ((4, 6, 3, 3), 0, 2, 1),
    ((4, 6, 3, 3), 1, 3, 1),
    ((3, 8, 5), 2, 0, 1),
    ((40,), 0, 10, 1),
    ((2, 3, 4, 4, 2), 3, 2, 1),
    ((16, 24), 0, 8, 2),
    ((8, 12, 2), 1, 6, 3),
]


def _granularity(group_size: int) -> dict[str, Any]:
    if group_size:
        return {"granularity": "per_grouped_channel", "group_size": group_size}
    return {"granularity": "per_tensor"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis", "group", "cd"), [lay for lay in LAYOUTS if lay[3] == 1])
@pytest.mark.parametrize("nbits", [1, 3, 4, 8])
def test_uniform_bit_identical(
    dtype: Any, shape: Any, axis: int, group: int, cd: int, nbits: int
) -> None:
    w = rand(shape, dtype, seed=nbits)
    theirs = ct_pal.grouped_channelwise_compress(w, "UNIFORM", nbits, axis, group)
    ours = kernels.palettize(
        w, nbits=nbits, mode="uniform", channel_axis=axis, **_granularity(group)
    )
    assert_same_lut(ours, theirs)
    assert ours.scale is None


@pytest.mark.parametrize("nbits", [2, 4, 8])
@pytest.mark.parametrize("spread", [0.02, 300.0])
def test_uniform_large_fp16_group_bit_identical(nbits: int, spread: float) -> None:
    # Groups of 2**18 fp16 values and more take their indices from a table of all bit patterns.
    w = (rand((512, 1024), np.float32, seed=nbits) * spread).astype(np.float16)
    w[0, :4] = [0.0, -0.0, 6e-8, -6e-8]
    theirs = ct_pal.grouped_channelwise_compress(w, "UNIFORM", nbits, 0, 0)
    assert_same_lut(kernels.palettize(w, nbits=nbits, mode="uniform"), theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis", "group", "cd"), LAYOUTS)
@pytest.mark.parametrize("distinct", [2, 5, 13, 200])
def test_unique_bit_identical(
    dtype: Any, shape: Any, axis: int, group: int, cd: int, distinct: int
) -> None:
    w = rand(shape, dtype, seed=distinct, distinct=distinct)
    theirs = ct_pal.grouped_channelwise_compress(w, "UNIQUE", None, axis, group, None, cd)
    ours = kernels.palettize(
        w, mode="unique", channel_axis=axis, cluster_dim=cd, **_granularity(group)
    )
    if theirs is None:  # too many unique vectors for 8 bits: both skip
        assert ours is None
        return
    assert_same_lut(ours, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis", "group", "cd"), LAYOUTS)
@pytest.mark.parametrize("seed", [1, 2])
def test_unique_with_both_zeros_bit_identical(
    dtype: Any, shape: Any, axis: int, group: int, cd: int, seed: int
) -> None:
    # 0.0 and -0.0 are one value to np.unique, which keeps whichever its argsort puts first.
    rng = np.random.default_rng(seed)
    w = rng.choice(np.array([0.0, -0.0, 0.5, -1.25, 3.0], dtype=dtype), size=shape)
    theirs = ct_pal.grouped_channelwise_compress(w, "UNIQUE", None, axis, group, None, cd)
    ours = kernels.palettize(
        w, mode="unique", channel_axis=axis, cluster_dim=cd, **_granularity(group)
    )
    assert_same_lut(ours, theirs)


@pytest.mark.parametrize(
    ("shape", "axis", "group", "nbits"),
    [
        ((128, 160), 0, 0, 4),  # 20,480 values in one group
        ((256, 96), 0, 128, 2),  # two groups of 12,288
        ((40, 512), 1, 256, 6),  # two groups of 10,240 along axis 1
        ((64, 40, 8), 0, 32, 3),  # two groups of 10,240, rank 3
        ((100, 100), 0, 0, 8),
    ],
)
def test_kmeans_fp16_large_groups_identical(shape: Any, axis: int, group: int, nbits: int) -> None:
    pytest.importorskip("kmeans1d")  # coremltools' exact path; scikit-learn otherwise
    w = rand(shape, np.float16, seed=nbits, distinct=None)
    theirs = ct_pal.grouped_channelwise_compress(w, "KMEANS", nbits, axis, group)
    ours = kernels.palettize(w, nbits=nbits, channel_axis=axis, **_granularity(group))
    assert_same_lut(ours, theirs)


@pytest.mark.parametrize(
    ("shape", "dtype", "axis", "group", "cd", "nbits"),
    [
        ((64, 48), np.float32, 0, 0, 1, 4),
        ((64, 48), np.float32, 0, 16, 1, 3),
        ((32, 16, 3), np.float32, 1, 8, 1, 2),
        ((32, 40), np.float16, 0, 8, 1, 4),  # float16 groups under 10,000 values
        ((32, 40), np.float16, 0, 0, 2, 3),
        ((48, 20), np.float32, 0, 24, 4, 2),
        ((12, 32), np.float32, 1, 0, 2, 4),
    ],
)
def test_kmeans_never_worse_than_coremltools(
    shape: Any, dtype: Any, axis: int, group: int, cd: int, nbits: int
) -> None:
    w = rand(shape, dtype, seed=7)
    theirs = ct_pal.grouped_channelwise_compress(w, "KMEANS", nbits, axis, group, None, cd)
    ours = kernels.palettize(
        w, nbits=nbits, channel_axis=axis, cluster_dim=cd, **_granularity(group)
    )
    assert ours.lut.shape == theirs.lut.shape
    assert ours.indices.shape == theirs.indices.shape
    assert ours.vector_axis == theirs.vector_axis
    ours_sse = sse(w, kernels.lut_to_dense(ours))
    theirs_sse = sse(w, ct_pal.decompress(theirs))
    slack = 1.01 if cd > 1 else 1.0 + 1e-9  # vector k-means is a local optimum on both sides
    assert ours_sse <= theirs_sse * slack, (ours_sse, theirs_sse)


def _minilm_weight(name: str) -> np.ndarray:
    import models

    safetensors = pytest.importorskip("safetensors.numpy")
    return safetensors.load_file(str(models.minilm_safetensors_path()))[name].astype(np.float16)


@pytest.mark.parametrize(
    "weight",
    [
        # Few levels: at most 144 distinct 2-vectors, where one k-means++ start gets trapped.
        *(lambda s=s: rand((64, 1536), np.float16, seed=s, distinct=12) for s in range(3)),
        lambda: (np.random.default_rng(5).standard_t(3, (64, 1536)) * 0.01).astype(np.float16),
        lambda: _minilm_weight("encoder.layer.0.attention.self.query.weight"),
    ],
    ids=["levels-0", "levels-1", "levels-2", "heavy-tailed", "minilm"],
)
def test_vector_kmeans_never_worse(weight: Any) -> None:
    w = weight()
    theirs = ct_pal.grouped_channelwise_compress(w, "KMEANS", 4, 0, 0, None, 2)
    ours = kernels.palettize(w, nbits=4, channel_axis=0, cluster_dim=2)
    ours_sse = sse(w, kernels.lut_to_dense(ours))
    theirs_sse = sse(w, ct_pal.decompress(theirs))
    assert ours_sse <= theirs_sse * (1 + 1e-9), (ours_sse, theirs_sse)


def _coremltools_per_channel_scale(
    w: np.ndarray, mode: str, nbits: Any, axis: int, group: int
) -> tuple[Any, np.ndarray]:
    """What palettize_weights.transform_op does with enable_per_channel_scale=True."""
    w = w.copy()
    scale = np.max(np.abs(w), axis=axis, keepdims=True)
    scale[scale == 0] = 1
    w /= scale
    return ct_pal.grouped_channelwise_compress(w, mode, nbits, axis, group), scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis", "group"), [((16, 24), 0, 0), ((8, 12, 3), 1, 4), ((6, 10), 0, 3)]
)
def test_per_channel_scale(dtype: Any, shape: Any, axis: int, group: int) -> None:
    w = rand(shape, dtype, seed=3)
    w[1 if axis else 0] = 0  # a channel slice of zeros: scale 1 there
    theirs, scale = _coremltools_per_channel_scale(w, "UNIFORM", 4, axis, group)
    ours = kernels.palettize(
        w,
        nbits=4,
        mode="uniform",
        channel_axis=axis,
        enable_per_channel_scale=True,
        **_granularity(group),
    )
    assert_same_lut(ours, theirs)
    assert_bits_equal(ours.scale, scale)
    dense = kernels.lut_to_dense(ours)
    assert_bits_equal(dense, ct_pal.decompress(theirs) * scale)


def _custom_lut(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic 2-bit LUT: the group's quartiles; indices of the nearest entry."""
    flat = group.reshape(-1)
    lut = np.quantile(flat.astype(np.float32), [0.1, 0.4, 0.6, 0.9]).astype(group.dtype)
    indices = np.argmin(np.abs(flat[:, None].astype(np.float32) - lut[None, :]), axis=1)
    return lut, indices.astype(np.uint8)


def _custom_vector_lut(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cluster_dim 2 along axis 0: the LUT holds the first 4 vectors, indices cycle 0..3."""
    vectors = np.swapaxes(group, 0, -1).reshape(-1, 2)
    return vectors[:4].copy(), (np.arange(len(vectors)) % 4).astype(np.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis", "group"), [((16, 24), 0, 0), ((16, 24), 0, 4), ((6, 12, 2), 1, 3)]
)
def test_custom_matches_grouped_channelwise_compress(
    dtype: Any, shape: Any, axis: int, group: int
) -> None:
    w = rand(shape, dtype, seed=11)
    calls: list[tuple[int, ...]] = []

    def fn(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(g.shape)
        return _custom_lut(g)

    theirs = ct_pal.grouped_channelwise_compress(w, "CUSTOM", None, axis, group, _custom_lut)
    ours = kernels.palettize(
        w, mode="custom", lut_function=fn, channel_axis=axis, **_granularity(group)
    )
    assert_same_lut(ours, theirs)
    expected_groups = shape[axis] // (group or shape[axis])
    assert len(calls) == expected_groups


def test_custom_vector_matches_coremltools() -> None:
    w = rand((8, 6), np.float32, seed=12)
    theirs = ct_pal.grouped_channelwise_compress(w, "CUSTOM", None, 0, 4, _custom_vector_lut, 2)
    ours = kernels.palettize(
        w,
        mode="custom",
        lut_function=_custom_vector_lut,
        granularity="per_grouped_channel",
        group_size=4,
        cluster_dim=2,
    )
    assert_same_lut(ours, theirs)


def test_custom_with_per_channel_scale() -> None:
    w = rand((8, 10), np.float16, seed=13)
    s = np.max(np.abs(w), axis=0, keepdims=True)
    theirs = ct_pal.grouped_channelwise_compress(w / s, "CUSTOM", None, 0, 0, _custom_lut)
    ours = kernels.palettize(
        w, mode="custom", lut_function=_custom_lut, enable_per_channel_scale=True
    )
    assert_same_lut(ours, theirs)
    assert_bits_equal(ours.scale, s)


def test_custom_bad_results_are_refused() -> None:
    w = rand((4, 8), np.float32)
    with pytest.raises(ValueError, match="2\\*\\*nbits entries"):
        kernels.palettize(
            w,
            mode="custom",
            lut_function=lambda g: (np.zeros(5, g.dtype), np.zeros(g.size, np.uint8)),
        )
    with pytest.raises(ValueError, match="indices per channel group"):
        kernels.palettize(
            w, mode="custom", lut_function=lambda g: (np.zeros(4, g.dtype), np.zeros(3, np.uint8))
        )
    with pytest.raises(ValueError, match="in \\[0, 4\\)"):
        kernels.palettize(
            w, mode="custom", lut_function=lambda g: (np.zeros(4, g.dtype), np.full(g.size, 7))
        )
    with pytest.raises(ValueError, match="pair"):
        kernels.palettize(w, mode="custom", lut_function=lambda g: None)


def test_lut_to_dense_matches_coremltools() -> None:
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        for shape, lut_shape, axis in [
            ((6, 4), (2, 1, 16, 1), None),
            ((4, 6, 2), (1, 3, 1, 4, 1), None),
            ((4, 3), (2, 1, 8, 2), 0),
            ((2, 5, 3), (1, 1, 3, 2, 4), -1),
        ]:
            indices = rng.integers(0, lut_shape[-2], size=shape).astype(np.uint8)
            lut = rng.standard_normal(lut_shape).astype(dtype)
            theirs = ct_pal.decompress(ct_pal_params(indices, lut, axis))
            assert_bits_equal(kernels.lut_to_dense(indices, lut, axis), theirs)
    int_lut = np.arange(-8, 8, dtype=np.int8).reshape(1, 1, 16, 1)
    idx = rng.integers(0, 16, size=(3, 5)).astype(np.uint8)
    np.testing.assert_array_equal(kernels.lut_to_dense(idx, int_lut), int_lut.reshape(-1)[idx])


def ct_pal_params(indices: np.ndarray, lut: np.ndarray, axis: Any) -> Any:
    from coremltools.optimize import _utils

    return _utils.LutParams(indices=indices, lut=lut, vector_axis=axis)


def test_lut_to_dense_rejects_bad_input() -> None:
    with pytest.raises(CompressionConfigError, match="2 more dim"):
        kernels.lut_to_dense(np.zeros((4, 4), np.uint8), np.zeros((1, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        kernels.lut_to_dense(np.full((2, 2), 300), np.zeros((1, 1, 4, 1), np.float32))
    with pytest.raises(TypeError):
        kernels.lut_to_dense(np.zeros((2, 2), np.uint8), np.zeros((1, 1, 4, 1), np.float64))


# --------------------------------------------------------------------------------------
# Linear quantization
# --------------------------------------------------------------------------------------

QUANT_CASES = [
    # (shape, granularity, block_size, axis, expected coremltools block_sizes)
    ((16, 32), "per_tensor", 32, None, [0, 0]),
    ((16, 32), "per_channel", 32, None, [1, 0]),
    ((16, 32), "per_channel", 32, 1, [0, 1]),
    ((16, 32), "per_block", 8, None, [1, 8]),
    ((16, 32), "per_block", 4, 1, [4, 1]),
    ((8, 12, 3, 3), "per_channel", 32, None, [1, 0, 0, 0]),
    ((8, 12, 3, 3), "per_block", 6, None, [1, 6, 0, 0]),
    ((8, 12, 3, 3), "per_block", [2, 4, 0, 3], None, [2, 4, 0, 3]),
    ((3, 5, 16), "per_channel", 32, -1, [0, 0, 1]),
    ((40,), "per_channel", 32, None, [1]),
    ((40,), "per_block", 8, None, [1]),
    ((), "per_tensor", 32, None, []),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "granularity", "block_size", "axis", "blocks"), QUANT_CASES)
@pytest.mark.parametrize("qdtype", ["int8", "uint8", "int4", "uint4"])
@pytest.mark.parametrize("mode", ["linear_symmetric", "linear"])
def test_quantize_bit_identical(
    dtype: Any,
    shape: Any,
    granularity: str,
    block_size: Any,
    axis: Any,
    blocks: list[int],
    qdtype: str,
    mode: str,
) -> None:
    w = rand(shape, dtype, seed=len(shape)) * 3 + 0.5
    w = np.asarray(w, dtype=dtype)
    theirs = ct_quant.blockwise_compress(
        w, int(qdtype[-1]), mode.upper(), not qdtype.startswith("u"), blocks
    )
    ours = kernels.quantize(
        w, dtype=qdtype, mode=mode, granularity=granularity, block_size=block_size, axis=axis
    )
    expected_dtype = np.uint8 if qdtype.startswith("u") else np.int8
    assert ours.data.dtype == expected_dtype
    assert ours.nbits == int(theirs.nbits)
    np.testing.assert_array_equal(ours.data, theirs.data.astype(expected_dtype))
    assert_bits_equal(ours.scale, np.asarray(theirs.scale).reshape(ours.scale.shape))
    assert ours.scale.shape == np.asarray(theirs.scale).shape
    if theirs.offset is None:
        assert ours.offset is None
    else:
        assert ours.offset.dtype == expected_dtype
        np.testing.assert_array_equal(ours.offset, np.asarray(theirs.offset).astype(expected_dtype))
    # Dequantization is the iOS18 constexpr_blockwise_shift_scale value.
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import (
        constexpr_blockwise_shift_scale,
    )

    offset = None if theirs.offset is None else np.asarray(theirs.offset).astype(expected_dtype)
    expected = constexpr_blockwise_shift_scale.decompress(
        theirs.data.astype(expected_dtype), np.asarray(theirs.scale), offset
    )
    assert_bits_equal(kernels.dequantize(ours), np.asarray(expected, dtype=dtype))


def test_quantize_special_values() -> None:
    w = np.zeros((4, 8), np.float16)
    w[1] = 1e-7  # scale underflows in fp16
    w[2, 3] = np.nan
    for mode in ("linear", "linear_symmetric"):
        for qdtype in ("int8", "uint4"):
            theirs = ct_quant.blockwise_compress(
                w, int(qdtype[-1]), mode.upper(), qdtype == "int8", [1, 0]
            )
            ours = kernels.quantize(w, dtype=qdtype, mode=mode)
            np.testing.assert_array_equal(ours.data, theirs.data.astype(ours.data.dtype))
            assert_bits_equal(ours.scale, np.asarray(theirs.scale).reshape(ours.scale.shape))


def test_quantize_skips_like_coremltools(caplog: pytest.LogCaptureFixture) -> None:
    w = rand((16, 30), np.float32)
    assert ct_quant.blockwise_compress(w, 8, "LINEAR", True, [1, 8]) is None
    with caplog.at_level(logging.WARNING):
        assert kernels.quantize(w, granularity="per_block", block_size=8) is None
    assert "not divisible by block size 8" in caplog.text


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


def assert_same_sparse(ours: kernels.SparseParams, theirs: Any, w: np.ndarray) -> None:
    assert theirs is not None
    assert_bits_equal(ours.nonzero_data, theirs.nonzero_data)
    mask = np.unpackbits(theirs.mask, count=w.size, bitorder="little").reshape(w.shape).astype(bool)
    assert ours.mask.dtype == np.bool_
    np.testing.assert_array_equal(ours.mask, mask)
    assert_bits_equal(ours.dense, ct_prune.decompress(theirs))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 24), (8, 6, 3, 3), (50,), (2, 3, 4, 5, 2)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_magnitude_identical(dtype: Any, shape: Any, sparsity: float) -> None:
    w = rand(shape, dtype, seed=int(sparsity * 100))
    theirs = ct_prune.compress_by_magnitude(w, sparsity)
    assert_same_sparse(kernels.prune(w, target_sparsity=sparsity), theirs, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "block", "dim"),
    [((16, 24), 2, 0), ((16, 24), 4, 1), ((10, 6, 3, 3), 3, 0), ((6, 10, 2), 4, 1), ((9, 8), 4, 0)],
)
@pytest.mark.parametrize("sparsity", [0.25, 0.6])
def test_block_magnitude_identical(
    dtype: Any, shape: Any, block: int, dim: int, sparsity: float
) -> None:
    w = rand(shape, dtype, seed=block)
    theirs = ct_prune.compress_by_magnitude(w, sparsity, block, dim)
    assert_same_sparse(
        kernels.prune(w, target_sparsity=sparsity, block_size=block, dim=dim), theirs, w
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "ratio", "dim"),
    [
        ((16, 24), (2, 4), 1),
        ((16, 24), (1, 4), 0),
        ((8, 10, 3, 3), (3, 4), 1),
        ((7, 9, 2), (2, 3), 0),
        ((16, 16), (4, 8), 1),
    ],
)
def test_n_m_identical(dtype: Any, shape: Any, ratio: tuple[int, int], dim: int) -> None:
    w = rand(shape, dtype, seed=ratio[1])
    theirs = ct_prune.compress_by_nm_sparsity(w, ratio, dim)
    assert_same_sparse(kernels.prune(w, n_m_ratio=ratio, dim=dim), theirs, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("threshold", "minimum"), [(0.5, 0.2), (1e-12, 0.0), (1.0, 0.3), (0.8, 0.0)]
)
def test_threshold_identical(dtype: Any, threshold: float, minimum: float) -> None:
    w = rand((12, 20), dtype, seed=9)
    w[0, :5] = 0
    theirs = ct_prune.compress_by_threshold(w, threshold, minimum)
    assert_same_sparse(
        kernels.prune(w, threshold=threshold, minimum_sparsity_percentile=minimum), theirs, w
    )


def test_pruning_skips_like_coremltools(caplog: pytest.LogCaptureFixture) -> None:
    w = rand((6, 8), np.float32)
    with caplog.at_level(logging.WARNING):
        assert ct_prune.compress_by_threshold(w, 0.01, 0.9) is None
        assert kernels.prune(w, threshold=0.01, minimum_sparsity_percentile=0.9) is None
        assert ct_prune.compress_by_magnitude(w, 0.5, 4, 0) is None
        assert kernels.prune(w, target_sparsity=0.5, block_size=4) is None
        assert ct_prune.compress_by_nm_sparsity(w, (2, 5), 1) is None
        assert kernels.prune(w, n_m_ratio=(2, 5)) is None
    assert "minimum_sparsity_percentile 0.9. Skipped." in caplog.text
    assert "block_size > channel / 2" in caplog.text


# --------------------------------------------------------------------------------------
# Validation: coremltools' exception types and messages
# --------------------------------------------------------------------------------------


def _message(fn: Any) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda w: kernels.palettize(w, nbits=5), lambda: cto.OpPalettizerConfig(nbits=5)),
        (lambda w: kernels.palettize(w), lambda: cto.OpPalettizerConfig()),
        (
            lambda w: kernels.palettize(w, nbits=4, mode="unique"),
            lambda: cto.OpPalettizerConfig(nbits=4, mode="unique"),
        ),
        (
            lambda w: kernels.palettize(w, nbits=4, mode="bogus"),
            lambda: cto.OpPalettizerConfig(nbits=4, mode="bogus"),
        ),
        (
            lambda w: kernels.palettize(w, mode="custom"),
            lambda: cto.OpPalettizerConfig(mode="custom"),
        ),
        (
            lambda w: kernels.palettize(w, nbits=4, granularity="per_channel"),
            lambda: cto.OpPalettizerConfig(nbits=4, granularity="per_channel"),
        ),
        (
            lambda w: kernels.quantize(w, dtype="int2"),
            lambda: cto.OpLinearQuantizerConfig(dtype="int2"),
        ),
        (
            lambda w: kernels.quantize(w, mode="kmeans"),
            lambda: cto.OpLinearQuantizerConfig(mode="kmeans"),
        ),
        (
            lambda w: kernels.quantize(w, granularity="per_block", block_size=-1),
            lambda: cto.OpLinearQuantizerConfig(granularity="per_block", block_size=-1),
        ),
        (
            lambda w: kernels.prune(w, target_sparsity=1.5),
            lambda: cto.OpMagnitudePrunerConfig(target_sparsity=1.5),
        ),
        (lambda w: kernels.prune(w), lambda: cto.OpMagnitudePrunerConfig()),
        (
            lambda w: kernels.prune(w, target_sparsity=0.5, block_size=1),
            lambda: cto.OpMagnitudePrunerConfig(target_sparsity=0.5, block_size=1),
        ),
        (
            lambda w: kernels.prune(w, n_m_ratio=(5, 4)),
            lambda: cto.OpMagnitudePrunerConfig(n_m_ratio=(5, 4)),
        ),
        (
            lambda w: kernels.prune(w, target_sparsity=0.5, dim=1),
            lambda: cto.OpMagnitudePrunerConfig(target_sparsity=0.5, dim=1),
        ),
        (
            lambda w: kernels.prune(w, threshold=-1.0),
            lambda: cto.OpThresholdPrunerConfig(threshold=-1.0),
        ),
        (
            lambda w: kernels.prune(w, minimum_sparsity_percentile=2.0),
            lambda: cto.OpThresholdPrunerConfig(minimum_sparsity_percentile=2.0),
        ),
    ],
)
def test_validation_messages_match_coremltools(ours: Any, theirs: Any) -> None:
    w = rand((8, 8), np.float32)
    ours_type, ours_msg = _message(lambda: ours(w))
    theirs_type, theirs_msg = _message(theirs)
    assert issubclass(ours_type, theirs_type), (ours_type, theirs_type)
    assert ours_msg == theirs_msg


def test_invalid_arrays() -> None:
    with pytest.raises(ValueError, match="Only numpy arrays are supported"):
        kernels.palettize([[1.0, 2.0]], nbits=1)
    with pytest.raises(TypeError, match="float16 and float32"):
        kernels.quantize(np.zeros((4, 4), np.float64))
    with pytest.raises(TypeError, match="float16 and float32"):
        kernels.prune(np.zeros((4, 4), np.int8), target_sparsity=0.5)
    with pytest.raises(ValueError, match="Invalid channel_axis"):
        kernels.palettize(rand((4, 4), np.float32), nbits=2, channel_axis=2)
    with pytest.raises(ValueError, match="Invalid axis"):
        kernels.quantize(rand((4, 4), np.float32), axis=-3)
    with pytest.raises(ValueError, match="must has one element for each axis"):
        kernels.quantize(rand((4, 4), np.float32), granularity="per_block", block_size=[2])
    with pytest.raises(ValueError, match="rank"):
        kernels.prune(rand((40,), np.float32), n_m_ratio=(2, 4))
    with pytest.raises(ValueError, match="doesn't support UNIFORM"):
        kernels.palettize(rand((4, 4), np.float32), nbits=2, mode="uniform", cluster_dim=2)


def test_non_contiguous_and_readonly_inputs() -> None:
    w = rand((32, 48), np.float16)
    view = w.T  # not C-contiguous
    view.flags.writeable = False
    expected = ct_pal.grouped_channelwise_compress(np.ascontiguousarray(view), "UNIFORM", 4, 0, 0)
    assert_same_lut(kernels.palettize(view, nbits=4, mode="uniform"), expected)
    theirs = ct_quant.blockwise_compress(np.ascontiguousarray(view), 8, "LINEAR", True, [1, 0])
    np.testing.assert_array_equal(kernels.quantize(view, mode="linear").data, theirs.data)


def test_skipped_palettization_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    w = rand((6, 8), np.float32)
    with caplog.at_level(logging.WARNING):
        assert (
            kernels.palettize(w, nbits=2, granularity="per_grouped_channel", group_size=4) is None
        )
    assert "not divisible by channel_group_size (4)" in caplog.text
    many = np.arange(600, dtype=np.float32).reshape(20, 30)
    assert kernels.palettize(many, mode="unique") is None
    assert ct_pal.grouped_channelwise_compress(many, "UNIQUE", None, 0, 0) is None


# --------------------------------------------------------------------------------------
# Threads: GIL released, results independent of the thread count
# --------------------------------------------------------------------------------------

_DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib
    import numpy as np
    from coreml_compress import kernels

    rng = np.random.default_rng(42)
    w16 = rng.standard_normal((256, 512)).astype(np.float16)
    w32 = rng.standard_normal((300, 400)).astype(np.float32)
    h = hashlib.sha256()
    def feed(*arrays):
        for a in arrays:
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
    p = kernels.palettize(w16, nbits=4, granularity="per_grouped_channel", group_size=16)
    feed(p.lut, p.indices)
    p = kernels.palettize(w32, nbits=4)
    feed(p.lut, p.indices)
    p = kernels.palettize(w16, nbits=3, cluster_dim=2, enable_per_channel_scale=True)
    feed(p.lut, p.indices, p.scale)
    q = kernels.quantize(w32, dtype="int4", granularity="per_block", block_size=16)
    feed(q.data, q.scale, q.offset)
    s = kernels.prune(w16, target_sparsity=0.6, block_size=4)
    feed(s.mask, s.nonzero_data)
    s = kernels.prune(w32, n_m_ratio=(3, 8))
    feed(s.mask, s.nonzero_data)
    print(h.hexdigest())
    """
)


def test_results_do_not_depend_on_thread_count() -> None:
    digests = set()
    for threads in ("1", "2", "5"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


def test_gil_is_released_during_the_kernel() -> None:
    w = rand((1024, 1024), np.float32, seed=1)
    done = threading.Event()
    result: list[Any] = []

    def work() -> None:
        result.append(kernels.palettize(w, nbits=8))
        done.set()

    ticks = 0
    start = time.perf_counter()
    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    worker.join()
    assert result and result[0] is not None
    if elapsed < 0.1:
        pytest.skip(f"kernel too fast ({elapsed:.3f} s) to observe")
    # With the GIL held for the whole call the main thread would tick about once.
    assert ticks > elapsed / 0.001 / 10, (ticks, elapsed)
