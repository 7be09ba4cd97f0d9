"""Recipes (several compression steps in one pass over the weights, ``optimize.apply_recipe`` and
``coreml-compress compress --recipe``) against the same steps run one after the other, each after
the first with joint compression: the same constexpr ops with identical parameters, and
bit-identical dense weights. The step-by-step path is itself checked against coremltools in
test_joint.py; here one recipe is also compared with coremltools directly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import inspect as cc_inspect
from coreml_compress import optimize
from test_quantize_prune import assert_same_compression

P = cto.OpMagnitudePrunerConfig
L = cto.OpPalettizerConfig
Q = cto.OpLinearQuantizerConfig

_PASSES = {
    "prune": optimize.prune_weights,
    "palettize": optimize.palettize_weights,
    "quantize": optimize.linear_quantize_weights,
}

RECIPES: dict[str, list[tuple[str, Any]]] = {
    "prune-palettize": [("prune", P(target_sparsity=0.5)), ("palettize", L(nbits=4))],
    "prune-quantize": [
        ("prune", P(n_m_ratio=(2, 4))),
        ("quantize", Q(dtype="int4", granularity="per_block", block_size=32)),
    ],
    "palettize-quantize": [
        ("palettize", L(nbits=4, granularity="per_grouped_channel", group_size=16)),
        ("quantize", Q(dtype="int8", granularity="per_tensor")),
    ],
    "quantize-palettize": [("quantize", Q(dtype="int8")), ("palettize", L(nbits=4))],
    "prune-palettize-quantize": [
        ("prune", P(target_sparsity=0.5)),
        ("palettize", L(nbits=4)),
        ("quantize", Q(dtype="int8", granularity="per_tensor")),
    ],
    "palettize-prune": [("palettize", L(nbits=4)), ("prune", P(target_sparsity=0.3))],
}


def steps_one_by_one(
    src: Path, steps: list[tuple[str, Any]], tmp: Path
) -> tuple[Path, list[list[dict]]]:
    current, reports = src, []
    for i, (kind, op_config) in enumerate(steps):
        dest = tmp / f"step{i}.mlpackage"
        _, report = _PASSES[kind](
            current,
            cto.OptimizationConfig(global_config=op_config),
            i > 0,
            output_path=dest,
            with_report=True,
        )
        reports.append(report)
        current = dest
    return current, reports


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_equals_joint_steps(name: str, model_dir: Path, tmp_path: Path) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    steps = [(k, cto.OptimizationConfig(global_config=c)) for k, c in RECIPES[name]]
    out = tmp_path / "recipe.mlpackage"
    _, reports = optimize.apply_recipe(src, steps, output_path=out, with_report=True)
    expected, expected_reports = steps_one_by_one(src, RECIPES[name], tmp_path)
    assert_same_compression(out, expected)
    # The recipe names each weight as in the input model; a joint pass on an intermediate package
    # names it after the chain it finds there (the const's name plus the passes' suffixes).
    assert [sorted(r["name"] for r in rep) for rep in reports] == [
        sorted(input_name(r["name"]) for r in rep) for rep in expected_reports
    ]
    for rep, exp in zip(reports, expected_reports):
        by_name = {input_name(r["name"]): r for r in exp}
        for r in rep:
            for key in ("shape", "bytes_before", "bytes_after"):
                assert r[key] == by_name[r["name"]][key], (r["name"], key)


def input_name(name: str) -> str:
    """The const's name under the chain names the passes make (``<const>_sparsified`` ...)."""
    return re.sub(r"(_sparsified|_palettized|_quantized)+$", "", name)


def test_recipe_on_conv_and_an_unselected_weight(model_dir: Path, tmp_path: Path) -> None:
    # The second step also compresses a const the first one left alone (below its threshold).
    src = models.build("conv", model_dir, "iOS18", "fp16")
    first = cto.OptimizationConfig(global_config=P(target_sparsity=0.5, weight_threshold=100_000))
    steps = [("prune", first), ("palettize", cto.OptimizationConfig(global_config=L(nbits=2)))]
    out = tmp_path / "recipe.mlpackage"
    optimize.apply_recipe(src, steps, output_path=out)
    a = tmp_path / "a.mlpackage"
    optimize.prune_weights(src, first, output_path=a)
    b = tmp_path / "b.mlpackage"
    optimize.palettize_weights(a, steps[1][1], True, output_path=b)
    assert_same_compression(out, b)


def test_recipe_matches_coremltools(model_dir: Path, oracle_dir: Path, tmp_path: Path) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    prune, palettize = (
        cto.OptimizationConfig(global_config=P(target_sparsity=0.5)),
        cto.OptimizationConfig(global_config=L(nbits=4)),
    )
    out = tmp_path / "recipe.mlpackage"
    optimize.apply_recipe(src, [("prune", prune), ("palettize", palettize)], output_path=out)
    pruned = models.compress_with_coremltools(src, "prune", prune, oracle_dir)
    theirs = models.compress_with_coremltools(
        pruned, "palettize", palettize, oracle_dir, joint_compression=True
    )
    assert_same_compression(out, theirs)


def test_recipe_on_an_already_compressed_model_runs_step_by_step(
    model_dir: Path, tmp_path: Path
) -> None:
    src = models.build("minilm", model_dir, "iOS18", "fp16")
    pruned = tmp_path / "pruned.mlpackage"
    optimize.prune_weights(
        src, cto.OptimizationConfig(global_config=P(target_sparsity=0.5)), output_path=pruned
    )
    steps = [
        ("quantize", cto.OptimizationConfig(global_config=Q(dtype="int8"))),
        ("palettize", cto.OptimizationConfig(global_config=L(nbits=4))),
    ]
    out = tmp_path / "recipe.mlpackage"
    optimize.apply_recipe(pruned, steps, output_path=out)
    expected, _ = steps_one_by_one(pruned, [(k, c.global_config) for k, c in steps], tmp_path)
    assert_same_compression(out, expected)


def test_step_by_step_reports_name_weights_as_the_input_does(
    model_dir: Path, tmp_path: Path
) -> None:
    # One weight already pruned sends the recipe step by step; step 2 then meets the chains
    # step 1 wrote (``lin2_weight_to_fp16_quantized``) and reports them by their input names.
    src = tmp_path / "partly-pruned.mlpackage"
    optimize.prune_weights(
        models.build("linear", model_dir, "iOS18", "fp16"),
        cto.OptimizationConfig(op_name_configs={"lin1_weight_to_fp16": P(target_sparsity=0.5)}),
        output_path=src,
    )
    steps = [
        ("quantize", cto.OptimizationConfig(global_config=Q(dtype="int8"))),
        ("palettize", cto.OptimizationConfig(global_config=L(nbits=4))),
    ]
    _, reports = optimize.apply_recipe(
        src, steps, output_path=tmp_path / "r.mlpackage", with_report=True
    )
    input_names = {w.name for w in cc_inspect(str(src))}
    first, second = ({w["name"] for w in report} for report in reports)
    assert first == {"lin2_weight_to_fp16", "shared_weight_to_fp16", "lin3_weight_to_fp16"}
    assert second == first | {"lin1_weight_to_fp16_sparsified"}
    assert second <= input_names


def test_recipe_errors() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        optimize.apply_recipe("x.mlpackage", [])
    with pytest.raises(ValueError, match="unknown step 'squash'"):
        optimize.apply_recipe("x.mlpackage", [("squash", cto.OptimizationConfig())])
