"""Multifunction packages: ``MultiFunctionDescriptor`` / ``save_multifunction`` /
``extract_function`` and the ``merge`` / ``extract`` commands, against coremltools 9.0.

What every merged package must satisfy (``check_merged``): coremltools loads it; one
FunctionDescription per function, in descriptor order, equal to its source's; each function's
ops equal its source's (blob references compared by content); every function decompresses (with
coremltools) to its source's dense weights; and the weight file is no larger than coremltools'
``save_multifunction`` output on the same inputs.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path
from typing import Any

import coreml_compress as cc
import models
import numpy as np
import pytest
from coreml_compress import optimize as cco
from coreml_compress.cli import main as cli_main
from models import ct

WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
Entries = list[tuple[str, Path, str]]  # (target, package, source function)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def weight_size(pkg: Path) -> int:
    w = Path(pkg) / WEIGHTS
    return w.stat().st_size if w.exists() else 0


def blob_count(pkg: Path) -> int:
    w = Path(pkg) / WEIGHTS
    return struct.unpack_from("<I", w.read_bytes(), 0)[0] if w.exists() else 0


def read_blob(pkg: Path, offset: int) -> bytes:
    """dtype code, padding and data of the blob whose metadata is at ``offset``."""
    with open(Path(pkg) / WEIGHTS, "rb") as f:
        f.seek(offset)
        sentinel, dtype, size, data_offset, padding = struct.unpack("<IIQQQ", f.read(32))
        assert sentinel == 0xDEADBEEF
        f.seek(data_offset)
        return struct.pack("<IQ", dtype, padding) + f.read(size)


def _values(block: Any):
    for op in block.operations:
        yield from op.attributes.values()
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.WhichOneof("binding") == "value":
                    yield b.value
        for nested in op.blocks:
            yield from _values(nested)


def normalized_function(pkg: Path, name: str) -> bytes:
    """The function's protobuf with each blob reference replaced by a digest of its content."""
    spec = ct.utils.load_spec(str(pkg))
    f = type(spec.mlProgram.functions[name])()
    f.CopyFrom(spec.mlProgram.functions[name])
    for block in f.block_specializations.values():
        for v in _values(block):
            if v.WhichOneof("value") == "blobFileValue":
                digest = hashlib.sha256(read_blob(pkg, v.blobFileValue.offset)).hexdigest()
                v.blobFileValue.fileName = digest
                v.blobFileValue.offset = 0
    return f.SerializeToString(deterministic=True)


def function_description(pkg: Path, name: str) -> bytes:
    """A function's description as coremltools' save_multifunction builds it (name cleared)."""
    d = ct.utils.load_spec(str(pkg)).description
    out = ct.proto.Model_pb2.FunctionDescription()
    if not d.functions:
        assert name == "main"
        out.input.extend(d.input)
        out.output.extend(d.output)
        out.state.extend(d.state)
        out.predictedFeatureName = d.predictedFeatureName
        out.predictedProbabilitiesName = d.predictedProbabilitiesName
    else:
        out.CopyFrom(next(f for f in d.functions if f.name == name))
        out.name = ""
    return out.SerializeToString(deterministic=True)


def descriptor(lib: Any, entries: Entries, default: str) -> Any:
    desc = lib.MultiFunctionDescriptor()
    for target, pkg, src in entries:
        desc.add_function(str(pkg), src, target)
    desc.default_function_name = default
    return desc


def coremltools_merge(entries: Entries, default: str, dest: Path) -> Path:
    ct.utils.save_multifunction(descriptor(ct.utils, entries, default), str(dest))
    return dest


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k, x in a.items():
        assert x.dtype == b[k].dtype and x.shape == b[k].shape, k
        assert np.array_equal(x, b[k], equal_nan=True), k


def check_merged(
    dest: Path, entries: Entries, default: str, *, dense: bool = True, oracle: Path | None = None
) -> None:
    spec = ct.utils.load_spec(str(dest))
    ct.models.MLModel(str(dest), skip_model_load=True)
    sources = {ct.utils.load_spec(str(p)).specificationVersion for _, p, _ in entries}
    assert spec.specificationVersion == max(9, *sources)
    d = spec.description
    assert [f.name for f in d.functions] == [t for t, _, _ in entries]
    assert d.defaultFunctionName == default
    assert not d.input and not d.output and not d.state
    assert models.function_names(dest) == [t for t, _, _ in entries]
    for target, pkg, src in entries:
        f = spec.mlProgram.functions[target]
        assert f.opset in f.block_specializations
        assert normalized_function(dest, target) == normalized_function(pkg, src), target
        assert function_description(dest, target) == function_description(pkg, src), target
    if dense:
        merged = models.dense_weights_by_function(dest)
        for target, pkg, src in entries:
            assert_same_weights(merged[target], models.dense_weights_by_function(pkg)[src])
    if oracle is not None:
        assert weight_size(dest) <= weight_size(oracle)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear18(model_dir: Path) -> Path:
    return models.build_linear(model_dir, ct.target.iOS18)


@pytest.fixture(scope="module")
def linear18_other(model_dir: Path) -> Path:
    return models.build_linear(model_dir, ct.target.iOS18, seed=1)


@pytest.fixture(scope="module")
def linear16(model_dir: Path) -> Path:
    return models.build_linear(model_dir, ct.target.iOS16)


@pytest.fixture(scope="module")
def multifunction18(model_dir: Path) -> Path:
    return models.build_multifunction(model_dir)


@pytest.fixture(scope="module")
def stateful18(model_dir: Path) -> Path:
    return models.build_stateful(model_dir)


# --------------------------------------------------------------------------------------------
# The descriptor
# --------------------------------------------------------------------------------------------


def test_descriptor_behaves_like_coremltools(linear18: Path, multifunction18: Path) -> None:
    for lib in (ct.utils, cc):
        desc = lib.MultiFunctionDescriptor(str(multifunction18))
        assert list(desc._functions()) == ["main", "alt"]
        desc.add_function(str(linear18), "main", "lin")
        assert desc._functions()["lin"] == (str(linear18), "main")
        with pytest.raises(ValueError, match=f"src_function_name nope not found in {linear18}"):
            desc.add_function(str(linear18), "nope", "x")
        with pytest.raises(ValueError, match="function lin already exist"):
            desc.add_function(str(linear18), "main", "lin")
        desc.remove_function("alt")
        with pytest.raises(ValueError, match="function_name alt not found"):
            desc.remove_function("alt")
        assert list(desc._functions()) == ["main", "lin"]
        with pytest.raises(ValueError, match="default_function_name must be type of str"):
            desc.default_function_name = 3
        assert desc.default_function_name is None
    with pytest.raises(ValueError, match="invalid model_path"):
        cc.MultiFunctionDescriptor("/nonexistent/x.mlpackage")


def test_save_requires_a_valid_default(linear18: Path, tmp_path: Path) -> None:
    desc = cc.MultiFunctionDescriptor(str(linear18))
    with pytest.raises(ValueError, match="default_function_name must be set"):
        cc.save_multifunction(desc, tmp_path / "m.mlpackage")
    desc.default_function_name = "other"
    with pytest.raises(ValueError, match="default_function_name other not found in the program"):
        cc.save_multifunction(desc, tmp_path / "m.mlpackage")
    assert not (tmp_path / "m.mlpackage").exists()
    # A coremltools descriptor is accepted as well.
    ct_desc = ct.utils.MultiFunctionDescriptor(str(linear18))
    ct_desc.default_function_name = "main"
    report = cc.save_multifunction(ct_desc, tmp_path / "m.mlpackage")
    assert report.functions == 1 and models.function_names(report.path) == ["main"]


# --------------------------------------------------------------------------------------------
# Merging, against coremltools
# --------------------------------------------------------------------------------------------


def test_merge_matches_coremltools(
    linear18: Path, linear18_other: Path, multifunction18: Path, tmp_path: Path
) -> None:
    entries: Entries = [
        ("lin", linear18, "main"),
        ("lin_again", linear18, "main"),  # the same function twice: everything shared
        ("other", linear18_other, "main"),
        ("alt", multifunction18, "alt"),  # from a multifunction input
        ("mf_main", multifunction18, "main"),
    ]
    ours = tmp_path / "ours.mlpackage"
    calls: list[tuple[int, int]] = []
    report = cc.save_multifunction(
        descriptor(cc, entries, "other"), ours, progress=lambda d, t: calls.append((d, t))
    )
    oracle = coremltools_merge(entries, "other", tmp_path / "ct.mlpackage")
    check_merged(ours, entries, "other", oracle=oracle)
    assert weight_size(ours) == weight_size(oracle)
    assert report.path == ours and report.functions == 5
    assert report.weight_file_bytes == weight_size(ours)
    assert report.blobs_written == blob_count(ours)
    assert report.saved_bytes > weight_size(linear18) - 1024
    assert calls and calls[-1] == (report.blobs_written, report.blobs_written)
    # The function descriptions are coremltools' own.
    theirs = ct.utils.load_spec(str(oracle)).description
    assert ct.utils.load_spec(str(ours)).description.functions == theirs.functions
    # Metadata: coremltools drops it; the first source's is kept.
    meta = ct.utils.load_spec(str(ours)).description.metadata
    assert meta == ct.utils.load_spec(str(linear18)).description.metadata
    assert not theirs.HasField("metadata")


def test_merge_ios16_and_ios18_sources(linear16: Path, linear18: Path, tmp_path: Path) -> None:
    entries: Entries = [("old", linear16, "main"), ("new", linear18, "main")]
    ours = tmp_path / "ours.mlpackage"
    cc.save_multifunction(descriptor(cc, entries, "new"), ours)
    oracle = coremltools_merge(entries, "new", tmp_path / "ct.mlpackage")
    check_merged(ours, entries, "new", oracle=oracle)
    program = ct.utils.load_spec(str(ours)).mlProgram
    # Each function stays in the opset its ops are written in.
    assert program.functions["old"].opset == "CoreML6"
    assert program.functions["new"].opset == "CoreML8"


def test_stateful_functions(stateful18: Path, tmp_path: Path) -> None:
    cfg = cco.OptimizationConfig(global_config=cco.OpLinearQuantizerConfig())
    quantized = tmp_path / "q.mlpackage"
    cco.linear_quantize_weights(stateful18, cfg, output_path=quantized)
    entries: Entries = [("dense", stateful18, "main"), ("int8", quantized, "main")]
    ours = tmp_path / "ours.mlpackage"
    cc.save_multifunction(descriptor(cc, entries, "int8"), ours)
    oracle = coremltools_merge(entries, "int8", tmp_path / "ct.mlpackage")
    check_merged(ours, entries, "int8", oracle=oracle)
    for f in ct.utils.load_spec(str(ours)).description.functions:
        assert [s.name for s in f.state] == ["k_cache", "v_cache"]


# --------------------------------------------------------------------------------------------
# Sharing compressed weights: compression is deterministic
# --------------------------------------------------------------------------------------------

COMPRESSIONS = {
    "int8-ios18": (
        "linear_quantize_weights",
        ct.target.iOS18,
        cco.OpLinearQuantizerConfig(mode="linear_symmetric"),
    ),
    "int4-block-ios18": (
        "linear_quantize_weights",
        ct.target.iOS18,
        cco.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=16),
    ),
    "prune-ios18": ("prune_weights", ct.target.iOS18, cco.OpMagnitudePrunerConfig(0.5)),
    "int8-ios16": ("linear_quantize_weights", ct.target.iOS16, cco.OpLinearQuantizerConfig()),
    "prune-ios17": ("prune_weights", ct.target.iOS17, cco.OpMagnitudePrunerConfig(0.5)),
}


@pytest.mark.parametrize("case", list(COMPRESSIONS))
def test_separately_compressed_adapters_share_their_base(
    case: str, model_dir: Path, tmp_path: Path
) -> None:
    api, target, op_config = COMPRESSIONS[case]
    base = models.build_linear(model_dir, target)
    config = cco.OptimizationConfig(global_config=op_config)
    compress = getattr(cco, api)
    # Two separate runs with the same config: identical blobs.
    a = compress(base, config, output_path=tmp_path / "a.mlpackage")
    b = compress(base, config, output_path=tmp_path / "b.mlpackage")
    assert isinstance(a, Path) and isinstance(b, Path)  # path in, path out
    assert (a / WEIGHTS).read_bytes() == (b / WEIGHTS).read_bytes()

    entries: Entries = [("a", a, "main"), ("b", b, "main"), ("dense", base, "main")]
    ours = tmp_path / "ours.mlpackage"
    report = cc.save_multifunction(descriptor(cc, entries, "a"), ours)
    # The second adapter costs nothing.
    alone = tmp_path / "alone.mlpackage"
    cc.save_multifunction(descriptor(cc, [entries[0], entries[2]], "a"), alone)
    assert weight_size(ours) == weight_size(alone)
    assert report.saved_bytes >= weight_size(a) - 1024

    ios16_17_sparse = case == "prune-ios17"
    if ios16_17_sparse:
        # coremltools cannot merge iOS16/17 palettized or pruned models at all.
        with pytest.raises(Exception, match="Unknown input 'shape'"):
            coremltools_merge(entries, "a", tmp_path / "ct.mlpackage")
        check_merged(ours, entries, "a", dense=False)
        check_extracted_functions(ours, entries, tmp_path)
    else:
        oracle = coremltools_merge(entries, "a", tmp_path / "ct.mlpackage")
        check_merged(ours, entries, "a", oracle=oracle)


def check_extracted_functions(merged: Path, entries: Entries, tmp_path: Path) -> None:
    """Each function, extracted, equals its source and decompresses to its dense weights."""
    for target, pkg, src in entries:
        out = tmp_path / f"extracted-{target}.mlpackage"
        report = cc.extract_function(merged, target, out)
        assert report.functions == 1
        spec, source = ct.utils.load_spec(str(out)), ct.utils.load_spec(str(pkg))
        assert spec.specificationVersion == source.specificationVersion
        assert not spec.description.functions
        assert normalized_function(out, "main") == normalized_function(pkg, src)
        assert function_description(out, "main") == function_description(pkg, src)
        assert_same_weights(
            models.dense_weights_by_function(out)["main"],
            models.dense_weights_by_function(pkg)[src],
        )


def test_ios16_palettized_models_merge_with_their_ops(
    linear16: Path, linear18: Path, oracle_dir: Path, tmp_path: Path
) -> None:
    palettized = models.compress_with_coremltools(
        linear16,
        "palettize",
        ct.optimize.coreml.OpPalettizerConfig(mode="uniform", nbits=4),
        oracle_dir,
    )
    assert "constexpr_lut_to_dense" in models.op_types(palettized)
    entries: Entries = [
        ("pal", palettized, "main"),
        ("dense16", linear16, "main"),
        ("dense18", linear18, "main"),
    ]
    with pytest.raises(Exception, match="Unknown input 'shape'"):
        coremltools_merge(entries, "pal", tmp_path / "ct.mlpackage")
    ours = tmp_path / "ours.mlpackage"
    cc.save_multifunction(descriptor(cc, entries, "pal"), ours)
    check_merged(ours, entries, "pal", dense=False)
    program = ct.utils.load_spec(str(ours)).mlProgram
    assert program.functions["pal"].opset == "CoreML6"
    check_extracted_functions(ours, entries, tmp_path)


# --------------------------------------------------------------------------------------------
# Where coremltools misses sharing
# --------------------------------------------------------------------------------------------


def build_cond(dest: Path) -> Path:
    """Weights inside the branches of a ``cond`` (nested blocks)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(7)
    wt = rng.standard_normal((64, 64)).astype(np.float32)
    wf = rng.standard_normal((64, 64)).astype(np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec((4, 64)), mb.TensorSpec((1,), dtype=types.bool)],
        opset_version=ct.target.iOS18,
    )
    def prog(x: Any, flag: Any) -> Any:
        def true_fn() -> Any:
            return mb.linear(x=x, weight=mb.const(val=wt, name="wt"), name="lt")

        def false_fn() -> Any:
            return mb.linear(x=x, weight=mb.const(val=wf, name="wf"), name="lf")

        return mb.cond(pred=mb.squeeze(x=flag, name="p"), _true_fn=true_fn, _false_fn=false_fn)

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        skip_model_load=True,
    )
    model.save(str(dest))
    return dest


def test_weights_in_nested_blocks_are_shared(tmp_path: Path) -> None:
    a = build_cond(tmp_path / "a.mlpackage")
    b = tmp_path / "b.mlpackage"
    shutil.copytree(a, b)
    entries: Entries = [("a", a, "main"), ("b", b, "main")]
    ours = tmp_path / "ours.mlpackage"
    cc.save_multifunction(descriptor(cc, entries, "a"), ours)
    oracle = coremltools_merge(entries, "a", tmp_path / "ct.mlpackage")
    check_merged(ours, entries, "a", oracle=oracle)
    # coremltools shares only top-level consts across functions: it stores the branches twice.
    assert weight_size(ours) <= weight_size(a)
    assert weight_size(oracle) > 1.9 * weight_size(ours)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def test_extract_keeps_only_the_function_s_blobs(
    linear18: Path, linear18_other: Path, multifunction18: Path, tmp_path: Path
) -> None:
    entries: Entries = [
        ("lin", linear18, "main"),
        ("other", linear18_other, "main"),
        ("alt", multifunction18, "alt"),
        ("main", multifunction18, "main"),
    ]
    merged = tmp_path / "merged.mlpackage"
    cc.save_multifunction(descriptor(cc, entries, "lin"), merged)
    check_extracted_functions(merged, entries, tmp_path)
    # Only the blobs of the function: the extracted package is as small as its source.
    for target, pkg, _ in entries[:2]:
        assert weight_size(tmp_path / f"extracted-{target}.mlpackage") <= weight_size(pkg)
    meta = ct.utils.load_spec(str(tmp_path / "extracted-other.mlpackage")).description.metadata
    assert meta == ct.utils.load_spec(str(linear18)).description.metadata
    with pytest.raises(ValueError, match="src_function_name nope not found"):
        cc.extract_function(merged, "nope", tmp_path / "x.mlpackage")
    # Extracting from a single-function package works too.
    report = cc.extract_function(linear18, "main", tmp_path / "single.mlpackage")
    assert normalized_function(report.path, "main") == normalized_function(linear18, "main")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_merge_and_extract(
    linear18: Path, multifunction18: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.mlpackage"
    argv = ["merge", str(out), str(multifunction18), f"{linear18}:main=lin", "--default", "lin"]
    assert cli_main(argv) == 0
    stdout = capsys.readouterr().out
    assert models.function_names(out) == ["main", "alt", "lin"]
    assert ct.utils.load_spec(str(out)).description.defaultFunctionName == "lin"
    assert "sharing saved" in stdout.splitlines()[-1]

    single = tmp_path / "alt.mlpackage"
    assert cli_main(["extract", str(out), "alt", str(single)]) == 0
    assert "written to" in capsys.readouterr().out
    assert normalized_function(single, "main") == normalized_function(multifunction18, "alt")

    # Errors: one line on stderr, exit status 1; an existing output needs --force (usage, 2).
    assert cli_main(["merge", str(out), f"{linear18}:nope=x"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert cli_main(["merge", str(out), f"{linear18}:nope=x", "--force"]) == 1
    assert "src_function_name nope not found" in capsys.readouterr().err
    assert cli_main(["merge", str(out), str(linear18), "--default", "zzz", "--force"]) == 1
    assert "default_function_name zzz not found" in capsys.readouterr().err
    assert cli_main(["extract", str(out), "zzz", str(tmp_path / "z.mlpackage")]) == 1
