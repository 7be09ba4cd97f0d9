"""Scalar fp16 k-means against coremltools' kmeans1d under the contract of docs/DECISIONS.md
("Grouped k-means: the optimal LUT without replaying kmeans1d").

On every group of at least 10,000 values (where coremltools clusters with kmeans1d) our LUT and
indices are coremltools' bit for bit, or the two partitions tie: their SSEs, each with its own
f64 centroids, within 1e-9 relative. Every group's SSE with the LUT as written (fp16) is at most
coremltools' × (1 + 1e-9). Ties are counted and printed (`-s`): measured, one group (heavy-tailed,
8 bits, groups of 32 rows) of all the generated and MiniLM groups; the groups built with exact
ties resolve them as kmeans1d does.
"""

from __future__ import annotations

from typing import Any

import models
import numpy as np
import pytest
from coreml_compress import kernels
from coremltools.optimize.coreml._quantization_passes import palettize_weights as ct_pal

pytest.importorskip("kmeans1d")  # coremltools' exact path (scikit-learn otherwise)

REL = 1e-9


def _granularity(group_size: int) -> dict[str, Any]:
    if group_size:
        return {"granularity": "per_grouped_channel", "group_size": group_size}
    return {"granularity": "per_tensor"}


def _groups(
    w: np.ndarray, lut: np.ndarray, indices: np.ndarray, group: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(values, indices, LUT) of each group of rows (channel axis 0, 2-D weight)."""
    rows = group or w.shape[0]
    luts = lut.reshape(-1, lut.shape[-2])
    return [
        (w[g * rows : (g + 1) * rows].ravel(), indices[g * rows : (g + 1) * rows].ravel(), luts[g])
        for g in range(w.shape[0] // rows)
    ]


def _sse_as_written(values: np.ndarray, idx: np.ndarray, lut: np.ndarray) -> float:
    d = values.astype(np.float64) - lut.astype(np.float64)[idx]
    return float(np.dot(d, d))


def _sse_partition(values: np.ndarray, idx: np.ndarray) -> float:
    """SSE of the partition the indices make, each cluster at its own f64 mean."""
    v = values.astype(np.float64)
    total = 0.0
    for c in range(int(idx.max()) + 1):
        part = v[idx == c]
        if part.size:
            total += float(np.sum((part - part.mean()) ** 2))
    return total


def compare(w: np.ndarray, nbits: int, group: int) -> int:
    """Checks the contract on every group; returns the number of ties."""
    assert w.dtype == np.float16 and w.ndim == 2
    theirs = ct_pal.grouped_channelwise_compress(w, "KMEANS", nbits, 0, group)
    ours = kernels.palettize(w, nbits=nbits, channel_axis=0, **_granularity(group))
    assert ours.lut.shape == theirs.lut.shape and ours.indices.shape == theirs.indices.shape
    ties = 0
    pairs = zip(
        _groups(w, ours.lut, ours.indices, group),
        _groups(w, theirs.lut, theirs.indices.astype(np.uint8), group),
        strict=True,
    )
    for g, ((values, oi, ol), (_, ti, tl)) in enumerate(pairs):
        assert values.size >= 10_000, "not kmeans1d's path in coremltools"
        a, b = _sse_as_written(values, oi, ol), _sse_as_written(values, ti, tl)
        assert a <= b * (1 + REL), f"group {g}: SSE {a} > coremltools' {b}"
        if ol.view(np.uint16).tolist() == tl.view(np.uint16).tolist() and np.array_equal(oi, ti):
            continue
        pa, pb = _sse_partition(values, oi), _sse_partition(values, ti)
        assert abs(pa - pb) <= REL * max(pa, pb), f"group {g}: not a tie, {pa} vs {pb}"
        ties += 1
    return ties


def assert_rare_ties(ties: int, w: np.ndarray, group: int) -> None:
    """Ties on real-valued weights come from exactly equal gaps between isolated tail values
    (equal counts, fp16 grid): rare, at most one group in four."""
    groups = w.shape[0] // (group or w.shape[0])
    print(f"ties: {ties} of {groups} groups")
    assert ties <= max(1, groups // 4)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize(("rows", "group"), [(96, 0), (64, 32)])
def test_generated_weights(nbits: int, rows: int, group: int) -> None:
    """N(0, 0.02) and heavy-tailed (Student t, 3 dof) weights: 12,288 / 2 × 10,240 values."""
    rng = np.random.default_rng(nbits)
    cols = 128 if group == 0 else 320
    normal = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)
    heavy = (rng.standard_t(3, (rows, cols)) * 0.01).astype(np.float16)
    for w in (normal, heavy):
        assert_rare_ties(compare(w, nbits, group), w, group)


@pytest.fixture(scope="module")
def minilm() -> dict[str, np.ndarray]:
    safetensors = pytest.importorskip("safetensors.numpy")
    sd = safetensors.load_file(str(models.minilm_safetensors_path()))
    return {k: np.ascontiguousarray(v).astype(np.float16) for k, v in sd.items() if v.ndim == 2}


@pytest.mark.parametrize(
    ("name", "nbits", "group"),
    [
        ("encoder.layer.0.attention.self.query.weight", 4, 32),
        ("encoder.layer.3.intermediate.dense.weight", 4, 64),
        ("encoder.layer.5.output.dense.weight", 8, 0),
        ("encoder.layer.1.attention.output.dense.weight", 2, 0),
        ("encoder.layer.2.attention.self.value.weight", 6, 32),
        ("encoder.layer.4.attention.self.key.weight", 3, 128),
        ("encoder.layer.0.output.dense.weight", 1, 0),
    ],
)
def test_minilm_weights(minilm: dict[str, np.ndarray], name: str, nbits: int, group: int) -> None:
    w = minilm[name]
    assert_rare_ties(compare(w, nbits, group), w, group)


def _clumps(count: int, offsets: tuple[int, ...], width: int) -> np.ndarray:
    """Identical clumps of `width` consecutive fp16 values in [1, 2) (spacing 2^-10), `count` of
    each value; offsets even (in grid steps) so that the clumps' means round alike."""
    steps = np.concatenate([o + np.arange(width) for o in offsets])
    values = (1.0 + steps * 2.0**-10).astype(np.float16)
    return np.repeat(values, count)


@pytest.mark.parametrize(
    ("values", "nbits", "rows"),
    [
        # Three equally spaced values, k = 2: {a}{b, c} and {a, b}{c} tie.
        (np.repeat(np.array([1.0, 1.5, 2.0 - 2.0**-10], np.float16), 4096), 1, 96),
        # Five equally spaced values with equal counts, k = 2.
        (np.repeat((1.0 + np.arange(5) * 64 * 2.0**-10).astype(np.float16), 2048), 1, 80),
        # Three identical clumps of 100 values, k = 4: which clump is split is a 3-way tie, and 4
        # lies inside an edge of the hull of (clusters, SSE) (the Lagrangian search's edge case).
        (_clumps(40, (0, 256, 512), 100), 2, 96),
        # The same with 128 values per clump at 3 bits (k = 8 splits clumps 3+3+2).
        (_clumps(32, (0, 256, 512), 128), 3, 96),
    ],
)
def test_constructed_exact_ties(values: np.ndarray, nbits: int, rows: int) -> None:
    w = np.random.default_rng(0).permutation(values).reshape(rows, -1)
    compare(w, nbits, 0)  # a tie or the same partition; either is optimal
