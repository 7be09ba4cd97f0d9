"""The coreml-compress command line, run as a subprocess (`python -m coreml_compress.cli`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import models
import pytest
from coreml_compress.inspect import inspect


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coreml_compress.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def linear(model_dir: Path) -> Path:
    return models.build_linear(model_dir)


def test_info_prints_table(linear: Path) -> None:
    r = run("info", str(linear))
    assert r.returncode == 0, r.stderr
    for w in inspect(linear):
        assert w.name in r.stdout
    assert "compression" in r.stdout and "distinct" in r.stdout
    assert f"{len(inspect(linear))} weights" in r.stdout


def test_info_on_compressed_model(linear: Path, tmp_path: Path) -> None:
    import coremltools.optimize.coreml as cto

    pal = models.compress_with_coremltools(
        linear, "palettize", cto.OpPalettizerConfig(nbits=4), tmp_path
    )
    r = run("info", str(pal))
    assert r.returncode == 0, r.stderr
    assert "palettized" in r.stdout and "nbits=4" in r.stdout


def test_demo(tmp_path: Path) -> None:
    r = run("demo", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    example = tmp_path / "example.mlpackage"
    assert example.is_dir()
    assert str(example) in r.stdout
    for w in inspect(example):
        assert w.name in r.stdout


def test_decompress(linear: Path, tmp_path: Path) -> None:
    import coremltools.optimize.coreml as cto

    q = models.compress_with_coremltools(
        linear, "quantize", cto.OpLinearQuantizerConfig(), tmp_path
    )
    out = tmp_path / "dense.mlpackage"
    r = run("decompress", str(q), str(out))
    assert r.returncode == 0, r.stderr
    assert {w.compression for w in inspect(out)} == {"none"}


@pytest.mark.parametrize("command", ["info", "decompress"])
def test_bad_path_exits_2(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.mlpackage"
    args = [str(missing)] + ([str(tmp_path / "out.mlpackage")] if command == "decompress" else [])
    r = run(command, *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.mlpackage" in lines[0]
    assert lines[0].startswith("coreml-compress: error:")


def test_not_a_package_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("hello")
    r = run("info", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_usage_error() -> None:
    r = run()
    assert r.returncode == 2 and "usage" in r.stderr
