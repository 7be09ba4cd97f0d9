"""Joint compression (iOS18): compressing what coremltools already compressed, in every order it
supports, against coremltools on the same input. Exact where the second step is deterministic
(quantization, pruning, uniform palettization, k-means on fp16 groups of 10,000+ values)."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import optimize

P, Q, M = cto.OpPalettizerConfig, cto.OpLinearQuantizerConfig, cto.OpMagnitudePrunerConfig
STEP = {
    "palettize": optimize.palettize_weights,
    "quantize": optimize.linear_quantize_weights,
    "prune": optimize.prune_weights,
}


def chain(path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Constexpr ops in program order with their constant inputs (names left out: coremltools
    gives some joint ops process-global counter names)."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    spec = ct.utils.load_spec(str(path))
    weights = ct.models.MLModel(str(path), skip_model_load=True).weights_dir
    prog = milproto_load.load(spec, spec.specificationVersion, str(weights))
    out = []
    for f in prog.functions.values():
        for op in f.operations:
            if op.op_type.startswith("constexpr_"):
                vals = {
                    k: np.asarray(v.val)
                    for k, v in op.inputs.items()
                    if v is not None
                    and v.val is not None
                    and not v.op.op_type.startswith("constexpr_")
                }
                out.append((op.op_type, vals))
    return out


CASES = [
    # (model, first step, second step, exact)
    ("minilm", ("prune", M(target_sparsity=0.5)), ("quantize", Q()), True),
    (
        "minilm",
        ("prune", M(target_sparsity=0.5)),
        ("quantize", Q(dtype="int4", granularity="per_block", block_size=32)),
        True,
    ),
    ("minilm", ("prune", M(target_sparsity=0.5)), ("palettize", P(nbits=4)), True),
    ("linear", ("prune", M(n_m_ratio=(2, 4))), ("palettize", P(mode="uniform", nbits=4)), True),
    ("minilm", ("palettize", P(nbits=4)), ("quantize", Q(granularity="per_tensor")), True),
    (
        "minilm",
        ("palettize", P(nbits=6, granularity="per_grouped_channel", group_size=32)),
        ("quantize", Q(mode="linear", dtype="uint8", granularity="per_tensor")),
        True,
    ),
    ("minilm", ("palettize", P(nbits=4)), ("prune", M(target_sparsity=0.5)), True),
    ("minilm", ("quantize", Q()), ("prune", M(target_sparsity=0.5)), True),
    (
        "conv",
        ("quantize", Q(mode="linear", dtype="uint8")),
        ("prune", M(target_sparsity=0.4)),
        True,
    ),
    ("linear", ("quantize", Q()), ("palettize", P(mode="unique")), False),
    ("minilm", ("quantize", Q()), ("palettize", P(nbits=4)), False),
]


@pytest.mark.parametrize(("kind", "first", "second", "exact"), CASES)
def test_joint_matches_coremltools(
    kind: str,
    first: tuple,
    second: tuple,
    exact: bool,
    model_dir: Path,
    oracle_dir: Path,
    tmp_path: Path,
) -> None:
    src = models.build(kind, model_dir, "iOS18", "fp16")
    step1 = models.compress_with_coremltools(
        src, first[0], cto.OptimizationConfig(global_config=first[1]), oracle_dir
    )
    config = cto.OptimizationConfig(global_config=second[1])
    theirs = models.compress_with_coremltools(
        step1, second[0], config, oracle_dir, joint_compression=True
    )
    ours = tmp_path / "ours.mlpackage"
    STEP[second[0]](str(step1), config, joint_compression=True, output_path=ours)
    a, b = chain(ours), chain(theirs)
    assert [t for t, _ in a] == [t for t, _ in b]
    for (ta, pa), (_, pb) in zip(a, b):
        assert pa.keys() == pb.keys(), ta
        for k in pa:
            assert pa[k].dtype == pb[k].dtype and pa[k].shape == pb[k].shape, (ta, k)
            if exact:
                np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{ta}.{k}")
    da, db, original = (
        models.dense_weights(ours),
        models.dense_weights(theirs),
        models.dense_weights(src),
    )
    assert da.keys() == db.keys()
    for k in da:
        if exact:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)
    if not exact:

        def sse(d: dict) -> float:
            return sum(
                float(np.sum((d[k].astype(np.float64) - original[k].astype(np.float64)) ** 2))
                for k in d
            )

        assert sse(da) <= sse(db) * 1.0001


def test_joint_errors(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS17", "fp16")
    with pytest.raises(ValueError, match="Joint compression is only supported since iOS18"):
        optimize.palettize_weights(
            str(src), cto.OptimizationConfig(P(nbits=4)), joint_compression=True
        )
    src = models.build("linear", model_dir, "iOS18", "fp16")
    pal = models.compress_with_coremltools(
        src, "palettize", cto.OptimizationConfig(P(nbits=4)), oracle_dir
    )
    with pytest.raises(ValueError, match="please make sure to use per-tensor quantization"):
        optimize.linear_quantize_weights(
            str(pal),
            cto.OptimizationConfig(Q()),
            joint_compression=True,
            output_path=tmp_path / "x.mlpackage",
        )
    # coremltools fails with an IndexError on vector palettization after pruning; we say why.
    pruned = models.compress_with_coremltools(
        src, "prune", cto.OptimizationConfig(M(target_sparsity=0.5)), oracle_dir
    )
    with pytest.raises(ValueError, match="vector palettization"):
        optimize.palettize_weights(
            str(pruned),
            cto.OptimizationConfig(P(nbits=4, cluster_dim=2)),
            joint_compression=True,
            output_path=tmp_path / "y.mlpackage",
        )


def test_int4_then_prune_where_coremltools_fails(
    model_dir: Path, oracle_dir: Path, tmp_path: Path
) -> None:
    # coremltools asserts on sub-byte data here; the result must be the dequantized weight with
    # the pruned half set to zero.
    src = models.build("linear", model_dir, "iOS18", "fp16")
    q = models.compress_with_coremltools(
        src,
        "quantize",
        cto.OptimizationConfig(Q(dtype="int4", granularity="per_block", block_size=16)),
        oracle_dir,
    )
    ours = tmp_path / "o.mlpackage"
    optimize.prune_weights(
        str(q),
        cto.OptimizationConfig(M(n_m_ratio=(2, 4))),
        joint_compression=True,
        output_path=ours,
    )
    before, after = models.dense_weights(q), models.dense_weights(ours)
    assert before.keys() == after.keys()
    pruned = [k for k in before if before[k].ndim == 2 and before[k].size > 2048]
    assert pruned
    for k in pruned:
        kept = after[k] != 0
        np.testing.assert_array_equal(after[k][kept], before[k][kept])
        assert (after[k] == 0).mean() >= 0.5


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("prune", M(target_sparsity=0.5)), ("palettize", P(nbits=4))),
        (("palettize", P(nbits=4)), ("prune", M(target_sparsity=0.5))),
        (
            ("prune", M(target_sparsity=0.5)),
            ("quantize", Q(mode="linear", dtype="uint4", granularity="per_block", block_size=32)),
        ),
        (("prune", M(n_m_ratio=(2, 4))), ("quantize", Q())),
    ],
)
def test_joint_report_measures_the_change(
    first: tuple, second: tuple, model_dir: Path, tmp_path: Path
) -> None:
    """The report's SNR of a joint step is that of the dense weight after it against before it."""
    src = models.build("linear", model_dir, "iOS18", "fp16")
    step1 = tmp_path / "step1.mlpackage"
    STEP[first[0]](str(src), cto.OptimizationConfig(global_config=first[1]), output_path=step1)
    ours = tmp_path / "ours.mlpackage"
    _, report = STEP[second[0]](
        str(step1),
        cto.OptimizationConfig(global_config=second[1]),
        joint_compression=True,
        output_path=ours,
        with_report=True,
    )
    before, after = models.dense_weights(step1), models.dense_weights(ours)
    assert before.keys() == after.keys()

    def snr(w: np.ndarray, r: np.ndarray) -> float:
        w, r = w.astype(np.float64), r.astype(np.float64)
        return float(10 * np.log10(np.sum(w * w) / np.sum((w - r) ** 2)))

    # Report names are the joint sites' names: compare the sets of values.
    want = sorted(
        snr(before[k], after[k]) for k in before if not np.array_equal(before[k], after[k])
    )
    assert len(report) == len(want) > 1
    assert sorted(e["snr_db"] for e in report) == pytest.approx(want, abs=1e-3)
