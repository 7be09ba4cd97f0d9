"""Open-then-save with nothing changed reproduces coremltools' files: the same model protobuf
(coremltools' deterministic serialization) and the same blobs."""

from __future__ import annotations

from pathlib import Path

import coremltools as ct
import models
import numpy as np
import pytest
from coreml_compress import _native

CASES = [
    ("linear", "iOS16", "fp16"),
    ("linear", "iOS18", "fp32"),
    ("conv", "iOS17", "fp16"),
    ("conv_transpose", "iOS18", "fp16"),
    ("matmul", "iOS18", "fp16"),
    ("gather", "iOS18", "fp32"),
    ("odd_shapes", "iOS18", "fp16"),
    ("stateful", "iOS18", "fp16"),
    ("multifunction", "iOS18", "fp16"),
    ("minilm", "iOS18", "fp16"),
]


def blobs(package: Path) -> list[bytes]:
    """Every blob's metadata-less bytes, in file order."""
    path = package / "Data/com.apple.CoreML/weights/weight.bin"
    data = path.read_bytes()
    out, at = [], 64
    while at < len(data):
        size = int.from_bytes(data[at + 8 : at + 16], "little")
        start = int.from_bytes(data[at + 16 : at + 24], "little")
        out.append(data[at + 4 : at + 8] + data[start : start + size])
        at = (start + size + 63) // 64 * 64
    return out


@pytest.mark.parametrize(("kind", "target", "precision"), CASES)
def test_round_trip_is_identical(
    kind: str, target: str, precision: str, model_dir: Path, tmp_path: Path
) -> None:
    src = models.build(kind, model_dir, target, precision)
    out = Path(_native.save_unchanged(str(src), str(tmp_path / "out.mlpackage")))
    ours = (out / "Data/com.apple.CoreML/model.mlmodel").read_bytes()
    spec = ct.utils.load_spec(str(src))
    assert ours == spec.SerializeToString(deterministic=True)
    assert sorted(blobs(out)) == sorted(blobs(src))
    # coremltools loads the result and reads the same weights.
    ct.models.MLModel(str(out), skip_model_load=True)
    a, b = models.dense_weights_by_function(src), models.dense_weights_by_function(out)
    assert a.keys() == b.keys()
    for fn in a:
        assert a[fn].keys() == b[fn].keys()
        for name in a[fn]:
            assert a[fn][name].dtype == b[fn][name].dtype
            np.testing.assert_array_equal(a[fn][name], b[fn][name])


def test_input_is_not_modified(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS18", "fp16")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    _native.save_unchanged(str(src), str(tmp_path / "x.mlpackage"))
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    # No temporary directory is left beside the output.
    assert [p.name for p in tmp_path.iterdir()] == ["x.mlpackage"]
