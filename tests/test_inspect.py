"""coreml_compress.inspect: parity with coremltools' get_weights_metadata on dense models, and
the compression kind and parameters of packages coremltools compressed."""

from __future__ import annotations

import logging
from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import _native
from coreml_compress.errors import PackageIOError
from coreml_compress.inspect import WeightReport, inspect
from distinct import distinct_count

logging.getLogger("coremltools").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def linear(model_dir: Path) -> Path:
    return models.build_linear(model_dir)


@pytest.fixture(scope="session")
def conv(model_dir: Path) -> Path:
    return models.build_conv(model_dir)


@pytest.mark.parametrize("kind", ["linear", "conv", "linear-fp32", "conv-ios16"])
def test_dense_matches_get_weights_metadata(kind: str, model_dir: Path) -> None:
    builders = {
        "linear": lambda: models.build_linear(model_dir),
        "conv": lambda: models.build_conv(model_dir),
        "linear-fp32": lambda: models.build_linear(model_dir, precision="fp32"),
        "conv-ios16": lambda: models.build_conv(model_dir, target="iOS16"),
    }
    path = builders[kind]()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    expected = cto.get_weights_metadata(mlmodel, weight_threshold=2048)
    report = inspect(path)
    assert isinstance(report, WeightReport)
    mine = {w.name: w for w in report if w.size >= 2048}
    assert sorted(mine) == sorted(expected)
    for name, meta in expected.items():
        w = mine[name]
        assert w.shape == meta.val.shape, name
        assert w.distinct == meta.unique_values, name
        assert w.dtype == {np.float16: "fp16", np.float32: "fp32"}[meta.val.dtype.type]
        assert sorted(c.op_type for c in w.consumers) == sorted(c.op_type for c in meta.child_ops)
        assert sorted(c.op_name for c in w.consumers) == sorted(c.name for c in meta.child_ops)
        assert w.compression == "none" and w.chain == ()
        assert w.bytes_on_disk == meta.val.nbytes
    # Smaller weights (biases, lin_small) are reported too, down to 10 elements.
    assert all(w.size >= 10 for w in report)
    assert any(w.size < 2048 for w in report)


def test_shared_weight_lists_every_consumer(linear: Path) -> None:
    shared = inspect(linear).by_name()["shared_weight_to_fp16"]
    assert sorted(c.op_name for c in shared.consumers) == [
        "shared_a_cast_fp16",
        "shared_b_cast_fp16",
    ]
    assert {c.param for c in shared.consumers} == {"weight"}


def test_accepts_mlmodel_and_module_is_callable(linear: Path) -> None:
    by_path = inspect(linear)
    by_model = inspect(ct.models.MLModel(str(linear), skip_model_load=True))
    assert by_path == by_model
    import coreml_compress.inspect

    assert coreml_compress.inspect(linear) == by_path  # type: ignore[operator]


def test_totals(linear: Path) -> None:
    report = inspect(linear)
    t = report.totals
    assert t["weights"] == len(report)
    assert t["bytes_on_disk"] == sum(w.bytes_on_disk for w in report)
    assert t["dense_bytes"] == sum(w.size * 2 for w in report)
    assert t["by_compression"] == {"none": len(report)}
    assert t["compression_ratio"] == pytest.approx(1.0)


def _compressed(path: Path, kind: str, config: object, out: Path) -> WeightReport:
    compressed = models.compress_with_coremltools(path, kind, config, out)
    report = inspect(compressed)
    _check_against_coremltools(compressed, report)
    return report


def _check_against_coremltools(path: Path, report: WeightReport) -> None:
    """Shape, dtype and distinct count of every record equal coremltools' decompressed weights."""
    dense = models.dense_weights(path)
    assert len(dense) == len(report)
    for w in report:
        val = dense[models._base_name(w.var)]
        assert w.shape == val.shape, w.name
        assert w.distinct == distinct_count(val), w.name


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_palettized(target: str, model_dir: Path, tmp_path: Path) -> None:
    src = models.build_linear(model_dir, target=target)
    report = _compressed(src, "palettize", cto.OpPalettizerConfig(nbits=4), tmp_path)
    dense = {w.name: w for w in inspect(src)}
    pal = [w for w in report if w.compression == "palettized"]
    assert len(pal) == 4  # lin1, lin2, shared, lin3 (> 2048 elements)
    for w in pal:
        assert w.params["nbits"] == 4
        assert w.distinct <= 16
        assert w.chain == ("constexpr_lut_to_dense",)
        assert w.dtype == "fp16"
        assert w.bytes_on_disk < w.dense_bytes / 3
        base = next(n for n in dense if w.var.startswith(n))
        assert w.shape == dense[base].shape
        if target == "iOS18":
            assert w.params["lut_shape"][-2:] == (16, 1)


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_quantized(target: str, model_dir: Path, tmp_path: Path) -> None:
    src = models.build_conv(model_dir, target=target)
    report = _compressed(src, "quantize", cto.OpLinearQuantizerConfig(), tmp_path)
    q = [w for w in report if w.compression == "quantized"]
    assert len(q) == 3
    op = "constexpr_affine_dequantize" if target == "iOS16" else "constexpr_blockwise_shift_scale"
    for w in q:
        assert w.chain == (op,)
        assert w.params["data_dtype"] == "int8"
        assert w.params["nbits"] == 8
        assert w.params["scale_shape"][0] == w.shape[0]
        assert isinstance(w.params["has_offset"], bool)
        assert w.distinct <= 256 * w.params["scale_shape"][0]
        assert w.dtype == "fp16"


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_pruned(target: str, model_dir: Path, tmp_path: Path) -> None:
    src = models.build_conv(model_dir, target=target)
    report = _compressed(src, "prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5), tmp_path)
    s = [w for w in report if w.compression == "sparse"]
    assert len(s) == 3
    for w in s:
        assert w.chain == ("constexpr_sparse_to_dense",)
        assert w.params["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert w.params["density"] + w.params["sparsity"] == pytest.approx(1.0)
        # Ties at the magnitude threshold are pruned too: at most half survive.
        assert 0.49 * w.size <= w.params["nonzero"] <= w.size / 2


def test_joint_sparse_palettized(model_dir: Path, tmp_path: Path) -> None:
    src = models.build_linear(model_dir)
    pruned = models.compress_with_coremltools(
        src, "prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5), tmp_path / "p.mlpackage"
    )
    joint = models.compress_with_coremltools(
        pruned,
        "palettize",
        cto.OpPalettizerConfig(nbits=4),
        tmp_path / "j.mlpackage",
        joint_compression=True,
    )
    report = inspect(joint)
    _check_against_coremltools(joint, report)
    assert "sparse+palettized" in {w.compression for w in report}
    for w in report:
        if w.compression == "sparse+palettized":
            assert w.params["nbits"] == 4
            assert w.distinct <= 17  # 16 LUT entries and the pruned zeros
            assert w.params["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_example_package(tmp_path: Path) -> None:
    path = _native.write_example(str(tmp_path / "ex.mlpackage"))
    report = inspect(path)
    assert len(report) >= 3
    assert report.totals["by_compression"] == {"none": len(report)}


def test_bad_path_raises(tmp_path: Path) -> None:
    with pytest.raises(PackageIOError):
        inspect(tmp_path / "missing.mlpackage")


@pytest.mark.parametrize(
    "config, kind, extra",
    [
        ({"nbits": 4, "enable_per_channel_scale": True}, "palettized", "per_channel_scale_shape"),
        ({"nbits": 4, "cluster_dim": 2}, "palettized", "vector_axis"),
    ],
)
def test_palettized_variants_ios18(
    config: dict, kind: str, extra: str, model_dir: Path, tmp_path: Path
) -> None:
    src = models.build_linear(model_dir)
    report = _compressed(src, "palettize", cto.OpPalettizerConfig(**config), tmp_path)
    pal = [w for w in report if w.compression != "none"]
    assert len(pal) == 4
    for w in pal:
        assert w.compression == kind
        assert extra in w.params
        assert w.params["lut_shape"][-2] == 16
        if "cluster_dim" in config:
            assert w.params["cluster_dim"] == 2
        elif "enable_per_channel_scale" not in config:
            assert w.distinct <= 16


def test_joint_palettized_quantized(model_dir: Path, tmp_path: Path) -> None:
    src = models.build_linear(model_dir)
    pal = models.compress_with_coremltools(
        src, "palettize", cto.OpPalettizerConfig(nbits=4), tmp_path / "p.mlpackage"
    )
    joint = models.compress_with_coremltools(
        pal,
        "quantize",
        cto.OpLinearQuantizerConfig(granularity="per_tensor"),
        tmp_path / "j.mlpackage",
        joint_compression=True,
    )
    report = inspect(joint)
    _check_against_coremltools(joint, report)
    compressed = [w for w in report if w.compression != "none"]
    assert len(compressed) == 4
    for w in compressed:
        assert w.compression == "palettized+quantized"
        assert w.params["data_dtype"] == "int8" and w.params["nbits"] == 4
        assert w.distinct <= 16
