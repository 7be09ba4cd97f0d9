"""The Python surface a new user meets: path in → path out (no coremltools import), MLModel in →
MLModel out without temporary directories left behind, recipes from YAML, the coremltools patch
(joint compression on the engine, a warning when a call goes to coremltools), the inspect table,
docstrings, and ``dir()``/``help()`` of the package."""

from __future__ import annotations

import inspect as pyinspect
import os
import pydoc
import subprocess
import sys
import warnings
from pathlib import Path

import coreml_compress
import coremltools as ct
import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import multifunction, optimize, patch
from coreml_compress.errors import ConfigError, CoreMLCompressError
from test_quantize_prune import assert_same_compression

PALETTIZE = {"config_type": "OpPalettizerConfig", "global_config": {"nbits": 4}}


@pytest.fixture(scope="module")
def linear(model_dir: Path) -> Path:
    return models.build("linear", model_dir, "iOS18", "fp16")


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_path_in_path_out_without_importing_coremltools(linear: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from pathlib import Path
from coreml_compress import optimize
src = {str(linear)!r}
out = optimize.palettize_weights(src, {PALETTIZE!r}, output_path={str(tmp_path / "p.mlpackage")!r})
assert isinstance(out, Path) and out.is_dir(), out
temp = optimize.decompress_weights(out)
assert isinstance(temp, Path) and temp.is_dir(), temp
assert "coremltools" not in sys.modules, "coremltools was imported"
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr


def test_return_mlmodel_from_a_path(linear: Path, tmp_path: Path) -> None:
    out = optimize.palettize_weights(
        linear, PALETTIZE, output_path=tmp_path / "p.mlpackage", return_mlmodel=True
    )
    assert isinstance(out, ct.models.MLModel)
    assert Path(out.package_path) == tmp_path / "p.mlpackage"


def _ours_in(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("coreml_compress_"))


def test_mlmodel_results_leave_no_temporary_directory(linear: Path, tmp_path: Path) -> None:
    # Each call that returns an MLModel over a temporary package: at exit, coremltools removes the
    # package and nothing of ours is left in the temp folder.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = f"""
import coremltools as ct
from coreml_compress import optimize
model = ct.models.MLModel({str(linear)!r}, skip_model_load=True)
a = optimize.palettize_weights(model, {PALETTIZE!r})
b = optimize.decompress_weights(a)
c = optimize.palettize_weights({str(linear)!r}, {PALETTIZE!r}, return_mlmodel=True)
assert all(isinstance(m, ct.models.MLModel) for m in (a, b, c))
"""
    r = run_python(code, {"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr
    assert _ours_in(tmp) == []


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_temporary_directory_removed_on_error(model_dir: Path, private_tempdir: Path) -> None:
    ios16 = models.build("linear", model_dir, "iOS16", "fp16")
    config = {
        "config_type": "OpPalettizerConfig",
        "global_config": {"nbits": 4, "granularity": "per_grouped_channel"},
    }
    with pytest.raises(CoreMLCompressError, match="iOS18"):
        optimize.palettize_weights(ios16, config)
    assert _ours_in(private_tempdir) == []


def test_temporary_directory_removed_on_keyboard_interrupt(
    linear: Path, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(kind: str, src: str, dst: str, *rest: object) -> None:
        Path(dst).mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(optimize._native, "compress", interrupted)
    with pytest.raises(KeyboardInterrupt):
        optimize.palettize_weights(linear, PALETTIZE)
    assert _ours_in(private_tempdir) == []


RECIPE = """\
steps:
  - prune: {config_type: OpMagnitudePrunerConfig, target_sparsity: 0.5}
  - palettize: {config_type: OpPalettizerConfig, nbits: 4}
"""


def test_apply_recipe_takes_a_yaml_path(linear: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    from_file = optimize.apply_recipe(linear, recipe, output_path=tmp_path / "a.mlpackage")
    from_name = optimize.apply_recipe(linear, str(recipe), output_path=tmp_path / "b.mlpackage")
    steps = [
        ("prune", cto.OptimizationConfig(cto.OpMagnitudePrunerConfig(target_sparsity=0.5))),
        ("palettize", cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=4))),
    ]
    from_steps = optimize.apply_recipe(linear, steps, output_path=tmp_path / "c.mlpackage")
    assert_same_compression(from_file, from_steps)
    assert_same_compression(from_name, from_steps)
    assert [name for name, _ in optimize.load_recipe(recipe)] == ["prune", "palettize"]


def test_recipe_mistakes_name_the_file_step_and_key(linear: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("nbits: 4", "nbitz: 4"))
    with pytest.raises(ConfigError) as info:
        optimize.apply_recipe(linear, recipe, output_path=tmp_path / "x.mlpackage")
    assert str(info.value) == (
        f"{recipe}: step 2 (palettize): global_config: unknown key 'nbitz' for "
        "OpPalettizerConfig; did you mean 'nbits'?"
    )
    assert not (tmp_path / "x.mlpackage").exists()
    # Steps given in Python: the step and the key.
    steps = [
        (
            "prune",
            {"config_type": "OpMagnitudePrunerConfig", "global_config": {"n_m_ratio": [4, 2]}},
        )
    ]
    with pytest.raises(ValueError) as caught:
        optimize.apply_recipe(linear, steps)
    assert str(caught.value).startswith('step 1 (prune): global_config: "n_m_ratio" must be')
    with pytest.raises(ConfigError, match=r"^step 1: unknown step 'prun'; did you mean 'prune'\?"):
        optimize.apply_recipe(linear, [("prun", PALETTIZE)])
    with pytest.raises(ConfigError, match=r"^step 1 \(prune\): prune_weights only accept "):
        optimize.apply_recipe(linear, [("prune", PALETTIZE)])


def test_patch_runs_joint_compression_on_the_engine(
    linear: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool]] = []
    run = optimize._run

    def spy(kind: str, model: object, config: object, joint: bool, *rest: object) -> object:
        calls.append((kind, joint))
        return run(kind, model, config, joint, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(optimize, "_run", spy)
    pruned = optimize.prune_weights(
        ct.models.MLModel(str(linear), skip_model_load=True),
        cto.OptimizationConfig(cto.OpMagnitudePrunerConfig(target_sparsity=0.5)),
        output_path=tmp_path / "pruned.mlpackage",
    )
    coreml_compress.patch_coremltools()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no hand-over warning
            joint = cto.palettize_weights(
                pruned,
                cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=4)),
                joint_compression=True,
            )
    finally:
        coreml_compress.unpatch_coremltools()
    assert calls[-1] == ("palettize_weights", True)
    assert isinstance(joint, ct.models.MLModel)
    assert "constexpr_lut_to_sparse" in models.op_types(joint.package_path)


def test_patch_warns_once_when_a_call_goes_to_coremltools(
    linear: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coreml_compress.errors import UnsupportedModelError

    def not_taken(model: object) -> Path:
        raise UnsupportedModelError("the model is not an ML Program")

    monkeypatch.setattr(optimize, "package_path", not_taken)
    model = ct.models.MLModel(str(linear), skip_model_load=True)
    config = cto.OptimizationConfig(cto.OpLinearQuantizerConfig())
    coreml_compress.patch_coremltools()
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            first = cto.linear_quantize_weights(model, config)
            second = cto.linear_quantize_weights(model, config)
    finally:
        coreml_compress.unpatch_coremltools()
    ours = [w for w in seen if "ran on coremltools" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning
    assert "linear_quantize_weights ran on coremltools' own code" in str(ours[0].message)
    assert isinstance(first, ct.models.MLModel) and isinstance(second, ct.models.MLModel)
    assert not patch.is_patched()


def test_inspect_report_is_a_table_and_still_a_list(linear: Path) -> None:
    report = coreml_compress.inspect(linear)
    names = [w.name for w in report]
    assert len(report) == len(names) > 0 and report[0].name == names[0]
    text = repr(report)
    assert text == str(report) and "WeightInfo(" not in text
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["name", "shape", "dtype", "compression"]
    assert lines[-1].startswith(f"{len(report)} weights")
    assert all(any(line.startswith(n) for line in lines) for n in names)
    html = report._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == len(report) + 1
    assert all(f"<td>{n}</td>" in html for n in names)
    columns = report.to_dict()
    assert columns["name"] == names and len(columns["bits_per_weight"]) == len(report)
    rows = report.rows()
    assert [r["name"] for r in rows] == names
    assert rows[0]["bytes_on_disk"] == report[0].bytes_on_disk


PUBLIC_FUNCTIONS = [
    optimize.palettize_weights,
    optimize.linear_quantize_weights,
    optimize.prune_weights,
    optimize.decompress_weights,
    optimize.apply_recipe,
    optimize.load_recipe,
    multifunction.save_multifunction,
    multifunction.extract_function,
    multifunction.function_names,
    multifunction.MultiFunctionDescriptor.add_function,
    multifunction.MultiFunctionDescriptor.add_model,
    multifunction.MultiFunctionDescriptor.remove_function,
    coreml_compress.inspect,
    coreml_compress.patch_coremltools,
    coreml_compress.unpatch_coremltools,
    patch.is_patched,
]


@pytest.mark.parametrize("fn", PUBLIC_FUNCTIONS, ids=lambda f: f.__name__)
def test_public_functions_have_numpy_docstrings_and_types(fn: object) -> None:
    doc = pyinspect.getdoc(fn) or ""
    sections = ["Example\n-------"]
    signature = pyinspect.signature(fn)  # type: ignore[arg-type]
    if signature.parameters:
        sections.append("Parameters\n----------")
        sections.extend(f"{name} :" for name in signature.parameters if name != "self")
    if signature.return_annotation not in ("None", None):
        sections.append("Returns\n-------")
    for section in sections:
        assert section in doc, (fn, section)
    hints = {**pyinspect.get_annotations(fn, eval_str=False)}  # type: ignore[arg-type]
    assert "Any" not in [str(h) for h in hints.values()], hints


def test_dir_and_help_show_the_public_api() -> None:
    assert dir(coreml_compress) == sorted([*coreml_compress.__all__, "__version__"])
    text = pydoc.render_doc(coreml_compress, renderer=pydoc.plaintext)
    assert "__getattr__" not in text and "__dir__" not in text
    assert "palettize" in text and "patch_coremltools" in text
    assert coreml_compress.kernels.__name__ == "coreml_compress.kernels"  # lazy, still there


@pytest.mark.parametrize("on_pool", [False, True])
def test_a_panic_is_raised_as_internal_error(on_pool: bool) -> None:
    from coreml_compress import _native
    from coreml_compress.errors import CoreMLCompressError, InternalError

    try:
        _native._panic_for_test(on_pool)
    except Exception as e:  # noqa: BLE001 (what a user's script catches; pyo3's PanicException escapes it)
        err = e
    assert isinstance(err, InternalError) and isinstance(err, CoreMLCompressError)
    message = str(err)
    assert "panic requested by a test" in message and "please report it" in message
    assert "src/python/mod.rs" in message
    # The engine keeps working after it.
    assert _native.build_info()["version"]
