"""The coreml-compress command line, run as a subprocess (`python -m coreml_compress.cli`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import coreml_compress
import models
import pytest
from coreml_compress.inspect import inspect

run = models.run_cli


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
    # A second run into the same directory asks before replacing the packages.
    again = run("demo", "--out", str(tmp_path))
    assert again.returncode == 2
    assert "example.mlpackage already exists; pass --force" in again.stderr
    assert run("demo", "--out", str(tmp_path), "--force").returncode == 0


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
def test_bad_path_exits_1(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.mlpackage"
    args = [str(missing)] + ([str(tmp_path / "out.mlpackage")] if command == "decompress" else [])
    r = run(command, *args)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.mlpackage" in lines[0]
    assert lines[0].startswith("coreml-compress: error:")


def test_not_a_package_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("hello")
    r = run("info", str(f))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_usage_error() -> None:
    r = run()
    assert r.returncode == 2 and "usage" in r.stderr


COMMANDS = [
    "info",
    "demo",
    "decompress",
    "merge",
    "extract",
    "lint",
    "palettize",
    "quantize",
    "prune",
    "compress",
]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command_with_exit_codes(flag: str) -> None:
    r = run(flag)
    assert r.returncode == 0, r.stderr
    for command in COMMANDS:
        assert command in r.stdout
    for command in COMMANDS:
        sub = run(command, flag)
        assert sub.returncode == 0 and sub.stderr == "", (command, sub.stderr)
        assert sub.stdout.startswith(f"usage: coreml-compress {command}")
        assert "exit status:" in sub.stdout and "2    usage error" in sub.stdout
        assert "3    lint:" in sub.stdout
    assert "prune 50% then palettize" in r.stdout


def test_version() -> None:
    r = run("--version")
    assert (
        r.returncode == 0 and r.stdout.strip() == f"coreml-compress {coreml_compress.__version__}"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "--n-m", "2-4"], "argument --n-m: expected N:M such as 2:4 (N <= M), got '2-4'"),
        (["prune", "--n-m", "4:2"], "argument --n-m: expected N:M such as 2:4 (N <= M), got '4:2'"),
        (
            ["prune", "--sparsity", "1.5"],
            "argument --sparsity: expected a fraction in [0, 1] such as 0.5",
        ),
        (
            ["prune", "--threshold", "-1"],
            "argument --threshold: expected a number >= 0 such as 1e-3",
        ),
        (["prune"], "one of the arguments --sparsity --n-m --threshold is required"),
        (
            ["prune", "--sparsity", "0.5", "--dim", "1"],
            "--dim can only be set along with --block-size or --n-m",
        ),
        (
            ["palettize", "--group-size", "0"],
            "argument --group-size: expected a positive integer such as 32",
        ),
        (["palettize", "--nbits", "5"], "argument --nbits: invalid choice: 5"),
        (
            ["quantize", "--weight-threshold", "x"],
            "argument --weight-threshold: expected an integer >= 0",
        ),
        (
            ["quantize", "--block-size", "-3"],
            "argument --block-size: expected a positive integer such as 32",
        ),
    ],
)
def test_argument_errors_name_the_option_and_form(
    args: list[str], message: str, linear: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mlpackage"
    r = run(args[0], str(linear), str(out), *args[1:])
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"coreml-compress {args[0]}: error: {message}")
    assert "Traceback" not in r.stderr and not out.exists()


def test_config_file_mistake_exits_1_naming_file_and_key(linear: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("config_type: OpPalettizerConfig\nglobal_config: {nbits: 4, grop_size: 8}\n")
    r = run("palettize", str(linear), str(tmp_path / "out.mlpackage"), "--config", str(config))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"coreml-compress: error: {config}: global_config: unknown key 'grop_size' for "
        "OpPalettizerConfig; did you mean 'group_size'?"
    )


def test_path_only_run_never_imports_coremltools(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from coreml_compress.cli import main\n"
        f"assert main(['demo', '--out', {str(tmp_path)!r}]) == 0\n"
        f"assert main(['info', {str(tmp_path / 'example.mlpackage')!r}]) == 0\n"
        "assert 'coremltools' not in sys.modules, 'coremltools was imported'\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr


def test_interrupt_exits_130_and_leaves_nothing(
    linear: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coreml_compress import cli, optimize

    def interrupted(kind: str, src: str, dst: str, *rest: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(optimize._native, "compress", interrupted)
    out = tmp_path / "out.mlpackage"
    assert cli.main(["palettize", str(linear), str(out)]) == 130
    assert capsys.readouterr().err.endswith("coreml-compress: interrupted\n")
    assert list(tmp_path.iterdir()) == []
