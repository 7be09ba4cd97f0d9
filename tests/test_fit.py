"""``optimize.fit`` / ``coreml-compress fit``: the bytes it predicts are the bytes it writes (and
what ``info`` counts), coremltools decompresses exactly the weights whose error it measured, the
saved recipe re-runs to identical bytes, the knapsack is optimal (against brute force), and the
budget, SNR floor, Neural Engine and opset rules hold."""

from __future__ import annotations

import filecmp
import itertools
import math
import random
import warnings
from pathlib import Path

import models
import numpy as np
import pytest
from coreml_compress import fitting, knapsack, optimize
from coreml_compress.config import (
    OpLinearQuantizerConfig,
    OpMagnitudePrunerConfig,
    OpPalettizerConfig,
)
from coreml_compress.errors import DeploymentWarning
from coreml_compress.inspect import inspect

WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"
MODEL = "Data/com.apple.CoreML/model.mlmodel"

SMALL_LADDER = [
    fitting.Form("kmeans 8b", (("palettize", OpPalettizerConfig(nbits=8)),)),
    fitting.Form("kmeans 2b", (("palettize", OpPalettizerConfig(nbits=2)),)),
    fitting.Form(
        "kmeans 4b g16",
        (
            (
                "palettize",
                OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=16),
            ),
        ),
        ios18_only=True,
    ),
    fitting.Form("int8 per channel", (("quantize", OpLinearQuantizerConfig(dtype="int8")),)),
    fitting.Form(
        "int4 block32",
        (
            (
                "quantize",
                OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32),
            ),
        ),
        ios18_only=True,
    ),
    fitting.Form(
        "prune50% + kmeans 4b",
        (
            ("prune", OpMagnitudePrunerConfig(target_sparsity=0.5)),
            ("palettize", OpPalettizerConfig(nbits=4)),
        ),
        ios18_only=True,
    ),
]


def _dense_sizes(src: Path, ladder: list[fitting.Form] = SMALL_LADDER) -> tuple[int, int]:
    """The smallest weight file a ladder can give a model, and its dense weight file."""
    with pytest.raises(
        fitting.BudgetError, match=r"smallest reachable size .* is (\d+) bytes"
    ) as e:
        optimize.fit(src, 1, candidates=ladder)
    smallest = int(str(e.value).split(" is ")[1].split(" bytes")[0])
    return smallest, (src / WEIGHTS).stat().st_size


@pytest.fixture(scope="module")
def linear(model_dir: Path) -> Path:
    return models.build("linear", model_dir, "iOS18", "fp16")


@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.8])
def test_fit_writes_what_it_measured(linear: Path, tmp_path: Path, fraction: float) -> None:
    smallest, dense = _dense_sizes(linear)
    budget = int(smallest + fraction * (dense - smallest))
    out, recipe = tmp_path / "fit.mlpackage", tmp_path / "fit.yaml"
    result = optimize.fit(
        linear, budget, output_path=out, candidates=SMALL_LADDER, save_recipe=recipe
    )
    written = (out / WEIGHTS).stat().st_size
    assert written == result.weight_file_bytes == result.predicted_bytes <= budget
    assert len(result.curve) >= 20
    assert (result.weight_file_bytes, result.error) in result.curve

    # What info counts per weight is what fit reported.
    info = {w.name: w for w in inspect(out)}
    for w in result.weights:
        stored = [i for name, i in info.items() if name.startswith(w.name)]
        assert len(stored) == 1, w.name
        assert stored[0].bytes_on_disk == w.stored_bytes, w.name

    # coremltools decompresses exactly the weights whose error fit measured.
    before, after = models.dense_weights(linear), models.dense_weights(out)
    for w in result.weights:
        diff = before[w.name].astype(np.float64) - after[w.name].astype(np.float64)
        assert float((diff**2).sum()) == pytest.approx(w.sse, rel=1e-9, abs=1e-12), w.name
        assert (w.form == "as is") == (w.sse == 0.0)
    assert result.error == pytest.approx(sum(w.sse for w in result.weights), rel=1e-9)

    # The saved recipe re-runs to identical bytes.
    again = optimize.apply_recipe(linear, recipe, output_path=tmp_path / "again.mlpackage")
    for f in (WEIGHTS, MODEL):
        assert filecmp.cmp(out / f, again / f, shallow=False), f


def test_joint_and_plain_forms_in_one_recipe(linear: Path, tmp_path: Path) -> None:
    ladder = [f for f in SMALL_LADDER if f.label in ("prune50% + kmeans 4b", "kmeans 8b")]
    out, recipe = tmp_path / "a.mlpackage", tmp_path / "a.yaml"
    result = optimize.fit(linear, 30_000, output_path=out, candidates=ladder, save_recipe=recipe)
    assert {w.form for w in result.weights} == {"prune50% + kmeans 4b", "kmeans 8b"}
    assert [name for name, _ in result.recipe] == ["prune", "palettize"]
    pruned = set(result.recipe[0][1].op_name_configs)
    # The palettize step names a pruned weight's chain, a plain weight's const.
    assert {n for n in result.recipe[1][1].op_name_configs if n.endswith("_sparsified")} == {
        f"{n}_sparsified" for n in pruned
    }
    assert (out / WEIGHTS).stat().st_size == result.predicted_bytes <= 30_000
    again = optimize.apply_recipe(linear, recipe, output_path=tmp_path / "again.mlpackage")
    for f in (WEIGHTS, MODEL):
        assert filecmp.cmp(out / f, again / f, shallow=False), f


def test_fit_is_optimal_and_uses_the_budget(linear: Path, tmp_path: Path) -> None:
    smallest, dense = _dense_sizes(linear)
    budget = (smallest + dense) // 2
    result = optimize.fit(
        linear, budget, output_path=tmp_path / "a.mlpackage", candidates=SMALL_LADDER
    )
    assert result.optimal
    # No other curve point within the budget has a smaller error.
    assert all(err >= result.error * (1 - 1e-12) for size, err in result.curve if size <= budget)


def test_unreachable_budget(linear: Path, tmp_path: Path) -> None:
    smallest, _ = _dense_sizes(linear)
    with pytest.raises(
        fitting.BudgetError, match=f"smallest reachable size .* is {smallest} bytes, 1 bytes over"
    ):
        optimize.fit(
            linear, smallest - 1, output_path=tmp_path / "a.mlpackage", candidates=SMALL_LADDER
        )
    assert not (tmp_path / "a.mlpackage").exists()


def test_min_snr_floor(linear: Path, tmp_path: Path) -> None:
    smallest, dense = _dense_sizes(linear)
    result = optimize.fit(
        linear, dense, output_path=tmp_path / "a.mlpackage", candidates=SMALL_LADDER, min_snr_db=40
    )
    assert all(w.snr_db >= 40 for w in result.weights)
    with pytest.raises(fitting.BudgetError):
        optimize.fit(
            linear,
            smallest,
            output_path=tmp_path / "b.mlpackage",
            candidates=SMALL_LADDER,
            min_snr_db=40,
        )


def test_neural_engine_excludes_per_block(linear: Path, tmp_path: Path) -> None:
    assert any(f.per_block for f in fitting.default_ladder())
    for units in ("cpu_and_ne", "all"):
        assert not any(f.per_block for f in fitting.default_ladder(units))
    assert any(f.per_block for f in fitting.default_ladder("cpu_and_gpu"))
    only_block = [f for f in SMALL_LADDER if f.per_block]
    _, dense = _dense_sizes(linear)
    result = optimize.fit(
        linear,
        dense,
        output_path=tmp_path / "a.mlpackage",
        candidates=only_block,
        compute_units="all",
    )
    assert result.weights == [] and result.excluded_forms == ["int4 block32"]
    assert result.weight_file_bytes == dense
    with pytest.raises(fitting.ConfigError, match="compute_units"):
        fitting.default_ladder("gpu")
    # Known compute units without the Neural Engine: per_block is written without a warning;
    # unknown ones (None): the DeploymentWarning every per_block write gives.
    for units, warned in (("cpu_and_gpu", False), (None, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = tmp_path / f"{units}.mlpackage"
            result = optimize.fit(
                linear, dense // 2, output_path=out, candidates=only_block, compute_units=units
            )
        assert result.weights, units
        assert any(issubclass(w.category, DeploymentWarning) for w in caught) == warned, units


def test_older_opset_uses_older_forms_and_says_what_ios18_saves(
    model_dir: Path, tmp_path: Path
) -> None:
    ios18_only = {f.label for f in fitting.default_ladder() if f.ios18_only}
    assert ios18_only == {"kmeans 3b", "int4 block32", "prune50% + kmeans 4b"} | {
        f"kmeans {b}b g{g}" for b in (8, 6, 4, 3, 2) for g in (16, 32)
    }
    src = models.build("linear", model_dir, "iOS17", "fp16")
    dense = (src / WEIGHTS).stat().st_size
    result = optimize.fit(
        src, dense // 3, output_path=tmp_path / "a.mlpackage", candidates=SMALL_LADDER
    )
    ios18_forms = {f.label for f in SMALL_LADDER if f.ios18_only}
    assert not result.ios18
    assert not {w.form for w in result.weights} & ios18_forms
    assert result.ios18_note is not None and "iOS18" in result.ios18_note
    assert (
        (tmp_path / "a.mlpackage" / WEIGHTS).stat().st_size == result.predicted_bytes <= dense // 3
    )


def test_importance_weights_the_error(linear: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    importance = {
        "lin1": rng.random(64).astype(np.float32),  # lin1_weight_to_fp16 [128, 64]
        "lin2": np.full(128, 7.0, np.float32),  # a constant: the same as no weighting
        "nowhere.module": np.ones(4, np.float32),
    }
    _, dense = _dense_sizes(linear)
    result = optimize.fit(
        linear,
        dense // 3,
        output_path=tmp_path / "a.mlpackage",
        candidates=SMALL_LADDER[:2],
        importance=importance,
    )
    by_name = {w.name: w for w in result.weights}
    assert by_name["lin1_weight_to_fp16"].importance == "lin1"
    assert by_name["lin2_weight_to_fp16"].importance == "lin2"
    # With a constant the weighted error is the plain one.
    assert by_name["lin2_weight_to_fp16"].error == pytest.approx(by_name["lin2_weight_to_fp16"].sse)
    before, after = models.dense_weights(linear), models.dense_weights(tmp_path / "a.mlpackage")
    diff = before["lin1_weight_to_fp16"].astype(np.float64) - after["lin1_weight_to_fp16"].astype(
        np.float64
    )
    # The module's importance counts relative to its mean (the weight's units stay SSE's).
    relative = importance["lin1"].astype(np.float64) / importance["lin1"].astype(np.float64).mean()
    expected = float(((diff**2).sum(axis=0) * relative).sum())
    assert by_name["lin1_weight_to_fp16"].error == pytest.approx(expected, rel=1e-9)
    assert result.unmatched_modules == ["nowhere.module"]
    assert "shared_weight_to_fp16" in result.unmatched_weights


def test_importance_names() -> None:
    imp = {"encoder.layer.0.attention.self.query": 1, "layer.1.x": 1, "layer.11.x": 1}
    names = [
        "p_m_encoder_layer_0_attention_self_query_weight_to_fp16",
        "encoder.layer.0.attention.self.query.weight",
        "m_layer_11_x_weight",
        "embeddings_word_embeddings_weight",
    ]
    matched, unmatched = fitting.match_importance(names, fitting.load_importance(imp))
    assert matched == {
        names[0]: "encoder.layer.0.attention.self.query",
        names[1]: "encoder.layer.0.attention.self.query",
        names[2]: "layer.11.x",
    }
    assert unmatched == ["layer.1.x"]


def test_importance_file(tmp_path: Path) -> None:
    import safetensors.numpy

    safetensors.numpy.save_file(
        {"a.b": np.arange(3, dtype=np.float32)}, str(tmp_path / "imp.safetensors")
    )
    loaded = fitting.load_importance(tmp_path / "imp.safetensors")
    assert list(loaded) == ["a.b"] and loaded["a.b"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2 * 10**9),
        ("1.5GiB", 3 * 2**29),
        ("500 MB", 5 * 10**8),
        ("123456", 123456),
        ("10kib", 10240),
        (4096, 4096),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert fitting.parse_size(text) == size


@pytest.mark.parametrize("bad", ["2 GBs", "-1", "0", "GB", ""])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(fitting.ConfigError):
        fitting.parse_size(bad)


def test_knapsack_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(400):
        items = [
            [(rng.randint(1, 40), rng.random() * 10) for _ in range(rng.randint(1, 5))]
            for _ in range(rng.randint(1, 5))
        ]
        budget = rng.randint(0, 150)
        best = math.inf
        for combo in itertools.product(*(range(len(o)) for o in items)):
            cost = sum(items[i][k][0] for i, k in enumerate(combo))
            if cost <= budget:
                best = min(best, sum(items[i][k][1] for i, k in enumerate(combo)))
        choice = knapsack.solve(items, budget)
        if math.isinf(best):
            assert choice is None
            continue
        assert choice is not None and choice.optimal and choice.bytes <= budget
        assert choice.error == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_knapsack_combined_keeps_every_best_sum() -> None:
    rng = random.Random(3)
    for _ in range(200):
        items = [
            [(rng.randint(1, 20), float(rng.randint(0, 9))) for _ in range(rng.randint(1, 4))]
            for _ in range(3)
        ]
        sums, picks = knapsack.combined(items)
        for (size, error), p in zip(sums, picks):
            assert (size, error) == (
                sum(items[i][k][0] for i, k in enumerate(p)),
                sum(items[i][k][1] for i, k in enumerate(p)),
            )
        # Every combination is matched or beaten by a kept sum.
        for combo in itertools.product(*(range(len(o)) for o in items)):
            size = sum(items[i][k][0] for i, k in enumerate(combo))
            error = sum(items[i][k][1] for i, k in enumerate(combo))
            assert any(s <= size and e <= error for s, e in sums)


def test_knapsack_hull() -> None:
    # (10, 5) lies above the chord from (0, 10) to (20, 0); (30, 0) is dominated.
    assert knapsack.lower_hull([(0, 10.0), (10, 5.0), (20, 0.0), (30, 0.0)]) == [0, 2]
    assert knapsack.lower_hull([(0, 10.0), (10, 3.0), (20, 0.0)]) == [0, 1, 2]


def test_cli(linear: Path, tmp_path: Path) -> None:
    _, dense = _dense_sizes(linear)
    out, html, recipe = tmp_path / "o.mlpackage", tmp_path / "r.html", tmp_path / "r.yaml"
    run = models.run_cli(
        "fit",
        str(linear),
        str(out),
        "--max-size",
        str(dense // 2),
        "--compute-units",
        "all",
        "--report",
        str(html),
        "--save-recipe",
        str(recipe),
    )
    assert run.returncode == 0, run.stderr
    assert "size → error curve" in run.stdout and "lin1_weight_to_fp16" in run.stdout
    assert "int4 block32" in run.stdout  # named as excluded for the Neural Engine
    page = html.read_text()
    assert page.count("data:image/png;base64,") >= 3 and "lin1_weight_to_fp16" in page
    again = tmp_path / "again.mlpackage"
    assert (
        models.run_cli("compress", str(linear), str(again), "--recipe", str(recipe)).returncode == 0
    )
    assert filecmp.cmp(out / WEIGHTS, again / WEIGHTS, shallow=False)

    over = models.run_cli("fit", str(linear), str(tmp_path / "x.mlpackage"), "--max-size", "100")
    assert over.returncode == 1 and "smallest reachable size" in over.stderr
    bad = models.run_cli(
        "fit", str(linear), str(tmp_path / "y.mlpackage"), "--max-size", "2 parsecs"
    )
    assert bad.returncode == 2 and "--max-size" in bad.stderr


@pytest.fixture(scope="module")
def two_consts_one_blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two linears whose weight consts (``a_weight``, ``b_weight``, [64, 64]) read one blob, as a
    deduplicating writer leaves them: b's const points at a's blob (b's own blob stays in the
    file, read by nothing)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((64, 64)).astype(np.float32) * 0.1 for _ in range(2))

    @mb.program(input_specs=[mb.TensorSpec((4, 64))], opset_version=ct.target.iOS18)
    def prog(x: object) -> object:
        h = mb.linear(x=x, weight=mb.const(val=a, name="a_weight"), name="la")
        return mb.linear(x=h, weight=mb.const(val=b, name="b_weight"), name="lb")

    path = tmp_path_factory.mktemp("shared_blob") / "shared.mlpackage"
    ct.convert(prog, minimum_deployment_target=ct.target.iOS18, skip_model_load=True).save(
        str(path)
    )
    spec = ct.utils.load_spec(str(path))
    ops = {
        op.outputs[0].name: op
        for block in spec.mlProgram.functions["main"].block_specializations.values()
        for op in block.operations
    }
    offset = ops["a_weight_to_fp16"].attributes["val"].blobFileValue.offset
    ops["b_weight_to_fp16"].attributes["val"].blobFileValue.offset = offset
    (path / MODEL).write_bytes(spec.SerializeToString())
    return path


def test_a_blob_two_weights_share_is_counted_once(
    two_consts_one_blob: Path, tmp_path: Path
) -> None:
    """Kept by both weights the shared blob is one blob of the written file, and the budget
    counts it once; whatever each weight becomes, the written weight file is the predicted one
    and within the budget."""
    src, ladder = two_consts_one_blob, SMALL_LADDER[:2]
    kept = optimize.fit(src, 10**9, output_path=tmp_path / "kept.mlpackage", candidates=ladder)
    assert [(w.name, w.form) for w in kept.weights] == [
        ("a_weight_to_fp16", "as is"),
        ("b_weight_to_fp16", "as is"),
    ]
    # The file header, the weights' one blob of 64·64 fp16 values and the two biases' blobs of
    # 64 fp16 values, each after its 64-byte record header (b's unread blob is not copied).
    assert (
        kept.predicted_bytes == kept.weight_file_bytes == 64 + (64 + 64 * 64 * 2) + 2 * (64 + 128)
    )
    # Exactly that size is enough to keep both: the blob is not counted per weight.
    again = optimize.fit(
        src, kept.predicted_bytes, output_path=tmp_path / "again.mlpackage", candidates=ladder
    )
    assert {w.form for w in again.weights} == {"as is"}
    smallest, _ = _dense_sizes(src, ladder)
    for budget in range(smallest, kept.predicted_bytes, 256):
        out = tmp_path / f"b{budget}.mlpackage"
        result = optimize.fit(src, budget, output_path=out, candidates=ladder)
        assert (out / WEIGHTS).stat().st_size == result.predicted_bytes <= budget, budget
