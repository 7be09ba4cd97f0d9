"""palettize_weights against coremltools on the same models. Exact where coremltools is
deterministic (uniform, unique, custom, and k-means on fp16 groups of at least 10,000 values,
which coremltools clusters with its exact kmeans1d): identical ops and LUTs/indices. Where
coremltools falls back to scikit-learn (fp32, small groups, vectors): never a worse squared
error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import optimize
from distinct import distinct, sorted_values
from test_quantize_prune import assert_same_compression, constexpr_params, constexpr_types

P = cto.OpPalettizerConfig


# Slow configs skip MiniLM's 30522x384 word embedding (coremltools needs minutes for it).
SLOW = {"op_type_configs": {"gather": None}}


def run_both(
    kind: str,
    target: str,
    precision: str,
    op_config: Any,
    model_dir: Path,
    oracle_dir: Path,
    tmp_path: Path,
) -> tuple[Path, Path, Path]:
    src = models.build(kind, model_dir, target, precision)
    slow = kind == "minilm" and (
        op_config.granularity.name == "PER_GROUPED_CHANNEL" or (op_config.nbits or 0) >= 6
    )
    config = cto.OptimizationConfig(global_config=op_config, **(SLOW if slow else {}))
    theirs = models.compress_with_coremltools(src, "palettize", config, oracle_dir)
    ours = tmp_path / "ours.mlpackage"
    optimize.palettize_weights(
        ct.models.MLModel(str(src), skip_model_load=True), config, output_path=ours
    )
    return src, ours, theirs


EXACT = [
    ("minilm", "iOS18", P(nbits=4)),
    ("minilm", "iOS18", P(nbits=2)),
    ("minilm", "iOS18", P(nbits=8)),
    ("minilm", "iOS18", P(nbits=3)),
    ("minilm", "iOS18", P(nbits=6, granularity="per_grouped_channel", group_size=128)),
    ("minilm", "iOS18", P(nbits=4, enable_per_channel_scale=True)),
    ("minilm", "iOS16", P(nbits=4)),
    ("minilm", "iOS17", P(nbits=1)),
    ("linear", "iOS18", P(mode="uniform", nbits=4)),
    ("conv", "iOS16", P(mode="uniform", nbits=2)),
    ("conv", "iOS18", P(mode="uniform", nbits=3, granularity="per_grouped_channel", group_size=8)),
    ("matmul", "iOS18", P(mode="uniform", nbits=6)),
    (
        "conv_transpose",
        "iOS18",
        P(mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=4),
    ),
    ("linear", "iOS18", P(mode="uniform", nbits=8, enable_per_channel_scale=True)),
    (
        "odd_shapes",
        "iOS18",
        P(mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=5),
    ),
]


@pytest.mark.parametrize(("kind", "target", "op_config"), EXACT)
def test_exact_parity(
    kind: str, target: str, op_config: Any, model_dir: Path, oracle_dir: Path, tmp_path: Path
) -> None:
    _, ours, theirs = run_both(kind, target, "fp16", op_config, model_dir, oracle_dir, tmp_path)
    assert constexpr_types(theirs), "the oracle compressed nothing"
    assert_same_compression(ours, theirs)


def sse(dense: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> float:
    return sum(
        float(np.sum((dense[k].astype(np.float64) - original[k].astype(np.float64)) ** 2))
        for k in dense
    )


QUALITY = [
    ("linear", "iOS18", "fp16", P(nbits=4)),  # groups under 10k values: scikit-learn in coremltools
    ("linear", "iOS18", "fp32", P(nbits=4)),
    ("conv", "iOS18", "fp32", P(nbits=2, granularity="per_grouped_channel", group_size=8)),
    ("linear", "iOS18", "fp16", P(nbits=4, cluster_dim=2)),
    ("conv", "iOS18", "fp16", P(nbits=4, granularity="per_grouped_channel", group_size=16)),
]


@pytest.mark.parametrize(("kind", "target", "precision", "op_config"), QUALITY)
def test_never_worse(
    kind: str,
    target: str,
    precision: str,
    op_config: Any,
    model_dir: Path,
    oracle_dir: Path,
    tmp_path: Path,
) -> None:
    src, ours, theirs = run_both(
        kind, target, precision, op_config, model_dir, oracle_dir, tmp_path
    )
    assert constexpr_types(ours) == constexpr_types(theirs)
    original = models.dense_weights(src)
    a, b = models.dense_weights(ours), models.dense_weights(theirs)
    assert a.keys() == b.keys() == original.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
    for op, params in constexpr_params(ours).items():
        theirs_params = constexpr_params(theirs)[op]
        assert {k: v.shape for k, v in params.items()} == {
            k: v.shape for k, v in theirs_params.items()
        }
    tolerance = 1.01 if op_config.cluster_dim > 1 else 1.0
    assert sse(a, original) <= sse(b, original) * tolerance


def test_unique_and_custom(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    # A model whose weights have few distinct values: coremltools' uniform output, decompressed.
    src = models.build("linear", model_dir, "iOS18", "fp16")
    uniform = models.compress_with_coremltools(
        src, "palettize", cto.OptimizationConfig(P(mode="uniform", nbits=3)), oracle_dir
    )
    dense = models.compress_with_coremltools(
        uniform, "decompress", None, oracle_dir / "dense.mlpackage"
    )
    for op_config in (
        P(mode="unique"),
        P(mode="unique", granularity="per_grouped_channel", group_size=16),
    ):
        config = cto.OptimizationConfig(global_config=op_config)
        theirs = models.compress_with_coremltools(dense, "palettize", config, oracle_dir)
        ours = optimize.palettize_weights(str(dense), config, output_path=tmp_path / "u.mlpackage")
        assert isinstance(ours, Path)  # path in, path out
        assert_same_compression(ours, theirs)

    def top_k(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, counts = distinct(group, return_counts=True)
        lut = np.zeros(16, dtype=group.dtype)
        top = sorted_values(values[np.argsort(-counts, kind="stable")[:16]])
        lut[: len(top)] = top
        indices = np.abs(group.reshape(-1, 1) - lut[: len(top)].reshape(1, -1)).argmin(axis=1)
        return lut, indices.astype(np.uint8)

    config = cto.OptimizationConfig(global_config=P(mode="custom", lut_function=top_k))
    theirs = models.compress_with_coremltools(
        src, "palettize", config, oracle_dir / "custom.mlpackage"
    )
    optimize.palettize_weights(str(src), config, output_path=tmp_path / "c.mlpackage")
    assert_same_compression(tmp_path / "c.mlpackage", theirs)


def test_stateful_model_keeps_states(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src, ours, theirs = run_both(
        "stateful", "iOS18", "fp16", P(nbits=4), model_dir, oracle_dir, tmp_path
    )
    spec_src, spec_ours = ct.utils.load_spec(str(src)), ct.utils.load_spec(str(ours))
    assert spec_ours.description.state == spec_src.description.state
    state_ops = [t for t in models.op_types(src) if "state" in t]
    assert state_ops and [t for t in models.op_types(ours) if "state" in t] == state_ops
    assert constexpr_types(ours) == constexpr_types(theirs)


def test_ios16_limits(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS16", "fp16")
    grouped = cto.OptimizationConfig(
        global_config=P(nbits=4, granularity="per_grouped_channel", group_size=16)
    )
    with pytest.raises(
        ValueError, match="The per_grouped_channel palettization is supported since iOS18"
    ):
        optimize.palettize_weights(str(src), grouped, output_path=tmp_path / "g.mlpackage")
    # coremltools crashes on nbits=3 below iOS18; this project says why.
    with pytest.raises(ValueError, match="3-bit palettization is supported since iOS18"):
        optimize.palettize_weights(
            str(src), cto.OptimizationConfig(P(nbits=3)), output_path=tmp_path / "t.mlpackage"
        )
    assert not (tmp_path / "g.mlpackage").exists() and not (tmp_path / "t.mlpackage").exists()
