"""Malformed packages through every door (Python API, ``_native``, CLI): each gives the right
``coreml_compress.errors`` class with a message naming the file and offset, never a crash; the
input package stays byte-for-byte unchanged and no output or temporary directory is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import (
    CompressionConfigError,
    CoreMLCompressError,
    MalformedPackageError,
    PackageIOError,
    UnsupportedModelError,
    _native,
    optimize,
)
from coreml_compress import inspect as cc_inspect
from coreml_compress.cli import main as cli_main
from coremltools.proto import MIL_pb2, Model_pb2

U64_MAX = 2**64 - 1
MODEL_REL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS_REL = Path("Data/com.apple.CoreML/weights/weight.bin")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def valid_package(model_dir: Path) -> Path:
    return models.build_linear(model_dir, ct.target.iOS18, ct.precision.FLOAT16)


@pytest.fixture
def pkg(valid_package: Path, tmp_path: Path) -> Path:
    """A private copy of the valid package, to corrupt."""
    dest = tmp_path / "in" / "model.mlpackage"
    shutil.copytree(valid_package, dest)
    return dest


def tree_digest(path: Path) -> dict[str, str]:
    """Every file (and directory) under ``path`` with a hash of its bytes."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def load_spec(pkg: Path) -> Any:
    spec = Model_pb2.Model()
    spec.ParseFromString((pkg / MODEL_REL).read_bytes())
    return spec


def blob_values(spec: Any) -> list[Any]:
    """Every BlobFileValue of the program, in program order."""
    found = []

    def walk_block(block: Any) -> None:
        for op in block.operations:
            for attr in op.attributes.values():
                if attr.WhichOneof("value") == "blobFileValue":
                    found.append(attr.blobFileValue)
            for inner in op.blocks:
                walk_block(inner)

    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk_block(block)
    return found


def first_blob_offset(pkg: Path) -> int:
    return min(v.offset for v in blob_values(load_spec(pkg)))


def patch(path: Path, at: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(data)] = data
    path.write_bytes(bytes(raw))


def set_blob_offsets(pkg: Path, offset: int) -> None:
    spec = load_spec(pkg)
    for v in blob_values(spec):
        v.offset = offset
    (pkg / MODEL_REL).write_bytes(spec.SerializeToString())


def quantize_config() -> Any:
    return cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(dtype="int8"))


# Each door: (name, call(input, output_dir) -> None). Outputs go to a fresh directory.
Door = Callable[[Path, Path], Any]
DOORS: dict[str, Door] = {
    "decompress_weights": lambda src, out: optimize.decompress_weights(
        str(src), output_path=out / "out.mlpackage"
    ),
    "inspect": lambda src, out: cc_inspect(str(src)),
    "save_unchanged": lambda src, out: _native.save_unchanged(str(src), str(out / "out.mlpackage")),
    "linear_quantize_weights": lambda src, out: optimize.linear_quantize_weights(
        str(src), quantize_config(), output_path=out / "out.mlpackage"
    ),
}


def check_failure(
    src: Path,
    tmp_path: Path,
    expected: type[CoreMLCompressError],
    *fragments: str,
    doors: tuple[str, ...] = tuple(DOORS),
) -> None:
    """Every door raises ``expected`` with all ``fragments`` in its message; nothing is written
    and the input is untouched."""
    before = tree_digest(src) if src.exists() else None
    for name in doors:
        out = tmp_path / f"out-{name}"
        out.mkdir()
        with pytest.raises(CoreMLCompressError) as info:
            DOORS[name](src, out)
        err = info.value
        assert isinstance(err, expected), f"{name}: {type(err).__name__}: {err}"
        message = str(err)
        for fragment in fragments:
            assert fragment in message, f"{name}: {fragment!r} not in {message!r}"
        assert list(out.iterdir()) == [], f"{name} left {list(out.iterdir())}"
        if before is not None:
            assert tree_digest(src) == before, f"{name} modified its input"
    # The CLI: one line on stderr, exit status 1, nothing written.
    for argv in (
        ["info", str(src)],
        ["decompress", str(src), str(tmp_path / "cli-out" / "o.mlpackage")],
    ):
        (tmp_path / "cli-out").mkdir(exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "coreml_compress.cli", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1, (argv, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("coreml-compress: error: "), proc.stderr
        assert "Traceback" not in proc.stderr
        for fragment in fragments:
            assert fragment in proc.stderr, (argv, fragment, proc.stderr)
        assert list((tmp_path / "cli-out").iterdir()) == []
    if before is not None:
        assert tree_digest(src) == before


_SUBPROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from coreml_compress import CoreMLCompressError, _native, optimize, inspect
    # The engine's config classes (coremltools' fields): no coremltools import, so each child
    # starts in a fraction of a second.
    from coreml_compress import config as cc

    src, out, door = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    config = cc.OptimizationConfig(global_config=cc.OpLinearQuantizerConfig(dtype="int8"))
    calls = {
        "decompress_weights": lambda: optimize.decompress_weights(src, output_path=out / "o.mlpackage"),
        "inspect": lambda: inspect(src),
        "save_unchanged": lambda: _native.save_unchanged(src, str(out / "o.mlpackage")),
        "linear_quantize_weights": lambda: optimize.linear_quantize_weights(
            src, config, output_path=out / "o.mlpackage"
        ),
    }
    try:
        calls[door]()
    except CoreMLCompressError as e:
        print(type(e).__name__)
        sys.exit(0)
    print("no error")
    sys.exit(1)
    """
)


def check_no_crash(src: Path, tmp_path: Path, expected: type[CoreMLCompressError]) -> None:
    """Each door in its own interpreter: a clean exception, no abort or segfault."""
    for name in DOORS:
        out = tmp_path / f"sub-{name}"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, str(src), str(out), name],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, (name, proc.returncode, proc.stdout, proc.stderr[-2000:])
        assert proc.stdout.strip() == expected.__name__, (name, proc.stdout)
        assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------
# weight.bin
# --------------------------------------------------------------------------------------


def test_valid_package_passes_every_door(pkg: Path, tmp_path: Path) -> None:
    before = tree_digest(pkg)
    for name, door in DOORS.items():
        out = tmp_path / f"ok-{name}"
        out.mkdir()
        door(pkg, out)
    assert tree_digest(pkg) == before


def test_truncated_weight_file(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    size = weights.stat().st_size
    last = max(v.offset for v in blob_values(load_spec(pkg)))
    weights.write_bytes(weights.read_bytes()[: last + 64 + 10])  # cut inside the last blob's data
    check_failure(
        pkg, tmp_path, MalformedPackageError, str(weights), f"offset {last}", "past the end"
    )
    check_no_crash(pkg, tmp_path, MalformedPackageError)
    assert size > weights.stat().st_size


def test_weight_file_shorter_than_header(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    weights.write_bytes(weights.read_bytes()[:40])
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), "64-byte storage header")
    check_no_crash(pkg, tmp_path, MalformedPackageError)


def test_empty_weight_file(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    weights.write_bytes(b"")
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), "0 bytes")


def test_wrong_storage_version(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    patch(weights, 4, struct.pack("<I", 7))
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), "storage version 7")


def test_wrong_sentinel(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    offset = first_blob_offset(pkg)
    patch(weights, offset, struct.pack("<I", 0x12345678))
    check_failure(
        pkg,
        tmp_path,
        MalformedPackageError,
        str(weights),
        f"offset {offset}",
        "wrong sentinel 0x12345678",
    )


def test_offset_past_the_end(pkg: Path, tmp_path: Path) -> None:
    size = (pkg / WEIGHTS_REL).stat().st_size
    far = (size // 64 + 1000) * 64
    set_blob_offsets(pkg, far)
    check_failure(
        pkg, tmp_path, MalformedPackageError, "weight.bin", f"offset {far}", "past the end"
    )


@pytest.mark.parametrize("offset", [U64_MAX - 63, 2**63, 100])
def test_offset_that_overflows_or_is_misaligned(pkg: Path, tmp_path: Path, offset: int) -> None:
    set_blob_offsets(pkg, offset)
    check_failure(pkg, tmp_path, MalformedPackageError, "weight.bin", f"offset {offset}")
    if offset != 100:
        check_no_crash(pkg, tmp_path, MalformedPackageError)


@pytest.mark.parametrize(
    ("field", "at", "value"),
    [
        ("size", 8, U64_MAX),
        ("size", 8, 2**63),
        ("data offset", 16, U64_MAX),
        ("data offset", 16, U64_MAX - 7),
        ("padding", 24, U64_MAX),
    ],
)
def test_metadata_sizes_that_overflow(
    pkg: Path, tmp_path: Path, field: str, at: int, value: int
) -> None:
    weights = pkg / WEIGHTS_REL
    offset = first_blob_offset(pkg)
    patch(weights, offset + at, struct.pack("<Q", value))
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), f"offset {offset}")
    check_no_crash(pkg, tmp_path, MalformedPackageError)


def test_data_offset_into_metadata(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    offset = first_blob_offset(pkg)
    patch(weights, offset + 16, struct.pack("<Q", offset + 8))
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), "points into the metadata")


def test_blob_dtype_differs_from_declared_type(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    offset = first_blob_offset(pkg)
    (code,) = struct.unpack("<I", weights.read_bytes()[offset + 4 : offset + 8])
    assert code == 1  # float16
    patch(weights, offset + 4, struct.pack("<I", 7))  # uint16: same width, different type
    check_failure(pkg, tmp_path, MalformedPackageError, f"offset {offset}", "uint16", "fp16")


def test_unknown_blob_dtype_code(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    offset = first_blob_offset(pkg)
    patch(weights, offset + 4, struct.pack("<I", 0xFFFF))
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), f"offset {offset}", "65535")


def test_missing_weight_file(pkg: Path, tmp_path: Path) -> None:
    (pkg / WEIGHTS_REL).unlink()
    check_failure(pkg, tmp_path, PackageIOError, "weight.bin")


# --------------------------------------------------------------------------------------
# Manifest.json and the package directory
# --------------------------------------------------------------------------------------


def _edit_manifest(pkg: Path, edit: Callable[[dict], None]) -> None:
    path = pkg / "Manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_path_escapes_the_package(pkg: Path, tmp_path: Path) -> None:
    def escape(m: dict) -> None:
        for item in m["itemInfoEntries"].values():
            if item["name"] == "model.mlmodel":
                item["path"] = "../../../etc/passwd"

    _edit_manifest(pkg, escape)
    check_failure(
        pkg, tmp_path, MalformedPackageError, "Manifest.json", "escapes the package directory"
    )


def test_manifest_absolute_path(pkg: Path, tmp_path: Path) -> None:
    def absolute(m: dict) -> None:
        for item in m["itemInfoEntries"].values():
            item["path"] = "/tmp/x"

    _edit_manifest(pkg, absolute)
    check_failure(
        pkg, tmp_path, MalformedPackageError, "Manifest.json", "escapes the package directory"
    )


def test_missing_manifest(pkg: Path, tmp_path: Path) -> None:
    (pkg / "Manifest.json").unlink()
    check_failure(pkg, tmp_path, PackageIOError, "Manifest.json")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"fileFormatVersion": "2.0.0"}', "fileFormatVersion"),
        (b'{"fileFormatVersion": "1.0.0", "itemInfoEntries": {}}', "rootModelIdentifier"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_garbage_manifest(pkg: Path, tmp_path: Path, text: bytes, fragment: str) -> None:
    (pkg / "Manifest.json").write_bytes(text)
    check_failure(pkg, tmp_path, MalformedPackageError, "Manifest.json", fragment)


def test_missing_model_file(pkg: Path, tmp_path: Path) -> None:
    (pkg / MODEL_REL).unlink()
    check_failure(pkg, tmp_path, PackageIOError, "model.mlmodel")


def test_missing_package(tmp_path: Path) -> None:
    check_failure(tmp_path / "nowhere.mlpackage", tmp_path, PackageIOError, "nowhere.mlpackage")


def test_package_path_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.mlpackage"
    path.write_bytes(b"not a directory")
    check_failure(path, tmp_path, MalformedPackageError, str(path), "not a .mlpackage directory")


# --------------------------------------------------------------------------------------
# The model protobuf
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"\xff" * 100, b"\x0a\xff\xff\xff\xff\x0f", os.urandom(0) + bytes(range(256)), b"\x08"],
    ids=["ff", "huge-length", "bytes", "truncated-varint"],
)
def test_garbage_protobuf(pkg: Path, tmp_path: Path, garbage: bytes) -> None:
    (pkg / MODEL_REL).write_bytes(garbage)
    check_failure(pkg, tmp_path, CoreMLCompressError, "model.mlmodel")


def test_truncated_protobuf(pkg: Path, tmp_path: Path) -> None:
    model = pkg / MODEL_REL
    model.write_bytes(model.read_bytes()[:-7])
    check_failure(
        pkg, tmp_path, MalformedPackageError, str(model), "not a valid Core ML model protobuf"
    )
    check_no_crash(pkg, tmp_path, MalformedPackageError)


def test_empty_protobuf(pkg: Path, tmp_path: Path) -> None:
    model = pkg / MODEL_REL
    model.write_bytes(b"")
    check_failure(pkg, tmp_path, UnsupportedModelError, str(model), "not an ML Program")


def _neural_network_spec() -> Any:
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder(
        [("x", datatypes.Array(4))], [("y", datatypes.Array(4))], disable_rank5_shape_mapping=True
    )
    builder.add_activation("relu", "RELU", "x", "y")
    return builder.spec


def test_neural_network_model(pkg: Path, tmp_path: Path) -> None:
    spec = _neural_network_spec()
    assert spec.WhichOneof("Type") == "neuralNetwork"
    (pkg / MODEL_REL).write_bytes(spec.SerializeToString())
    check_failure(
        pkg, tmp_path, UnsupportedModelError, "model.mlmodel", "neuralNetwork", "ML Program"
    )


def test_neural_network_mlmodel_object(tmp_path: Path) -> None:
    """An MLModel without a package behind it (a NeuralNetwork spec) is refused up front."""
    model = ct.models.MLModel(_neural_network_spec(), skip_model_load=True)
    with pytest.raises(UnsupportedModelError):
        optimize.linear_quantize_weights(
            model, quantize_config(), output_path=tmp_path / "o.mlpackage"
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_protobuf_field_is_refused(pkg: Path, tmp_path: Path) -> None:
    """A field this schema does not know (here an unknown top-level field 999) must not be
    silently dropped by a rewrite."""
    model = pkg / MODEL_REL
    unknown = bytes([0xBA, 0x3E, 0x03]) + b"abc"  # field 999, wire type 2, 3 bytes
    model.write_bytes(model.read_bytes() + unknown)
    check_failure(
        pkg,
        tmp_path,
        UnsupportedModelError,
        str(model),
        "does not know",
    )


# --------------------------------------------------------------------------------------
# Configs and outputs
# --------------------------------------------------------------------------------------


def test_invalid_config_leaves_nothing(pkg: Path, tmp_path: Path) -> None:
    before = tree_digest(pkg)
    out = tmp_path / "out"
    out.mkdir()
    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            granularity="per_block", block_size=[1, 2, 3, 4, 5]
        )
    )
    with pytest.raises(ValueError, match="block_size"):
        optimize.linear_quantize_weights(str(pkg), config, output_path=out / "o.mlpackage")
    assert list(out.iterdir()) == []
    assert tree_digest(pkg) == before


def test_output_inside_an_unwritable_place(pkg: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory is needed")
    before = tree_digest(pkg)
    with pytest.raises(PackageIOError) as info:
        optimize.decompress_weights(str(pkg), output_path=blocker / "o.mlpackage")
    assert "blocker" in str(info.value)
    assert tree_digest(pkg) == before
    assert blocker.read_text() == "a file where a directory is needed"


def test_cli_reports_one_line(
    pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (pkg / MODEL_REL).write_bytes(b"\xff" * 10)
    assert cli_main(["info", str(pkg)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.mlmodel" in err


def test_failure_leaves_no_temporary_output(tmp_path: Path) -> None:
    import glob
    import tempfile

    from coreml_compress import optimize

    pattern = str(Path(tempfile.gettempdir()) / "coreml_compress_*")
    before = set(glob.glob(pattern))
    with pytest.raises(CoreMLCompressError):
        optimize.decompress_weights(tmp_path / "missing.mlpackage")
    with pytest.raises(CoreMLCompressError):
        optimize.linear_quantize_weights(
            tmp_path / "missing.mlpackage", {"config_type": "OptimizationConfig"}
        )
    assert set(glob.glob(pattern)) == before


# --------------------------------------------------------------------------------------
# Hostile sizes, inconsistent declarations, special files (issue 16)
# --------------------------------------------------------------------------------------

HUGE = 2**63


def _block_ops(spec: Any) -> list[Any]:
    ops: list[Any] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            ops.append(op)
            for inner in op.blocks:
                walk(inner)

    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    return ops


def _set_dims(value_type: Any, dims: list[int]) -> None:
    t = value_type.tensorType
    del t.dimensions[:]
    for d in dims:
        t.dimensions.add().constant.size = d
    t.rank = len(dims)


def set_const_shape(pkg: Path, name: str, dims: list[int]) -> None:
    """Declares the const op named ``name`` (its output and its value) with shape ``dims``."""
    spec = load_spec(pkg)
    (op,) = [op for op in _block_ops(spec) if op.type == "const" and op.outputs[0].name == name]
    _set_dims(op.outputs[0].type, dims)
    _set_dims(op.attributes["val"].type, dims)
    (pkg / MODEL_REL).write_bytes(spec.SerializeToString())


def set_input_shape(pkg: Path, output: str, param: str, dims: list[int]) -> None:
    """Declares the value bound to input ``param`` of the op producing ``output`` with ``dims``."""
    spec = load_spec(pkg)
    (op,) = [op for op in _block_ops(spec) if op.outputs and op.outputs[0].name == output]
    _set_dims(op.inputs[param].arguments[0].value.type, dims)
    (pkg / MODEL_REL).write_bytes(spec.SerializeToString())


@pytest.fixture(scope="session")
def int4_package(valid_package: Path, model_dir: Path) -> Path:
    cfg = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            dtype="int4", granularity="per_block", block_size=32
        )
    )
    dest = model_dir / "linear-int4-block32.mlpackage"
    if not dest.exists():
        optimize.linear_quantize_weights(str(valid_package), cfg, output_path=dest)
    return dest


@pytest.fixture
def int4_pkg(int4_package: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "in" / "int4.mlpackage"
    shutil.copytree(int4_package, dest)
    return dest


def _palettize(mode: str, **kw: Any) -> Callable[[Path, Path], Any]:
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode=mode, **kw))
    return lambda src, out: optimize.palettize_weights(
        str(src), config, joint_compression=True, output_path=out / "out.mlpackage"
    )


@pytest.mark.parametrize(
    ("dims", "door"),
    [
        # [2, 2^63 + 4096] wraps to the real 8192 elements when multiplied unchecked.
        ([2, HUGE + 4096], "inspect"),
        ([HUGE + 4096, 2], "grouped k-means"),
    ],
)
def test_overflowing_const_shape(pkg: Path, tmp_path: Path, dims: list[int], door: str) -> None:
    set_const_shape(pkg, "lin1_weight_to_fp16", dims)
    check_failure(pkg, tmp_path, MalformedPackageError, str(pkg / MODEL_REL), "is too large")
    grouped = _palettize("kmeans", nbits=4, granularity="per_grouped_channel", group_size=2)
    with pytest.raises(MalformedPackageError, match="is too large"):
        grouped(pkg, tmp_path)
    check_no_crash(pkg, tmp_path, MalformedPackageError)


def test_overflowing_scale_shape_with_joint_palettization(int4_pkg: Path, tmp_path: Path) -> None:
    # The scale holds [128, 2]; [2, 2^63 + 128] wraps to its 256 elements.
    set_input_shape(int4_pkg, "lin1_weight_to_fp16_quantized", "scale", [2, HUGE + 128])
    before = tree_digest(int4_pkg)
    with pytest.raises(MalformedPackageError, match="is too large"):
        _palettize("uniform", nbits=8)(int4_pkg, tmp_path)
    assert tree_digest(int4_pkg) == before
    check_failure(int4_pkg, tmp_path, MalformedPackageError, "is too large")


def test_blob_size_zero_is_refused_by_every_pass(int4_pkg: Path, tmp_path: Path) -> None:
    weights = int4_pkg / WEIGHTS_REL
    (op,) = [
        op
        for op in _block_ops(load_spec(int4_pkg))
        if op.outputs[0].name == "lin1_weight_to_fp16_quantized"
    ]
    offset = op.inputs["data"].arguments[0].value.blobFileValue.offset
    patch(weights, offset + 8, struct.pack("<Q", 0))
    fragment = f"blob at offset {offset} holds 0 elements but the value's shape [128, 64] has 8192"
    check_failure(int4_pkg, tmp_path, MalformedPackageError, fragment)
    prune = cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5))
    for call in (
        _palettize("kmeans", nbits=4),
        lambda src, out: optimize.prune_weights(str(src), prune, output_path=out / "o.mlpackage"),
    ):
        with pytest.raises(MalformedPackageError) as info:
            call(int4_pkg, tmp_path)
        assert fragment in str(info.value)


def test_n_m_pruning_of_conv_weights_matches_coremltools(model_dir: Path, tmp_path: Path) -> None:
    conv = models.build_conv(model_dir, ct.target.iOS18, ct.precision.FLOAT16)
    for dim in (0, 1):
        op = cto.OpMagnitudePrunerConfig(n_m_ratio=(3, 4), dim=dim, weight_threshold=100)
        config = cto.OptimizationConfig(global_config=op)
        ours = tmp_path / f"o{dim}.mlpackage"
        optimize.prune_weights(str(conv), config, output_path=ours)
        theirs = models.compress_with_coremltools(
            conv, "prune", config, tmp_path / f"ct{dim}.mlpackage"
        )
        got = models.dense_weights(ours)
        want = models.dense_weights(theirs)
        assert got.keys() == want.keys()
        for name in want:
            assert (got[name] == want[name]).all(), (dim, name)


@pytest.mark.parametrize("version", ["1", "1.0", "1.0.0.0.0", "1.0.x"])
def test_file_format_version_must_be_major_minor_patch(
    pkg: Path, tmp_path: Path, version: str
) -> None:
    _edit_manifest(pkg, lambda m: m.update(fileFormatVersion=version))
    check_failure(pkg, tmp_path, MalformedPackageError, "Manifest.json", "major.minor.patch")


@pytest.mark.parametrize("which", ["Manifest.json", str(MODEL_REL), str(WEIGHTS_REL)])
def test_fifo_in_place_of_a_file(pkg: Path, tmp_path: Path, which: str) -> None:
    path = pkg / which
    path.unlink()
    os.mkfifo(path)
    check_failure(pkg, tmp_path, MalformedPackageError, str(path), "not a regular file")
    check_no_crash(pkg, tmp_path, MalformedPackageError)


def test_model_file_linked_to_dev_zero(pkg: Path, tmp_path: Path) -> None:
    model = pkg / MODEL_REL
    model.unlink()
    model.symlink_to("/dev/zero")
    check_failure(pkg, tmp_path, MalformedPackageError, str(model), "not a regular file")


def test_directory_in_place_of_the_weight_file(pkg: Path, tmp_path: Path) -> None:
    weights = pkg / WEIGHTS_REL
    weights.unlink()
    weights.mkdir()
    check_failure(pkg, tmp_path, MalformedPackageError, str(weights), "a directory")


def test_files_linked_into_a_blob_store_are_followed(pkg: Path, tmp_path: Path) -> None:
    # Hugging Face caches hold packages whose files are symlinks into a blob store.
    store = tmp_path / "blobs"
    store.mkdir()
    for rel in ("Manifest.json", MODEL_REL, WEIGHTS_REL):
        path = pkg / rel
        target = store / hashlib.sha256(str(rel).encode()).hexdigest()
        shutil.move(path, target)
        path.symlink_to(target)
    records = cc_inspect(str(pkg))
    assert records
    out = optimize.linear_quantize_weights(
        str(pkg), quantize_config(), output_path=tmp_path / "o.mlpackage"
    )
    assert cc_inspect(str(tmp_path / "o.mlpackage")) and out is not None


@pytest.fixture(scope="session")
def coreml6_in_spec9(model_dir: Path) -> Path:
    """An iOS16 (CoreML6) program palettized to constexpr_lut_to_dense, in a spec-9 package."""
    dest = model_dir / "coreml6-in-spec9.mlpackage"
    if not dest.exists():
        base = models.build_linear(model_dir, ct.target.iOS16, ct.precision.FLOAT16)
        config = cto.OptimizationConfig(
            global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4)
        )
        optimize.palettize_weights(str(base), config, output_path=dest)
        spec = load_spec(dest)
        assert [f.opset for f in spec.mlProgram.functions.values()] == ["CoreML6"]
        spec.specificationVersion = 9
        (dest / MODEL_REL).write_bytes(spec.SerializeToString())
    return dest


def test_function_opset_older_than_the_package(coreml6_in_spec9: Path, tmp_path: Path) -> None:
    # Valid as it is: every door reads it.
    assert cc_inspect(str(coreml6_in_spec9))
    # Joint compression needs iOS18 op forms, which a CoreML6 function cannot hold.
    prune = cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5))
    with pytest.raises(CompressionConfigError, match="function main has opset CoreML6"):
        optimize.prune_weights(
            str(coreml6_in_spec9),
            prune,
            joint_compression=True,
            output_path=tmp_path / "j.mlpackage",
        )
    assert not (tmp_path / "j.mlpackage").exists()
    # A plain pass emits the CoreML6 forms there (iOS16 ops with their `shape` parameter).
    src = tmp_path / "src.mlpackage"
    optimize.decompress_weights(str(coreml6_in_spec9), output_path=src)
    for name, call in {
        "prune": lambda out: optimize.prune_weights(str(src), prune, output_path=out),
        "int8": lambda out: optimize.linear_quantize_weights(
            str(src), quantize_config(), output_path=out
        ),
        "palettize": lambda out: optimize.palettize_weights(
            str(src),
            cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="uniform", nbits=8)),
            output_path=out,
        ),
    }.items():
        out = tmp_path / f"{name}.mlpackage"
        call(out)
        assert cc_inspect(str(out))
        ops = [op for op in _block_ops(load_spec(out)) if op.type.startswith("constexpr")]
        assert ops, name
        for op in ops:
            assert op.type in (
                "constexpr_sparse_to_dense",
                "constexpr_affine_dequantize",
                "constexpr_lut_to_dense",
            )
            if op.type != "constexpr_affine_dequantize":
                assert "shape" in op.attributes or "shape" in op.inputs, (name, op.type)
        ct.models.MLModel(str(out), skip_model_load=True)


def test_inline_const_shorter_than_its_declared_shape(model_dir: Path, tmp_path: Path) -> None:
    # The package fuzzer (seed 16): a conv's dilations, declared [64] but holding two int32s,
    # were copied through by the passes, and inspect then refused their output.
    src = tmp_path / "in" / "conv.mlpackage"
    shutil.copytree(models.build_conv(model_dir, ct.target.iOS18, ct.precision.FLOAT32), src)
    spec = load_spec(src)
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    op = next(
        op
        for op in block.operations
        if op.type == "const"
        and op.attributes["val"].WhichOneof("value") == "immediateValue"
        and op.attributes["val"].type.tensorType.dataType == MIL_pb2.DataType.INT32
        and len(op.attributes["val"].type.tensorType.dimensions) == 1
    )
    op.attributes["val"].type.tensorType.dimensions[0].constant.size = 64
    op.outputs[0].type.tensorType.dimensions[0].constant.size = 64
    (src / MODEL_REL).write_bytes(spec.SerializeToString())
    check_failure(src, tmp_path, MalformedPackageError, "parameter val", "256 bytes expected")


def test_chain_shapes_that_disagree_are_refused_by_every_door(
    int4_pkg: Path, tmp_path: Path
) -> None:
    # The package fuzzer: a chain parameter that gained a dimension of 1 (same element count)
    # was copied through by passes that compress other weights, and inspect then refused
    # their output. Every door refuses it now, the passes included.
    set_input_shape(int4_pkg, "lin1_weight_to_fp16_quantized", "scale", [128, 2, 1])
    fragment = "lin1_weight_to_fp16_quantized"
    check_failure(int4_pkg, tmp_path, MalformedPackageError, fragment)
    with pytest.raises(MalformedPackageError, match=fragment):
        optimize.palettize_weights(
            str(int4_pkg),
            cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4)),
            output_path=tmp_path / "p.mlpackage",
        )
    assert not (tmp_path / "p.mlpackage").exists()


def test_chain_output_declared_with_another_shape(valid_package: Path, tmp_path: Path) -> None:
    # The package fuzzer (seed 1, mutant 3255): a LUT op's output declared [96, 128, 1] while its
    # value is [96, 128]; joint pruning rewrote the chain from the declaration and wrote a
    # constexpr_lut_to_sparse whose LUT rank did not match its indices.
    src = tmp_path / "in" / "lut.mlpackage"
    optimize.palettize_weights(
        str(valid_package),
        cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4)),
        output_path=src,
    )
    spec = load_spec(src)
    (op,) = [
        op for op in _block_ops(spec) if op.outputs[0].name == "lin2_weight_to_fp16_palettized"
    ]
    _set_dims(op.outputs[0].type, [96, 128, 1])
    (src / MODEL_REL).write_bytes(spec.SerializeToString())
    fragment = "is declared with shape [96, 128, 1] but its value has shape [96, 128]"
    check_failure(src, tmp_path, MalformedPackageError, fragment)
    prune = cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5))
    with pytest.raises(MalformedPackageError, match=re.escape(fragment)):
        optimize.prune_weights(
            str(src), prune, joint_compression=True, output_path=tmp_path / "j.mlpackage"
        )
    assert not (tmp_path / "j.mlpackage").exists()


def test_const_output_declared_with_another_shape(pkg: Path, tmp_path: Path) -> None:
    # The package fuzzer (seeds 2 and 16): a const's output declared [96, 1] while its value is
    # [96] was copied through by every pass, and inspect then refused the output.
    spec = load_spec(pkg)
    (op,) = [op for op in _block_ops(spec) if op.outputs[0].name == "shared_a_bias_0_to_fp16"]
    _set_dims(op.outputs[0].type, [96, 1])
    (pkg / MODEL_REL).write_bytes(spec.SerializeToString())
    check_failure(
        pkg,
        tmp_path,
        MalformedPackageError,
        "is declared with shape [96, 1] but its value has shape [96]",
    )
