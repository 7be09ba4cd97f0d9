"""Smoke tests for the model builders and coremltools helpers in ``tests/models.py``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distinct import distinct_count

try:
    import models
except ImportError:  # tests/ imported as a package
    from tests import models

ct = models.ct
cto = pytest.importorskip("coremltools.optimize.coreml")

SPEC_VERSION = {ct.target.iOS16: 7, ct.target.iOS17: 8, ct.target.iOS18: 9}
SMALL = ("linear", "conv", "conv_transpose", "matmul", "gather", "odd_shapes")
FP16, FP32 = ct.precision.FLOAT16, ct.precision.FLOAT32

# Dense shapes of the compression candidates (size > 2048) per model, keyed by base const name.
CANDIDATES: dict[str, dict[str, tuple[int, ...]]] = {
    "linear": {
        "lin1_weight": (128, 64),
        "lin2_weight": (96, 128),
        "shared_weight": (96, 96),
        "lin3_weight": (64, 96),
    },
    "conv": {
        "conv1_weight": (32, 8, 3, 3),
        "conv_grouped_weight": (32, 8, 3, 3),
        "conv3_weight": (64, 32, 3, 3),
    },
    "conv_transpose": {"deconv1_weight": (16, 32, 3, 3), "deconv2_weight": (32, 8, 4, 4)},
    "matmul": {"mm_y_weight": (64, 96), "mm_yt_weight": (48, 96), "mm_xt_weight": (8, 320)},
    "gather": {"embedding_weight": (1000, 64), "proj_weight": (128, 64)},
    "odd_shapes": {
        "odd_linear_weight": (70, 81),
        "odd_conv_weight": (90, 30, 2, 2),
        "odd_matmul_weight": (2, 1, 70, 35),
        "odd_deconv_weight": (30, 4, 21, 10),
        "odd_embedding_weight": (77, 53),
    },
    "stateful": {"wq": (64, 64), "wk": (64, 64), "wv": (64, 64), "wo": (64, 64)},
}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def linear18(model_dir: Path) -> Path:
    return models.build_linear(model_dir, ct.target.iOS18, FP16)


@pytest.fixture(scope="session")
def minilm18(model_dir: Path) -> Path:
    return models.build_minilm(model_dir, ct.target.iOS18, FP16)


def _cast_stripped(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k.removesuffix("_to_fp16"): v for k, v in weights.items()}


def _candidates(weights: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: v.shape for k, v in _cast_stripped(weights).items() if v.size > 2048}


def _ops(path: Path, function: str | None = None) -> list[str]:
    return models.op_types(path, function)


def _const_blob_offsets(path: Path, function: str) -> dict[str, int]:
    func = ct.utils.load_spec(str(path)).mlProgram.functions[function]
    offsets: dict[str, int] = {}
    for op in func.block_specializations[func.opset].operations:
        if op.type == "const":
            value = op.attributes["val"]
            if value.WhichOneof("value") == "blobFileValue":
                offsets[op.outputs[0].name] = value.blobFileValue.offset
    return offsets


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", [FP16, FP32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("target", models.TARGETS, ids=lambda t: t.name)
@pytest.mark.parametrize("name", SMALL)
def test_small_builders(name: str, target: Any, precision: Any, model_dir: Path) -> None:
    path = models.build(name, model_dir, target, precision)
    assert path.suffix == ".mlpackage" and (path / "Manifest.json").is_file()
    spec = ct.utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion == SPEC_VERSION[target]
    assert models.function_names(path) == ["main"]
    assert models.EXPECTED_OP_TYPES[name] <= set(_ops(path))
    assert not any(op.startswith("constexpr_") for op in _ops(path))

    weights = models.dense_weights(path)
    assert _candidates(weights) == CANDIDATES[name]
    want = np.float16 if precision == FP16 else np.float32
    for key, val in weights.items():
        if np.issubdtype(val.dtype, np.floating):
            assert val.dtype == want, key
    suffix = "_to_fp16" if precision == FP16 else ""
    assert all(k.endswith(suffix) for k in weights if "weight" in k)


def test_builder_is_cached(model_dir: Path) -> None:
    first = models.build_conv(model_dir, "ios17", "fp16")
    stamp = (first / "Manifest.json").stat().st_mtime_ns
    again = models.build_conv(model_dir, ct.target.iOS17, ct.precision.FLOAT16)
    assert again == first and (again / "Manifest.json").stat().st_mtime_ns == stamp
    rebuilt = models.build_conv(model_dir, ct.target.iOS17, FP16, overwrite=True)
    assert rebuilt == first
    for key, val in models.dense_weights(rebuilt).items():
        np.testing.assert_array_equal(val, models.dense_weights(first)[key])


def test_seed_changes_weights(model_dir: Path) -> None:
    a = models.dense_weights(models.build_linear(model_dir, seed=0))
    b = models.dense_weights(models.build_linear(model_dir, seed=1))
    assert a.keys() == b.keys()
    assert not np.array_equal(a["lin1_weight_to_fp16"], b["lin1_weight_to_fp16"])


def test_linear_shared_weight(linear18: Path) -> None:
    func = ct.utils.load_spec(str(linear18)).mlProgram.functions["main"]
    ops = {op.outputs[0].name: op for op in func.block_specializations[func.opset].operations}
    linear_weights = {
        name: op.inputs["weight"].arguments[0].name
        for name, op in ops.items()
        if op.type == "linear"
    }
    shared = [n for n, w in linear_weights.items() if w == "shared_weight_to_fp16"]
    assert len(shared) == 2, linear_weights


@pytest.mark.parametrize("precision", [FP16, FP32], ids=["fp16", "fp32"])
def test_stateful(precision: Any, model_dir: Path) -> None:
    path = models.build_stateful(model_dir, ct.target.iOS18, precision)
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == 9
    assert sorted(s.name for s in spec.description.state) == ["k_cache", "v_cache"]
    assert models.EXPECTED_OP_TYPES["stateful"] <= set(_ops(path))
    assert _candidates(models.dense_weights(path)) == CANDIDATES["stateful"]


def test_stateful_needs_ios18(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="iOS18"):
        models.build_stateful(model_dir, ct.target.iOS17)


@pytest.mark.parametrize("target", [ct.target.iOS16, ct.target.iOS18], ids=lambda t: t.name)
def test_multifunction(target: Any, model_dir: Path) -> None:
    path = models.build_multifunction(model_dir, target, FP16)
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == 9
    assert models.function_names(path) == ["main", "alt"]
    assert spec.description.defaultFunctionName == "main"
    assert [f.name for f in spec.description.functions] == ["main", "alt"]

    by_fn = models.dense_weights_by_function(path)
    assert _candidates(by_fn["main"]) == {"body_weight": (128, 64), "head_a_weight": (96, 128)}
    assert _candidates(by_fn["alt"]) == {"body_weight": (128, 64), "head_b_weight": (48, 128)}
    np.testing.assert_array_equal(
        by_fn["main"]["body_weight_to_fp16"], by_fn["alt"]["body_weight_to_fp16"]
    )
    flat = models.dense_weights(path)
    assert "main/body_weight_to_fp16" in flat and "alt/head_b_weight_to_fp16" in flat
    assert models.dense_weights(path, "alt").keys() == by_fn["alt"].keys()
    # Cross-function deduplication: the shared body weight is stored once.
    main_off = _const_blob_offsets(path, "main")
    alt_off = _const_blob_offsets(path, "alt")
    assert main_off["body_weight_to_fp16"] == alt_off["body_weight_to_fp16"]
    assert main_off["head_a_weight_to_fp16"] != alt_off["head_b_weight_to_fp16"]


def test_minilm(minilm18: Path) -> None:
    import safetensors.numpy

    spec = ct.utils.load_spec(str(minilm18))
    assert spec.specificationVersion == 9
    assert [i.name for i in spec.description.input] == ["input_ids", "position_ids"]
    assert models.EXPECTED_OP_TYPES["minilm"] <= set(_ops(minilm18))
    assert _ops(minilm18).count("linear") == 6 * 6 + 1

    weights = _cast_stripped(models.dense_weights(minilm18))
    sd = safetensors.numpy.load_file(str(models.minilm_safetensors_path()))
    matrices = {k.replace(".", "_"): v for k, v in sd.items() if v.ndim == 2 and v.size > 2048}
    assert len(matrices) == 2 + 6 * 6 + 1
    assert _candidates(weights) == {k: v.shape for k, v in matrices.items()}
    for key, val in matrices.items():
        np.testing.assert_array_equal(weights[key], val.astype(np.float16), err_msg=key)
    params = sum(v.size for v in weights.values())
    assert 22_000_000 < params < 23_000_000


# --------------------------------------------------------------------------------------------
# coremltools helpers
# --------------------------------------------------------------------------------------------


def _constexpr_types(path: Path) -> list[str]:
    return [op for op in _ops(path) if op.startswith("constexpr_")]


def test_palettize_kmeans4_per_tensor(linear18: Path, tmp_path: Path) -> None:
    cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_tensor")
    out = models.compress_with_coremltools(linear18, "palettize", cfg, tmp_path)
    assert out.parent == tmp_path and out.suffix == ".mlpackage"
    assert _constexpr_types(out) == ["constexpr_lut_to_dense"] * 4

    before, after = models.dense_weights(linear18), models.dense_weights(out)
    assert before.keys() == after.keys()
    for key, val in after.items():
        assert val.shape == before[key].shape and val.dtype == np.float16
        if val.size > 2048:
            assert distinct_count(val) <= 16, key
            assert np.abs(val.astype(np.float32) - before[key]).max() < 0.25
        else:  # biases and the 2048-element weight are below the threshold
            np.testing.assert_array_equal(val, before[key])


def test_quantize_int8_per_channel(linear18: Path, tmp_path: Path) -> None:
    cfg = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"
    )
    out = models.compress_with_coremltools(linear18, "quantize", cfg, tmp_path)
    assert _constexpr_types(out) == ["constexpr_blockwise_shift_scale"] * 4
    before, after = models.dense_weights(linear18), models.dense_weights(out)
    assert before.keys() == after.keys()
    for key, val in after.items():
        ref = before[key].astype(np.float32)
        if val.size > 2048:
            row_scale = np.abs(ref).max(axis=1, keepdims=True) / 127
            err = np.abs(val.astype(np.float32) - ref)
            assert (err <= row_scale * 0.51 + 1e-3).all(), key
        else:
            np.testing.assert_array_equal(val, before[key])


def test_prune_50(linear18: Path, tmp_path: Path) -> None:
    cfg = cto.OpMagnitudePrunerConfig(target_sparsity=0.5)
    out = models.compress_with_coremltools(linear18, "prune", cfg, tmp_path / "pruned.mlpackage")
    assert out == tmp_path / "pruned.mlpackage"
    assert _constexpr_types(out) == ["constexpr_sparse_to_dense"] * 4
    before, after = models.dense_weights(linear18), models.dense_weights(out)
    for key, val in after.items():
        if val.size > 2048:
            sparsity = float(np.mean(val == 0))
            assert 0.5 <= sparsity < 0.51, (key, sparsity)
            kept = val != 0
            np.testing.assert_array_equal(val[kept], before[key][kept])
        else:
            np.testing.assert_array_equal(val, before[key])


def test_palettize_ios16_and_decompress(model_dir: Path, tmp_path: Path) -> None:
    src = models.build_conv(model_dir, ct.target.iOS16, FP32)
    cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="uniform", nbits=2))
    out = models.compress_with_coremltools(src, "palettize_weights", cfg, tmp_path)
    assert _constexpr_types(out) == ["constexpr_lut_to_dense"] * 3
    dense = models.compress_with_coremltools(out, "decompress", None, tmp_path)
    assert _constexpr_types(dense) == []
    compressed, decompressed = models.dense_weights(out), models.dense_weights(dense)
    assert compressed.keys() == decompressed.keys() == models.dense_weights(src).keys()
    for key, val in compressed.items():
        np.testing.assert_array_equal(val, decompressed[key])
        if val.size > 2048:
            assert distinct_count(val) <= 4


def test_joint_prune_palettize(linear18: Path, tmp_path: Path) -> None:
    pruned = models.compress_with_coremltools(
        linear18, "prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5), tmp_path
    )
    joint = models.compress_with_coremltools(
        pruned, "palettize", cto.OpPalettizerConfig(nbits=4), tmp_path, joint_compression=True
    )
    assert _constexpr_types(joint).count("constexpr_lut_to_sparse") == 4
    a, b = models.dense_weights(pruned), models.dense_weights(joint)
    assert a.keys() == b.keys()
    for key, val in b.items():
        if val.size > 2048:
            assert distinct_count(val) <= 16
            np.testing.assert_array_equal(val == 0, a[key] == 0)


def test_compress_rejects_unknown_kind(linear18: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown compression kind"):
        models.compress_with_coremltools(linear18, "sparsify", None, tmp_path)


def test_dense_weights_expected_shapes(linear18: Path) -> None:
    weights = models.dense_weights(linear18)
    assert {k: v.shape for k, v in weights.items()} == {
        "lin1_weight_to_fp16": (128, 64),
        "lin1_bias_0_to_fp16": (128,),
        "lin2_weight_to_fp16": (96, 128),
        "lin2_bias_0_to_fp16": (96,),
        "shared_weight_to_fp16": (96, 96),
        "shared_a_bias_0_to_fp16": (96,),
        "shared_b_bias_0_to_fp16": (96,),
        "lin3_weight_to_fp16": (64, 96),
        "lin3_bias_0_to_fp16": (64,),
        "lin_small_weight_to_fp16": (32, 64),
        "y_bias_0_to_fp16": (32,),
    }
    stripped = models.dense_weights(linear18, strip_cast_suffix=True)
    assert "lin1_weight" in stripped
    assert all(v.size >= 100 for v in models.dense_weights(linear18, min_size=100).values())


# --------------------------------------------------------------------------------------------
# benchmarks/make_llm.py (tiny scale)
# --------------------------------------------------------------------------------------------


def _load_make_llm() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_llm.py"
    spec = importlib.util.spec_from_file_location("make_llm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_llm", module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


def test_make_llm_tiny(tmp_path: Path) -> None:
    make_llm = _load_make_llm()
    shape = make_llm.SCALES["tiny"]
    pkg = make_llm.make_llm(
        tmp_path / "tiny.mlpackage", layers=2, hidden=256, kv_dim=32, intermediate=704, vocab=4000
    )
    assert ct.utils.load_spec(str(pkg)).specificationVersion == 9
    ops = _ops(pkg)
    assert ops.count("linear") == 7 * shape.layers + 1 and ops.count("gather") == 1
    weights = {k: v for k, v in models.dense_weights(pkg).items() if v.ndim == 2}
    assert {k: v.shape for k, v in weights.items()} == shape.weight_shapes()
    for key, val in weights.items():
        assert val.dtype == np.float16
        assert abs(float(val.astype(np.float32).std()) - 0.02) < 0.002, key
        assert not np.array_equal(val[0], val[1]), key  # placeholders were overwritten
    # Deterministic: a second build gives the same bytes.
    again = make_llm.make_llm(tmp_path / "again.mlpackage", **make_llm.asdict(shape))
    blob = "Data/com.apple.CoreML/weights/weight.bin"
    assert (pkg / blob).read_bytes() == (again / blob).read_bytes()
    assert make_llm.shape_for_scale(0.5).layers == 11
