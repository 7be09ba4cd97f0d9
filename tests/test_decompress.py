"""decompress_weights on packages coremltools itself compressed, in every mode and opset it
offers: no constexpr op is left, and every dense weight equals coremltools' own decompression
bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import _native


def pal(**kw: Any) -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(**kw))


def quant(**kw: Any) -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(**kw))


def prune(**kw: Any) -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(**kw))


# (name, model, target, [(kind, config, joint), ...]) applied in order with coremltools.
CASES: list[tuple[str, str, str, list[tuple[str, Any, bool]]]] = [
    ("kmeans4-ios16", "linear", "iOS16", [("palettize", pal(nbits=4), False)]),
    ("uniform2-ios16", "conv", "iOS16", [("palettize", pal(mode="uniform", nbits=2), False)]),
    ("int8-ios16", "linear", "iOS16", [("quantize", quant(), False)]),
    (
        "uint8-linear-ios17",
        "matmul",
        "iOS17",
        [("quantize", quant(mode="linear", dtype="uint8"), False)],
    ),
    ("prune-ios16", "conv", "iOS16", [("prune", prune(target_sparsity=0.5), False)]),
    ("kmeans4-ios18", "linear", "iOS18", [("palettize", pal(nbits=4), False)]),
    ("kmeans3-ios18", "conv_transpose", "iOS18", [("palettize", pal(nbits=3), False)]),
    (
        "grouped-ios18",
        "linear",
        "iOS18",
        [("palettize", pal(nbits=4, granularity="per_grouped_channel", group_size=16), False)],
    ),
    ("vector-ios18", "linear", "iOS18", [("palettize", pal(nbits=4, cluster_dim=2), False)]),
    (
        "pcs-ios18",
        "linear",
        "iOS18",
        [("palettize", pal(nbits=4, enable_per_channel_scale=True), False)],
    ),
    (
        "unique-ios18",
        "gather",
        "iOS18",
        [
            ("palettize", pal(mode="uniform", nbits=4), False),
            ("decompress", None, False),
            ("palettize", pal(mode="unique"), False),
        ],
    ),
    (
        "int4-block-ios18",
        "linear",
        "iOS18",
        [("quantize", quant(dtype="int4", granularity="per_block", block_size=32), False)],
    ),
    (
        "uint4-linear-block-ios18",
        "odd_shapes",
        "iOS18",
        [
            (
                "quantize",
                quant(mode="linear", dtype="uint4", granularity="per_block", block_size=9),
                False,
            )
        ],
    ),
    ("int8-fp32-ios18", "conv", "iOS18", [("quantize", quant(), False)]),
    ("nm-ios18", "linear", "iOS18", [("prune", prune(n_m_ratio=(2, 4)), False)]),
    (
        "prune-palettize",
        "linear",
        "iOS18",
        [("prune", prune(target_sparsity=0.5), False), ("palettize", pal(nbits=4), True)],
    ),
    (
        "prune-quantize",
        "conv",
        "iOS18",
        [("prune", prune(target_sparsity=0.5), False), ("quantize", quant(), True)],
    ),
    (
        "palettize-quantize-lut",
        "linear",
        "iOS18",
        [("palettize", pal(nbits=4), False), ("quantize", quant(granularity="per_tensor"), True)],
    ),
    (
        "quantize-palettize",
        "linear",
        "iOS18",
        [("quantize", quant(), False), ("palettize", pal(nbits=4), True)],
    ),
    (
        "palettize-prune",
        "linear",
        "iOS18",
        [("palettize", pal(nbits=4), False), ("prune", prune(target_sparsity=0.5), True)],
    ),
    (
        "prune-palettize-quantize",
        "linear",
        "iOS18",
        [
            ("prune", prune(target_sparsity=0.5), False),
            ("palettize", pal(nbits=4), True),
            ("quantize", quant(granularity="per_tensor"), True),
        ],
    ),
    ("stateful-kmeans", "stateful", "iOS18", [("palettize", pal(nbits=4), False)]),
    ("minilm-int8", "minilm", "iOS18", [("quantize", quant(), False)]),
]


def constexpr_ops(path: Path) -> list[str]:
    return [t for t in models.op_types(path) if t.startswith("constexpr_")]


@pytest.mark.parametrize(("name", "kind", "target", "steps"), CASES, ids=[c[0] for c in CASES])
def test_decompress_matches_coremltools(
    name: str,
    kind: str,
    target: str,
    steps: list,
    model_dir: Path,
    oracle_dir: Path,
    tmp_path: Path,
) -> None:
    path = models.build(kind, model_dir, target, "fp16")
    for i, (step, config, joint) in enumerate(steps):
        path = models.compress_with_coremltools(
            path, step, config, oracle_dir / f"{name}-{i}.mlpackage", joint_compression=joint
        )
    assert constexpr_ops(path), "the oracle compressed nothing"
    ours = Path(_native.decompress(str(path), str(tmp_path / "ours.mlpackage")))
    assert constexpr_ops(ours) == []
    theirs = models.compress_with_coremltools(
        path, "decompress", None, oracle_dir / f"{name}-dense.mlpackage"
    )
    a, b = models.dense_weights(ours), models.dense_weights(theirs)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
