"""patch_coremltools routes coremltools' own functions to this engine; the CLI's compression
commands write the same packages as the Python API."""

from __future__ import annotations

from pathlib import Path

import coreml_compress
import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import patch
from test_quantize_prune import assert_same_compression


def test_patch_and_unpatch(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4))
    theirs = models.compress_with_coremltools(src, "palettize", config, oracle_dir)
    original = cto.palettize_weights
    coreml_compress.patch_coremltools()
    try:
        assert patch.is_patched() and cto.palettize_weights is not original
        model = ct.models.MLModel(str(src), skip_model_load=True)
        result = cto.palettize_weights(model, config)
        assert isinstance(result, ct.models.MLModel)
        result.save(str(tmp_path / "patched.mlpackage"))
        dense = cto.decompress_weights(result)
        assert isinstance(dense, ct.models.MLModel)
    finally:
        coreml_compress.unpatch_coremltools()
    assert cto.palettize_weights is original and not patch.is_patched()
    assert_same_compression(tmp_path / "patched.mlpackage", theirs)


def test_patch_warns_on_untested_coremltools_versions() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for version in ("8.3.0", "9.0", "9.0b1"):
            patch._warn_if_untested(version)
    for version in ("8.2.1", "9.1.0", "10.0"):
        with pytest.warns(RuntimeWarning, match=f"tested with coremltools 8.3, 9.0, not {version}"):
            patch._warn_if_untested(version)


cli = models.run_cli


def test_cli_commands_match_the_api(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    cases = [
        (
            ["palettize", "--nbits", "4"],
            "palettize",
            cto.OpPalettizerConfig(nbits=4),
        ),
        (
            ["quantize", "--dtype", "int4", "--granularity", "per-block", "--block-size", "32"],
            "quantize",
            cto.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32),
        ),
        (["prune", "--n-m", "2:4"], "prune", cto.OpMagnitudePrunerConfig(n_m_ratio=(2, 4))),
    ]
    conv = models.build("conv", model_dir, "iOS18", "fp16")
    grouped = [
        "palettize",
        "--mode",
        "uniform",
        "--nbits",
        "4",
        "--granularity",
        "per-grouped-channel",
        "--group-size",
        "8",
    ]
    cases.append(
        (
            grouped,
            "palettize",
            cto.OpPalettizerConfig(
                mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=8
            ),
        )
    )
    for i, (argv, kind, op_config) in enumerate(cases):
        out = tmp_path / f"cli{i}.mlpackage"
        model = conv if "--mode" in argv else src
        run = cli(argv[0], str(model), str(out), *argv[1:])
        assert run.returncode == 0, run.stderr
        assert "SNR dB" in run.stdout and "bits per weight" in run.stdout
        assert "weights" in run.stderr  # the progress bar
        theirs = models.compress_with_coremltools(
            model, kind, cto.OptimizationConfig(global_config=op_config), oracle_dir
        )
        assert_same_compression(out, theirs)


def test_cli_config_file_and_errors(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS16", "fp16")
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text(
        "config_type: OptimizationConfig\nglobal_config:\n  mode: uniform\n  nbits: 2\n"
        "  config_type: OpPalettizerConfig\n"
    )
    run = cli("palettize", str(src), str(tmp_path / "y.mlpackage"), "--config", str(yaml_path))
    assert run.returncode == 0, run.stderr
    assert "constexpr_lut_to_dense" in models.op_types(tmp_path / "y.mlpackage")
    run = cli(
        "palettize", str(src), str(tmp_path / "z.mlpackage"), "--granularity", "per-grouped-channel"
    )
    assert run.returncode == 1 and "supported since iOS18" in run.stderr
    assert "Traceback" not in run.stderr


def test_demo_palettizes(tmp_path: Path) -> None:
    run = cli("demo", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "palettized" in run.stdout and "SNR dB" in run.stdout
    assert (tmp_path / "example.palettized.mlpackage").is_dir()
    ct.models.MLModel(str(tmp_path / "example.palettized.mlpackage"), skip_model_load=True)


def test_cli_recipe_matches_joint_steps(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n"
        "  - prune: {config_type: OpMagnitudePrunerConfig, target_sparsity: 0.5}\n"
        "  - quantize: {config_type: OpLinearQuantizerConfig, dtype: int8}\n"
    )
    out = tmp_path / "recipe.mlpackage"
    run = cli("compress", str(src), str(out), "--recipe", str(recipe))
    assert run.returncode == 0, run.stderr
    assert "Step 2: quantize" in run.stdout
    pruned = models.compress_with_coremltools(
        src,
        "prune",
        cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5)),
        oracle_dir,
    )
    theirs = models.compress_with_coremltools(
        pruned,
        "quantize",
        cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig()),
        oracle_dir,
        joint_compression=True,
    )
    a, b = models.dense_weights(out), models.dense_weights(theirs)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [{squash: {}}]\n")
    run = cli("compress", str(src), str(tmp_path / "x.mlpackage"), "--recipe", str(bad))
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"coreml-compress: error: {bad}: step 1: unknown step 'squash'; "
        "expected one of palettize, prune, quantize"
    )
    bad.write_text(
        "steps:\n  - prune: {config_type: OpMagnitudePrunerConfig, target_sparsty: 0.5}\n"
    )
    run = cli("compress", str(src), str(tmp_path / "x.mlpackage"), "--recipe", str(bad))
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"coreml-compress: error: {bad}: step 1 (prune): global_config: unknown key 'target_sparsty' "
        "for OpMagnitudePrunerConfig; did you mean 'target_sparsity'?"
    )
    bad.write_text("steps:\n  - prune: {config_type: OpMagnitudePrunerConfig\n")
    run = cli("compress", str(src), str(tmp_path / "x.mlpackage"), "--recipe", str(bad))
    assert run.returncode == 1 and len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith(f"coreml-compress: error: {bad}:3: invalid YAML: ")
