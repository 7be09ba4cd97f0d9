"""Weights a pass leaves alone are never silent (issue 13 item 2), weights with NaN/inf or at fp16's
extremes follow one policy (issue 16 item 9), and report sizes are what is written (issue 13
item 6): each skip is named with its reason in the report and in one SkippedWeightsWarning per
call; the CLI lists them and exits 1 when nothing was compressed; NaN/inf weights are never
compressed; weights at ±65504 get finite parameters or are refused with the reason; report
totals equal ``info`` totals and the blob bytes of weight.bin."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path
from typing import Any

import coremltools.optimize.coreml as cto
import models
import numpy as np
import pytest
from coreml_compress import optimize
from coreml_compress.errors import SkippedWeightsWarning
from coreml_compress.inspect import inspect

L = cto.OpPalettizerConfig
Q = cto.OpLinearQuantizerConfig
P = cto.OpMagnitudePrunerConfig
FC1, FC2 = "fc1_weight_to_fp16", "fc2_weight_to_fp16"
PASSES = {
    "palettize": optimize.palettize_weights,
    "quantize": optimize.linear_quantize_weights,
    "prune": optimize.prune_weights,
}


def cfg(op_config: Any) -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=op_config)


def run_pass(
    kind: str, src: Path, op_config: Any, out: Path
) -> tuple[Any, list[SkippedWeightsWarning]]:
    """The pass's report and the SkippedWeightsWarnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = PASSES[kind](src, cfg(op_config), output_path=out, with_report=True)
    return report, [w.message for w in caught if issubclass(w.category, SkippedWeightsWarning)]


def blob_data_bytes(package: Path) -> int:
    """Data bytes of every blob in the package's weight.bin (MILBlob v2: a 64-byte header with the
    blob count, then per blob a 64-aligned metadata record: sentinel, dtype, size, data offset)."""
    data = (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    total, at = 0, 64
    for _ in range(count):
        sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, at)
        assert sentinel == 0xDEADBEEF
        total += size
        at = (offset + size + 63) // 64 * 64
    return total


@pytest.fixture(scope="module")
def mlp(model_dir: Path) -> Path:
    return models.build_mlp(model_dir)


@pytest.fixture(scope="module")
def mlp_nan(model_dir: Path) -> Path:
    return models.build_mlp(model_dir, special="nan")


@pytest.fixture(scope="module")
def mlp_max(model_dir: Path) -> Path:
    return models.build_mlp(model_dir, special="max")


# --- skipped weights are named -------------------------------------------------------------------

SIZE_48 = {
    "palettize": L(nbits=4, granularity="per_grouped_channel", group_size=48),
    "quantize": Q(dtype="int4", granularity="per_block", block_size=48),
}


@pytest.mark.parametrize("kind", sorted(SIZE_48))
def test_a_size_that_divides_no_channel_count_is_named(
    kind: str, mlp: Path, tmp_path: Path
) -> None:
    report, warned = run_pass(kind, mlp, SIZE_48[kind], tmp_path / "out.mlpackage")
    assert list(report) == []
    assert [(s["name"], tuple(s["shape"]), s["reason"]) for s in report.skipped] == [
        (FC1, (1024, 256), "mode"),
        (FC2, (256, 1024), "mode"),
    ]
    assert all("48" in s["message"] and "divisible" in s["message"] for s in report.skipped)
    assert len(warned) == 1, "one warning per call"
    text = str(warned[0])
    assert FC1 in text and FC2 in text and "1024x256" in text and "divisible" in text
    assert [s["name"] for s in warned[0].skipped] == [FC1, FC2]


def test_weights_below_the_threshold_are_counted_not_warned(mlp: Path, tmp_path: Path) -> None:
    report, warned = run_pass(
        "palettize", mlp, L(nbits=4, weight_threshold=10**7), tmp_path / "o.mlpackage"
    )
    assert list(report) == [] and report.skipped == [] and warned == []
    assert report.below_threshold == 2


def test_a_partial_skip_warns_about_the_skipped_weight_only(
    model_dir: Path, tmp_path: Path
) -> None:
    # build_linear: 48 divides 96 (lin2, shared) but not 128 or 64 (lin1, lin3).
    src = models.build_linear(model_dir)
    report, warned = run_pass(
        "palettize",
        src,
        L(nbits=4, granularity="per_grouped_channel", group_size=48),
        tmp_path / "o.mlpackage",
    )
    assert sorted(r["name"] for r in report) == ["lin2_weight_to_fp16", "shared_weight_to_fp16"]
    assert sorted(s["name"] for s in report.skipped) == [
        "lin1_weight_to_fp16",
        "lin3_weight_to_fp16",
    ]
    assert report.below_threshold == 1  # lin_small_weight: exactly 2048 elements
    assert len(warned) == 1 and "lin1_weight_to_fp16" in str(warned[0])
    assert "lin2_weight_to_fp16" not in str(warned[0])


def test_a_recipe_names_skips_by_step(mlp: Path, tmp_path: Path) -> None:
    steps = [("prune", cfg(P(target_sparsity=0.5))), ("quantize", cfg(SIZE_48["quantize"]))]
    with pytest.warns(SkippedWeightsWarning) as caught:
        _, reports = optimize.apply_recipe(
            mlp, steps, output_path=tmp_path / "o.mlpackage", with_report=True
        )
    assert [r["name"] for r in reports[0]] == [FC1, FC2] and reports[0].skipped == []
    assert list(reports[1]) == []
    assert [s["name"] for s in reports[1].skipped] == [FC1, FC2]
    assert len(caught) == 1 and "step 2 (quantize)" in str(caught[0].message)


cli = models.run_cli


def test_cli_exits_1_with_the_reasons_when_nothing_is_compressed(mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mlpackage"
    r = cli(
        "palettize",
        str(mlp),
        str(out),
        "--granularity",
        "per-grouped-channel",
        "--group-size",
        "48",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "No weight was compressed" in r.stderr
    for name in (FC1, FC2):
        assert name in r.stderr
    assert "not divisible by channel_group_size (48)" in r.stderr
    assert "SkippedWeightsWarning" not in r.stderr, "listed once, not again as a warning"


def test_cli_lists_skips_and_exits_0_when_something_is_compressed(
    model_dir: Path, tmp_path: Path
) -> None:
    src = models.build_linear(model_dir)
    out = tmp_path / "o.mlpackage"
    r = cli(
        "quantize",
        str(src),
        str(out),
        "--dtype",
        "int4",
        "--granularity",
        "per-block",
        "--block-size",
        "48",
    )
    assert r.returncode == 0, r.stderr
    assert "lin1_weight_to_fp16" in r.stdout and "not compressed" in r.stdout
    assert "not larger than weight_threshold" in r.stdout


def test_cli_recipe_exits_1_when_nothing_is_compressed(mlp: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n  - palettize: {config_type: OpPalettizerConfig, nbits: 4, granularity: per_grouped_channel,"
        " group_size: 48}\n"
    )
    r = cli("compress", str(mlp), str(tmp_path / "o.mlpackage"), "--recipe", str(recipe))
    assert r.returncode == 1, r.stdout + r.stderr
    assert FC1 in r.stderr and "divisible" in r.stderr


# --- non-finite and extreme weights --------------------------------------------------------------

MODES = {
    "kmeans4": ("palettize", L(nbits=4)),
    "uniform8": ("palettize", L(nbits=8, mode="uniform")),
    "kmeans4-grouped": ("palettize", L(nbits=4, granularity="per_grouped_channel", group_size=16)),
    "int8-symmetric": ("quantize", Q(dtype="int8")),
    "int8-linear": ("quantize", Q(dtype="int8", mode="linear")),
    "uint8-linear": ("quantize", Q(dtype="uint8", mode="linear")),
    "int4-block": ("quantize", Q(dtype="int4", granularity="per_block", block_size=32)),
    "prune50": ("prune", P(target_sparsity=0.5)),
    "prune2:4": ("prune", P(n_m_ratio=(2, 4))),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_non_finite_weights_are_skipped_and_named(mode: str, mlp_nan: Path, tmp_path: Path) -> None:
    kind, op_config = MODES[mode]
    report, warned = run_pass(kind, mlp_nan, op_config, tmp_path / "o.mlpackage")
    assert [r["name"] for r in report] == [FC2]
    assert [(s["name"], s["reason"]) for s in report.skipped] == [(FC1, "non_finite")]
    assert len(warned) == 1 and FC1 in str(warned[0]) and "NaN" in str(warned[0])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_weights_at_fp16_extremes_never_restore_to_nan(
    mode: str, mlp_max: Path, tmp_path: Path
) -> None:
    kind, op_config = MODES[mode]
    out = tmp_path / "o.mlpackage"
    report, _ = run_pass(kind, mlp_max, op_config, out)
    original = models.dense_weights(mlp_max)[FC1]
    dense = models.dense_weights(out)[FC1]
    assert np.isfinite(dense).all()
    if FC1 in [r["name"] for r in report]:
        # The extremes survive up to the method's step size (k-means keeps them exactly).
        assert dense.max() > 60000 and dense.min() < -60000
        assert math.isfinite(next(r for r in report if r["name"] == FC1)["snr_db"])
    else:
        skip = next(s for s in report.skipped if s["name"] == FC1)
        assert skip["reason"] == "out_of_range" and "range of float16" in skip["message"]
        np.testing.assert_array_equal(dense, original)


@pytest.mark.parametrize("mode", ["uniform8", "int8-linear", "uint8-linear"])
def test_where_coremltools_overflows_the_parameters_are_finite(
    mode: str, mlp_max: Path, tmp_path: Path
) -> None:
    # coremltools' fp16 arithmetic turns these into 100 % NaN; here they compress.
    kind, op_config = MODES[mode]
    report, warned = run_pass(kind, mlp_max, op_config, tmp_path / "o.mlpackage")
    assert [r["name"] for r in report] == [FC1, FC2] and warned == []


# --- report sizes are what is written ------------------------------------------------------------


@pytest.mark.parametrize(
    "steps",
    [
        [("prune", P(target_sparsity=0.5)), ("palettize", L(nbits=4))],
        [("prune", P(n_m_ratio=(2, 4))), ("quantize", Q(dtype="int8"))],
        [("palettize", L(nbits=4)), ("prune", P(target_sparsity=0.3))],
    ],
    ids=["prune-palettize", "prune-quantize", "palettize-prune"],
)
def test_recipe_report_totals_are_info_totals_and_blob_bytes(
    steps: list[tuple[str, Any]], mlp: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.mlpackage"
    _, reports = optimize.apply_recipe(
        mlp, [(k, cfg(c)) for k, c in steps], output_path=out, with_report=True
    )
    for report in reports:
        assert [r["name"] for r in report] == [FC1, FC2], "names of the input model"
    # Each step starts from what the previous one left.
    assert [r["bytes_before"] for r in reports[1]] == [r["bytes_after"] for r in reports[0]]
    info = inspect(out)
    compressed = [w for w in info if w.compression != "none"]
    assert sum(r["bytes_after"] for r in reports[-1]) == sum(w.bytes_on_disk for w in compressed)
    assert info.totals["bytes_on_disk"] == blob_data_bytes(out)


@pytest.mark.parametrize("mode", ["kmeans4", "int4-block", "prune50"])
def test_pass_report_sizes_are_info_sizes(mode: str, mlp: Path, tmp_path: Path) -> None:
    kind, op_config = MODES[mode]
    out = tmp_path / "o.mlpackage"
    report, _ = run_pass(kind, mlp, op_config, out)
    compressed = [w for w in inspect(out) if w.compression != "none"]
    assert [r["bytes_after"] for r in report] == [w.bytes_on_disk for w in compressed]
    assert [r["bytes_before"] for r in report] == [
        w.bytes_on_disk for w in inspect(mlp) if w.name in (FC1, FC2)
    ]


def test_joint_pass_report_counts_the_whole_chain(mlp: Path, tmp_path: Path) -> None:
    pruned = tmp_path / "pruned.mlpackage"
    optimize.prune_weights(mlp, cfg(P(target_sparsity=0.5)), output_path=pruned)
    out = tmp_path / "o.mlpackage"
    _, report = optimize.palettize_weights(
        pruned, cfg(L(nbits=4)), True, output_path=out, with_report=True
    )
    before = {w.name: w.bytes_on_disk for w in inspect(pruned) if w.compression != "none"}
    after = [w.bytes_on_disk for w in inspect(out) if w.compression != "none"]
    assert [r["name"] for r in report] == list(before), "the chain's name in the input model"
    assert [r["bytes_before"] for r in report] == list(before.values())
    assert [r["bytes_after"] for r in report] == after


# --- info on multifunction packages ---------------------------------------------------------------


def test_info_counts_a_blob_shared_by_functions_once(mlp: Path, tmp_path: Path) -> None:
    import coreml_compress as cc

    palettized = tmp_path / "pal.mlpackage"
    optimize.palettize_weights(mlp, cfg(L(nbits=4)), output_path=palettized)
    desc = cc.MultiFunctionDescriptor()
    for target, pkg in [("dense", mlp), ("again", mlp), ("pal", palettized)]:
        desc.add_function(str(pkg), "main", target)
    desc.default_function_name = "dense"
    merged = tmp_path / "merged.mlpackage"
    cc.save_multifunction(desc, merged)
    info = inspect(merged)
    assert info.totals["bytes_on_disk"] == blob_data_bytes(merged)
    assert sum(w.bytes_on_disk for w in info) > blob_data_bytes(merged), "functions share blobs"
    shared = {(w.function, w.name): w.shared_with for w in info}
    assert shared[("dense", FC1)] == ("again",) and shared[("again", FC1)] == ("dense",)
    # The bias is identical in all three functions; the palettized weights are the pal function's own.
    (bias,) = [w for w in info if w.function == "pal" and w.shape == (1024,)]
    assert bias.shared_with == ("again", "dense")
    assert all(w.shared_with == () for w in info if w.function == "pal" and w.compression != "none")
    r = cli("info", str(merged))
    assert r.returncode == 0, r.stderr
    assert "shared with" in r.stdout and "counted once" in r.stdout
