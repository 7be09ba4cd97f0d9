"""The project's own Core ML schema (proto/*.proto) against coremltools' compiled descriptors.

Along the ML Program path — Model (specificationVersion, description, isUpdatable, mlProgram),
everything reachable from ModelDescription (the FeatureType family included) and from the MIL
Program — every message, field and enum value coremltools knows must exist in our schema with the
same number, scalar type, message/enum type name, label, map-ness and oneof, and our schema must
not add fields coremltools does not know. Our .proto files are compiled with grpcio-tools' bundled
protoc into a FileDescriptorSet.

Also: the typed stub of ``coreml_compress._native`` covers every function the module exports, with
the same parameter names, and ``py.typed`` ships.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import coreml_compress
import pytest
from coreml_compress import _native
from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path(coreml_compress.__file__).resolve().parent

# The fields of Model on the ML Program path; every other Model field is another model type.
MODEL_FIELDS = ("specificationVersion", "description", "isUpdatable", "mlProgram")
MODEL = ".CoreML.Specification.Model"

FDP = descriptor_pb2.FieldDescriptorProto


class Schema:
    """Messages and enums of a set of files, by full name (with the leading dot)."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for f in files:
            prefix = f".{f.package}" if f.package else ""
            for m in f.message_type:
                self._add_message(prefix, m)
            for e in f.enum_type:
                self.enums[f"{prefix}.{e.name}"] = e

    def _add_message(self, prefix: str, m: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{m.name}"
        self.messages[name] = m
        for nested in m.nested_type:
            self._add_message(name, nested)
        for e in m.enum_type:
            self.enums[f"{name}.{e.name}"] = e

    def is_map(self, type_name: str) -> bool:
        m = self.messages.get(type_name)
        return m is not None and m.options.map_entry

    def describe(self, message: str, field: FDP) -> dict[str, Any]:
        """What must agree between the two schemas for one field."""
        m = self.messages[message]
        oneof = None
        if field.HasField("oneof_index") and not field.proto3_optional:
            oneof = m.oneof_decl[field.oneof_index].name
        return {
            "number": field.number,
            "type": FDP.Type.Name(field.type),
            "type_name": field.type_name or None,
            "repeated": field.label == FDP.LABEL_REPEATED,
            "map": bool(field.type_name) and self.is_map(field.type_name),
            "oneof": oneof,
            "proto3_optional": field.proto3_optional,
        }


def coremltools_schema() -> Schema:
    files = []
    for module in (Model_pb2, MIL_pb2, FeatureTypes_pb2):
        seen = set()
        stack = [module.DESCRIPTOR]
        while stack:  # the module's file and everything it imports
            d = stack.pop()
            if d.name in seen:
                continue
            seen.add(d.name)
            proto = descriptor_pb2.FileDescriptorProto()
            d.CopyToProto(proto)
            files.append(proto)
            stack.extend(d.dependencies)
    return Schema(files)


def compile_ours(out_dir: Path) -> Schema:
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = out_dir / "ours.pb"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *sorted(p.name for p in PROTO_DIR.glob("*.proto")),
    ]
    assert protoc.main(args) == 0, "protoc could not compile proto/*.proto"
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return Schema(list(fds.file))


THEIRS = coremltools_schema()


def ml_program_path(schema: Schema) -> tuple[list[str], list[str]]:
    """Message and enum names reachable along the ML Program path, in walk order."""
    messages: list[str] = [MODEL]
    enums: list[str] = []
    seen = {MODEL}
    model = schema.messages[MODEL]
    stack = [f.type_name for f in model.field if f.name in MODEL_FIELDS and f.type_name]
    while stack:
        name = stack.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if name in schema.enums:
            enums.append(name)
            continue
        messages.append(name)
        stack.extend(f.type_name for f in schema.messages[name].field if f.type_name)
    return messages, enums


PATH_MESSAGES, PATH_ENUMS = ml_program_path(THEIRS)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    return compile_ours(tmp_path_factory.mktemp("schema"))


def test_walk_covers_the_ml_program_family() -> None:
    for name in [
        "Model",
        "ModelDescription",
        "FeatureDescription",
        "FunctionDescription",
        "Metadata",
        "FeatureType",
        "ArrayFeatureType",
        "ImageFeatureType",
        "StateFeatureType",
        "MILSpec.Program",
        "MILSpec.Function",
        "MILSpec.Block",
        "MILSpec.Operation",
        "MILSpec.Argument",
        "MILSpec.Argument.Binding",
        "MILSpec.Value",
        "MILSpec.Value.BlobFileValue",
        "MILSpec.ValueType",
        "MILSpec.TensorType",
        "MILSpec.TensorValue",
        "MILSpec.Dimension",
        "MILSpec.NamedValueType",
    ]:
        assert f".CoreML.Specification.{name}" in PATH_MESSAGES, name
    assert ".CoreML.Specification.MILSpec.DataType" in PATH_ENUMS
    assert ".CoreML.Specification.ArrayFeatureType.ArrayDataType" in PATH_ENUMS
    # Not on the path: the other model types.
    assert ".CoreML.Specification.NeuralNetwork" not in PATH_MESSAGES


@pytest.mark.parametrize(
    "message", PATH_MESSAGES, ids=lambda n: n.removeprefix(".CoreML.Specification.")
)
def test_message_fields_match(ours: Schema, message: str) -> None:
    assert message in ours.messages, f"{message} is missing from proto/"
    theirs_msg = THEIRS.messages[message]
    ours_msg = ours.messages[message]
    assert ours_msg.options.map_entry == theirs_msg.options.map_entry
    ours_fields = {f.name: f for f in ours_msg.field}
    wanted = [f for f in theirs_msg.field if message != MODEL or f.name in MODEL_FIELDS]
    problems = []
    for f in wanted:
        if f.name not in ours_fields:
            problems.append(f"missing field {f.name} = {f.number}")
            continue
        a, b = THEIRS.describe(message, f), ours.describe(message, ours_fields[f.name])
        if a != b:
            diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            problems.append(f"field {f.name}: (coremltools, ours) differ in {diff}")
    theirs_names = {f.name for f in theirs_msg.field}
    theirs_numbers = {f.number: f.name for f in theirs_msg.field}
    for f in ours_msg.field:
        if f.name not in theirs_names:
            problems.append(f"extra field {f.name} = {f.number} (coremltools has none)")
        elif theirs_numbers.get(f.number) != f.name:
            problems.append(
                f"field number {f.number} is {theirs_numbers.get(f.number)} in coremltools"
            )
    assert not problems, f"{message}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("enum", PATH_ENUMS, ids=lambda n: n.removeprefix(".CoreML.Specification."))
def test_enum_values_match(ours: Schema, enum: str) -> None:
    assert enum in ours.enums, f"{enum} is missing from proto/"
    theirs_values = {v.name: v.number for v in THEIRS.enums[enum].value}
    ours_values = {v.name: v.number for v in ours.enums[enum].value}
    assert ours_values == theirs_values


def test_file_packages_match(ours: Schema) -> None:
    # Message full names include the package, so a wrong package fails every test above; this
    # says so directly.
    assert MODEL in ours.messages
    assert ".CoreML.Specification.MILSpec.Program" in ours.messages


# --------------------------------------------------------------------------------------
# The typed stub of _native
# --------------------------------------------------------------------------------------


def _stub_functions() -> dict[str, ast.FunctionDef]:
    stub = PACKAGE_DIR / "_native.pyi"
    assert stub.is_file(), "python/coreml_compress/_native.pyi is missing"
    tree = ast.parse(stub.read_text())
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _exported() -> list[str]:
    return sorted(
        name
        for name in dir(_native)
        if not name.startswith("_") and callable(getattr(_native, name))
    )


def test_py_typed_ships() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()


def test_stub_covers_every_native_function() -> None:
    stub = _stub_functions()
    missing = [name for name in _exported() if name not in stub]
    assert not missing, f"_native.pyi lacks {missing}"
    stale = [name for name in stub if not hasattr(_native, name)]
    assert not stale, f"_native.pyi declares functions _native does not have: {stale}"


@pytest.mark.parametrize("name", _exported())
def test_stub_signature_matches(name: str) -> None:
    stub = _stub_functions().get(name)
    if stub is None:
        pytest.fail(f"_native.pyi lacks {name}")
    try:
        real = inspect.signature(getattr(_native, name))
    except (TypeError, ValueError):
        pytest.skip(f"{name} has no introspectable signature")
    args = stub.args
    stub_params = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    assert stub_params == list(real.parameters), (stub_params, list(real.parameters))
    # Defaults: a parameter has one in the stub exactly when it has one at run time.
    positional = [*args.posonlyargs, *args.args]
    stub_defaults = {a.arg for a in positional[len(positional) - len(args.defaults) :]}
    stub_defaults |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
    real_defaults = {
        p for p, v in real.parameters.items() if v.default is not inspect.Parameter.empty
    }
    assert stub_defaults == real_defaults
    for a in [*positional, *args.kwonlyargs]:
        assert a.annotation is not None, f"{name}({a.arg}) has no type annotation"
    assert stub.returns is not None, f"{name} has no return annotation"
