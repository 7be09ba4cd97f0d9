"""linear_quantize_weights and prune_weights against coremltools on the same models: the same ops,
identical codes, scales, offsets, masks and nonzero values, and bit-identical dense weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import coreml_compress
import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import optimize


def constexpr_params(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every constexpr op's constant inputs, by op name, as coremltools reads them."""
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    spec = ct.utils.load_spec(str(path))
    weights = ct.models.MLModel(str(path), skip_model_load=True).weights_dir
    prog = milproto_load.load(spec, spec.specificationVersion, str(weights))
    out: dict[str, dict[str, np.ndarray]] = {}
    for f in prog.functions.values():
        for op in f.operations:
            if op.op_type.startswith("constexpr_"):
                out[op.name] = {
                    k: np.asarray(v.val)
                    for k, v in op.inputs.items()
                    if v is not None and v.val is not None
                }
    return out


def constexpr_types(path: Path) -> list[str]:
    return [t for t in models.op_types(path) if t.startswith("constexpr_")]


def assert_same_compression(ours: Path, theirs: Path) -> None:
    # coremltools re-runs its whole graph pipeline after compressing (which may rewrite unrelated
    # ops); this project leaves the rest of the graph as it was. The compressed ops must agree.
    assert constexpr_types(ours) == constexpr_types(theirs)
    a, b = constexpr_params(ours), constexpr_params(theirs)
    assert a.keys() == b.keys() and a
    for op in a:
        assert a[op].keys() == b[op].keys(), op
        for k in a[op]:
            assert a[op][k].dtype == b[op][k].dtype, (op, k)
            np.testing.assert_array_equal(a[op][k], b[op][k], err_msg=f"{op}.{k}")
    da, db = models.dense_weights(ours), models.dense_weights(theirs)
    assert da.keys() == db.keys()
    for k in da:
        assert da[k].dtype == db[k].dtype
        np.testing.assert_array_equal(da[k], db[k], err_msg=k)


Q = cto.OpLinearQuantizerConfig
M = cto.OpMagnitudePrunerConfig
T = cto.OpThresholdPrunerConfig

QUANT_CASES: list[tuple[str, str, Any]] = []
for target in ("iOS16", "iOS18"):
    for mode in ("linear_symmetric", "linear"):
        for dtype in ("int8", "uint8"):
            for gran in ("per_tensor", "per_channel"):
                QUANT_CASES.append((target, "linear", Q(mode=mode, dtype=dtype, granularity=gran)))
for mode in ("linear_symmetric", "linear"):
    for dtype in ("int4", "uint4", "int8", "uint8"):
        QUANT_CASES.append(
            ("iOS18", "linear", Q(mode=mode, dtype=dtype, granularity="per_block", block_size=32))
        )
QUANT_CASES += [
    ("iOS18", "conv", Q(dtype="int4", granularity="per_block", block_size=2)),
    ("iOS18", "conv_transpose", Q()),
    ("iOS18", "matmul", Q(dtype="uint4", mode="linear", granularity="per_block", block_size=16)),
    ("iOS18", "odd_shapes", Q(dtype="int4", granularity="per_block", block_size=9)),
    ("iOS18", "linear", Q(granularity="per_block", block_size=[0, 8])),
    ("iOS17", "gather", Q(mode="linear")),
    ("iOS18", "minilm", Q(dtype="int4", granularity="per_block", block_size=32)),
    ("iOS18", "stateful", Q()),
]

PRUNE_CASES: list[tuple[str, str, Any]] = [
    ("iOS16", "linear", M(target_sparsity=0.5)),
    ("iOS18", "linear", M(target_sparsity=0.75)),
    ("iOS18", "conv", M(target_sparsity=0.5, block_size=2)),
    ("iOS18", "linear", M(target_sparsity=0.4, block_size=4, dim=1)),
    ("iOS18", "linear", M(n_m_ratio=(2, 4))),
    ("iOS18", "conv", M(n_m_ratio=(1, 2), dim=0)),
    ("iOS18", "matmul", M(n_m_ratio=(2, 4))),  # structural: matmul weights are skipped
    ("iOS17", "conv", T(threshold=0.05, minimum_sparsity_percentile=0.2)),
    ("iOS18", "minilm", M(target_sparsity=0.5)),
]


@pytest.mark.parametrize(("target", "kind", "op_config"), QUANT_CASES + PRUNE_CASES)
def test_matches_coremltools(
    target: str, kind: str, op_config: Any, model_dir: Path, oracle_dir: Path, tmp_path: Path
) -> None:
    src = models.build(kind, model_dir, target, "fp16")
    config = cto.OptimizationConfig(global_config=op_config)
    step = "quantize" if isinstance(op_config, Q) else "prune"
    theirs = models.compress_with_coremltools(src, step, config, oracle_dir)
    fn = optimize.linear_quantize_weights if step == "quantize" else optimize.prune_weights
    result = fn(
        ct.models.MLModel(str(src), skip_model_load=True),
        config,
        output_path=tmp_path / "ours.mlpackage",
    )
    assert isinstance(result, ct.models.MLModel)
    ours = Path(result.package_path)
    if not constexpr_types(theirs):
        assert constexpr_types(ours) == []
        return
    assert_same_compression(ours, theirs)


def test_fp32_weights_match(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS18", "fp32")
    config = cto.OptimizationConfig(
        global_config=Q(dtype="int4", granularity="per_block", block_size=16)
    )
    theirs = models.compress_with_coremltools(src, "quantize", config, oracle_dir)
    optimize.linear_quantize_weights(str(src), config, output_path=tmp_path / "o.mlpackage")
    assert_same_compression(tmp_path / "o.mlpackage", theirs)


def test_op_name_and_type_configs(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS18", "fp16")
    config = cto.OptimizationConfig(
        global_config=Q(),
        op_type_configs={"linear": Q(dtype="uint8", mode="linear")},
        op_name_configs={
            "lin2_weight_to_fp16": None,
            "lin3_weight_to_fp16": Q(dtype="int4", granularity="per_block", block_size=8),
        },
    )
    theirs = models.compress_with_coremltools(src, "quantize", config, oracle_dir)
    optimize.linear_quantize_weights(str(src), config, output_path=tmp_path / "o.mlpackage")
    assert_same_compression(tmp_path / "o.mlpackage", theirs)


def test_errors_match_coremltools(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS16", "fp16")
    config = cto.OptimizationConfig(global_config=Q(dtype="int4"))
    with pytest.raises(ValueError, match="The 4-bit quantization is supported since iOS18"):
        optimize.linear_quantize_weights(str(src), config, output_path=tmp_path / "a.mlpackage")
    with pytest.raises(ValueError, match="only accept OpLinearQuantizerConfig type config"):
        optimize.linear_quantize_weights(
            str(src), cto.OptimizationConfig(global_config=M(target_sparsity=0.5))
        )
    conflict = cto.OptimizationConfig(
        op_name_configs={"shared_a_cast_fp16": Q(), "shared_b_cast_fp16": Q(dtype="uint8")}
    )
    with pytest.raises(ValueError, match="compression config conflict detected between ops"):
        optimize.linear_quantize_weights(str(src), conflict, output_path=tmp_path / "b.mlpackage")
    with pytest.raises(ValueError, match="compression config conflict detected between ops"):
        cto.linear_quantize_weights(ct.models.MLModel(str(src), skip_model_load=True), conflict)
    multi = models.build("multifunction", model_dir, "iOS18", "fp16")
    with pytest.raises(ValueError, match="is not supported for a multifunction model"):
        optimize.prune_weights(
            str(multi), cto.OptimizationConfig(global_config=M(target_sparsity=0.5))
        )
    assert not (tmp_path / "a.mlpackage").exists()


def test_deterministic_across_thread_counts(model_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    src = models.build("minilm", model_dir, "iOS18", "fp16")
    script = (
        "import sys, coremltools.optimize.coreml as cto; from coreml_compress import optimize;"
        "c = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(dtype='int4', granularity='per_block', block_size=32));"
        "optimize.linear_quantize_weights(sys.argv[1], c, output_path=sys.argv[2])"
    )
    outputs = []
    for threads in ("1", "2"):
        dest = tmp_path / f"t{threads}.mlpackage"
        env = {**__import__("os").environ, "RAYON_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", script, str(src), str(dest)], check=True, env=env)
        outputs.append(
            {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        )
    assert outputs[0] == outputs[1]
    assert coreml_compress.CoreMLCompressError  # the package imports cleanly in the subprocess too
