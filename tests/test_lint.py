"""Deployment lint (coreml_compress.lint, `coreml-compress lint`) on packages compressed by
coremltools, and the DeploymentWarning of every call of ours that writes per_block quantization."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import optimize
from coreml_compress.errors import DeploymentWarning, SkippedWeightsWarning
from coreml_compress.lint import (
    LintMessage,
    Severity,
    includes_neural_engine,
    is_per_block,
    lint_package,
)
from coremltools.proto import MIL_pb2, Model_pb2

CANDIDATES = {"lin1_weight", "lin2_weight", "shared_weight", "lin3_weight"}


def _quantized(dtype: str, granularity: str, block_size: int = 32) -> cto.OpLinearQuantizerConfig:
    return cto.OpLinearQuantizerConfig(dtype=dtype, granularity=granularity, block_size=block_size)


@pytest.fixture(scope="module")
def linear18(model_dir: Path) -> Path:
    return models.build_linear(model_dir, "iOS18")


@pytest.fixture(scope="module")
def per_block(linear18: Path, oracle_dir: Path) -> Path:
    return models.compress_with_coremltools(
        linear18, "quantize", _quantized("int4", "per_block"), oracle_dir
    )


@pytest.fixture(scope="module")
def per_channel_scale(linear18: Path, oracle_dir: Path) -> Path:
    config = cto.OpPalettizerConfig(nbits=4, enable_per_channel_scale=True)
    return models.compress_with_coremltools(linear18, "palettize", config, oracle_dir)


def _weights(messages: list[LintMessage], rule: str) -> set[str]:
    return {
        models._base_name(m.weight).removesuffix("_to_fp16") for m in messages if m.rule == rule
    }


def test_per_block_is_an_error_on_the_neural_engine(per_block: Path) -> None:
    for units in ("cpu_and_ne", "all", "CPU_AND_NE"):
        messages = lint_package(per_block, units)
        assert {m.rule for m in messages} == {"per-block-on-ane"}
        assert _weights(messages, "per-block-on-ane") == CANDIDATES
        m = messages[0]
        assert m.severity is Severity.ERROR and m.op == "constexpr_blockwise_shift_scale"
        assert "coremltools/issues/2510" in m.source and "coreai-models/issues/279" in m.source
        assert "ANE only support per-cout/per-tensor quantization" in m.reason
        assert m.weight in str(m) and "error:" in str(m)
    for units in ("cpu_and_gpu", "cpu_only"):
        assert lint_package(per_block, units) == []


def test_per_channel_and_per_tensor_quantization_pass(linear18: Path, oracle_dir: Path) -> None:
    for granularity in ("per_channel", "per_tensor"):
        pkg = models.compress_with_coremltools(
            linear18, "quantize", _quantized("int8", granularity), oracle_dir
        )
        assert lint_package(pkg, "cpu_and_ne") == [], granularity


def test_per_channel_scale_warns_on_the_neural_engine(per_channel_scale: Path) -> None:
    messages = lint_package(per_channel_scale, "all")
    assert {(m.rule, m.severity) for m in messages} == {
        ("per-channel-scale-on-ane", Severity.WARNING)
    }
    assert _weights(messages, "per-channel-scale-on-ane") == CANDIDATES
    assert "coremltools/pull/2688" in messages[0].source
    assert "macOS 26" in messages[0].reason and "CPU and GPU load it" in messages[0].reason
    assert lint_package(per_channel_scale, "cpu_and_gpu") == []


def test_older_opset_is_named(model_dir: Path, oracle_dir: Path) -> None:
    linear16 = models.build_linear(model_dir, "iOS16")
    pal = models.compress_with_coremltools(
        linear16, "palettize", cto.OpPalettizerConfig(nbits=4), oracle_dir
    )
    for pkg in (linear16, pal):
        messages = lint_package(pkg, "cpu_and_ne")
        assert [(m.rule, m.severity, m.function, m.op, m.weight) for m in messages] == [
            ("older-opset", Severity.INFO, "main", "opset CoreML6", "")
        ]
        assert "minimum_deployment_target=iOS18" in messages[0].reason


def _with_opset(src: Path, dest: Path, opset: str, spec_version: int) -> Path:
    """A copy of ``src`` whose model declares an older opset (the ops stay as they are)."""
    shutil.copytree(src, dest)
    model_file = dest / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    spec.specificationVersion = spec_version
    for function in spec.mlProgram.functions.values():
        (old,) = function.block_specializations  # single-function packages have one block
        block = MIL_pb2.Block()
        block.CopyFrom(function.block_specializations[old])
        del function.block_specializations[old]
        function.block_specializations[opset].CopyFrom(block)
        function.opset = opset
    model_file.write_bytes(spec.SerializeToString())
    return dest


def test_ios18_ops_in_an_older_opset_are_errors(per_block: Path, tmp_path: Path) -> None:
    pkg = _with_opset(per_block, tmp_path / "old.mlpackage", "CoreML6", 7)
    messages = lint_package(pkg, "cpu_only")
    assert [m.rule for m in messages] == ["ios18-op-in-older-opset"] * 4 + ["older-opset"]
    assert _weights(messages, "ios18-op-in-older-opset") == CANDIDATES
    assert messages[0].severity is Severity.ERROR
    # On the ANE the per-block errors come too, errors first.
    rules = [m.rule for m in lint_package(pkg, "cpu_and_ne")]
    assert rules[:8].count("per-block-on-ane") == 4 and rules[-1] == "older-opset"


def test_cli_exit_codes(per_block: Path, per_channel_scale: Path, linear18: Path) -> None:
    run = models.run_cli("lint", str(per_block), "--compute-units", "cpu_and_ne")
    assert run.returncode == 3, run.stderr
    assert run.stdout.count("error: ") == 4 and "4 errors, 0 warnings, 0 infos" in run.stdout
    assert models.run_cli("lint", str(per_block), "--compute-units", "cpu_and_gpu").returncode == 0
    run = models.run_cli("lint", str(per_channel_scale))  # all, by default
    assert run.returncode == 0 and "warning: " in run.stdout
    assert models.run_cli("lint", str(per_channel_scale), "--strict").returncode == 3
    run = models.run_cli("lint", str(linear18), "--compute-units", "cpu_and_ne")
    assert run.returncode == 0 and run.stdout.strip() == "no findings"
    run = models.run_cli("lint", str(linear18), "--compute-units", "gpu")
    assert run.returncode == 2 and "invalid choice" in run.stderr
    run = models.run_cli("lint", str(linear18.parent / "missing.mlpackage"))
    assert run.returncode == 1 and "Traceback" not in run.stderr


def test_compute_units_and_scale_shapes() -> None:
    assert includes_neural_engine("all") and includes_neural_engine("CPU_AND_NE")
    assert includes_neural_engine(None)  # Core ML's default
    assert includes_neural_engine(ct.ComputeUnit.CPU_AND_NE)
    assert not includes_neural_engine(ct.ComputeUnit.CPU_ONLY)
    assert not includes_neural_engine("cpu_and_gpu")
    with pytest.raises(ValueError, match="unknown compute units"):
        includes_neural_engine("gpu")
    assert not is_per_block([1, 1], [64, 32])  # per tensor
    assert not is_per_block([64, 1], [64, 32])  # per channel
    assert not is_per_block([1, 32], [64, 32])  # per channel along the other axis
    assert is_per_block([64, 2], [64, 32])  # blocks of 16
    assert is_per_block([8, 1], [64, 32])  # blocks of 8 along one axis


def test_writing_per_block_warns_once_naming_the_weights(linear18: Path, tmp_path: Path) -> None:
    config = optimize.OptimizationConfig(global_config=_quantized("int4", "per_block"))
    with pytest.warns(DeploymentWarning) as caught:
        path, report = optimize.linear_quantize_weights(
            linear18, config, output_path=tmp_path / "q.mlpackage", with_report=True
        )
    deployment = [w.message for w in caught if isinstance(w.message, DeploymentWarning)]
    assert len(deployment) == 1
    assert {
        models._base_name(w["name"]).removesuffix("_to_fp16") for w in deployment[0].weights
    } == CANDIDATES
    assert "ANE only support per-cout/per-tensor quantization" in str(deployment[0])
    assert all(r["per_block"] for r in report)
    assert lint_package(path, "cpu_and_ne")  # what was written is what lint finds

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeploymentWarning)
        _, report = optimize.linear_quantize_weights(
            linear18,
            _quantized("int8", "per_channel"),
            output_path=tmp_path / "c.mlpackage",
            with_report=True,
        )
        assert not any(r["per_block"] for r in report)

    steps = [
        ("prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5)),
        ("quantize", _quantized("int8", "per_block")),
    ]
    with pytest.warns(DeploymentWarning) as caught:
        optimize.apply_recipe(linear18, steps, output_path=tmp_path / "r.mlpackage")
    deployment = [w.message for w in caught if isinstance(w.message, DeploymentWarning)]
    assert len(deployment) == 1 and {w["step"] for w in deployment[0].weights} == {"2 (quantize)"}
    assert len(lint_package(tmp_path / "r.mlpackage", "cpu_and_ne")) == 4


def test_cli_quantize_per_block_warns(linear18: Path, tmp_path: Path) -> None:
    run = models.run_cli(
        "quantize",
        str(linear18),
        str(tmp_path / "q.mlpackage"),
        "--dtype",
        "int4",
        "--granularity",
        "per-block",
    )
    assert run.returncode == 0, run.stderr
    assert "coreml-compress: warning: 4 weight(s) were quantized per_block" in run.stderr
    assert "DeploymentWarning" not in run.stderr


def test_skipped_warning_still_separate(linear18: Path, tmp_path: Path) -> None:
    # block_size 48 does not divide 64: those weights are skipped, the rest are per_block.
    with pytest.warns(SkippedWeightsWarning), pytest.warns(DeploymentWarning):
        optimize.linear_quantize_weights(
            linear18, _quantized("int8", "per_block", 48), output_path=tmp_path / "s.mlpackage"
        )
