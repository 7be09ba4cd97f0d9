"""Nothing is lost through an output path: outputs that are an input, lie inside one or contain
one are refused before anything is written; an existing output is replaced only if it is a
package (and from the CLI only with --force); the replacement leaves nothing beside it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coremltools.optimize.coreml as cto
import models
import pytest
from coreml_compress import OutputPathError, _native, optimize
from coreml_compress.multifunction import (
    MultiFunctionDescriptor,
    extract_function,
    save_multifunction,
)

MARKER = ".coreml-compress-tmp"


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` (files by content digest), or the file's digest."""
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(path.rglob("*"))
    }


def palettize_config() -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4))


def prune_config() -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5))


def merge(src: Path, dest: Path) -> Any:
    desc = MultiFunctionDescriptor()
    desc.add_function(str(src), "main", "a")
    desc.add_function(str(src), "main", "b")
    desc.default_function_name = "a"
    return save_multifunction(desc, dest)


# Every entry point that writes a package from an input: (name, write(input, output)).
DOORS: dict[str, Callable[[Path, Path], Any]] = {
    "palettize_weights": lambda s, d: optimize.palettize_weights(
        str(s), palettize_config(), output_path=d
    ),
    "linear_quantize_weights": lambda s, d: optimize.linear_quantize_weights(
        str(s), cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig()), output_path=d
    ),
    "prune_weights": lambda s, d: optimize.prune_weights(str(s), prune_config(), output_path=d),
    "apply_recipe": lambda s, d: optimize.apply_recipe(
        str(s), [("prune", prune_config()), ("palettize", palettize_config())], output_path=d
    ),
    "decompress_weights": lambda s, d: optimize.decompress_weights(str(s), output_path=d),
    "save_multifunction": merge,
    "extract_function": lambda s, d: extract_function(str(s), "main", d),
    "save_unchanged": lambda s, d: _native.save_unchanged(str(s), str(d)),
}


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    """The example package, alone in its own directory."""
    (tmp_path / "models").mkdir()
    return Path(_native.write_example(str(tmp_path / "models" / "in.mlpackage")))


@pytest.fixture()
def palettized(source: Path) -> Path:
    """An input holding constexpr chains: a recipe then runs step by step through scratch
    packages beside its output."""
    dest = source.parent / "pal.mlpackage"
    optimize.palettize_weights(str(source), palettize_config(), output_path=dest)
    return dest


def refused_output(write: Callable[[], Any], dest: Path, src: Path, watched: Path) -> str:
    """``write()`` raises OutputPathError naming both paths, and nothing under ``watched``
    (which holds the input) changes."""
    before = tree(watched)
    with pytest.raises(OutputPathError) as info:
        write()
    message = str(info.value)
    assert str(dest) in message and str(src) in message, message
    assert tree(watched) == before
    return message


@pytest.mark.parametrize("door", DOORS)
def test_output_that_is_the_input_or_holds_it_is_refused(
    door: str, source: Path, tmp_path: Path
) -> None:
    write = DOORS[door]
    for dest, relation in [
        (source, "is the input package"),
        (source / "Data" / "out.mlpackage", "is inside the input package"),
        (source / "nothing" / ".." / "out.mlpackage", "is inside the input package"),
        (source.parent, "contains the input package"),
        (tmp_path, "contains the input package"),
    ]:
        message = refused_output(lambda d=dest: write(source, d), dest, source, tmp_path)
        assert relation in message, message


def test_symlinks_are_resolved(source: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.mlpackage"
    link.symlink_to(source, target_is_directory=True)
    dest = link / "out.mlpackage"
    refused_output(lambda: DOORS["save_unchanged"](source, dest), dest, source, tmp_path / "models")
    # The input named through the link, the output through the real path.
    refused_output(lambda: DOORS["save_unchanged"](link, source), source, link, tmp_path / "models")


def test_step_by_step_recipe_refuses_before_its_scratch_directory(palettized: Path) -> None:
    dest = palettized / "out.mlpackage"
    refused_output(
        lambda: DOORS["apply_recipe"](palettized, dest), dest, palettized, palettized.parent
    )


@pytest.mark.parametrize("door", DOORS)
def test_existing_outputs_that_are_not_packages_are_refused(
    door: str, source: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.mlpackage"
    plain.write_text("not a package")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    link = tmp_path / "link.mlpackage"
    link.symlink_to(
        _native.write_example(str(tmp_path / "other.mlpackage")), target_is_directory=True
    )
    for dest, what in [
        (plain, "is not a directory"),
        (folder, "is a non-empty directory without a Manifest.json"),
        (link, "is a symbolic link"),
    ]:
        before = tree(tmp_path)
        with pytest.raises(OutputPathError, match=what):
            DOORS[door](source, dest)
        assert tree(tmp_path) == before


def test_write_example_refuses_what_is_not_a_package(tmp_path: Path) -> None:
    plain = tmp_path / "plain.mlpackage"
    plain.write_text("not a package")
    with pytest.raises(OutputPathError, match="is not a directory"):
        _native.write_example(str(plain))
    assert plain.read_text() == "not a package"


@pytest.mark.parametrize("door", DOORS)
def test_packages_and_empty_directories_are_replaced_leaving_nothing_beside(
    door: str, source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "m.mlpackage"
    dest.mkdir()  # empty: replaced
    DOORS[door](source, dest)
    first = tree(dest)
    assert "Manifest.json" in first
    # A package: replaced by the new one (the same bytes again), nothing left beside it.
    (dest / "stale.txt").write_text("from the old package")
    DOORS[door](source, dest)
    assert tree(dest) == first
    assert os.listdir(out) == ["m.mlpackage"]


def test_stale_work_directories_of_ended_processes_are_removed(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(child.stdout)
    marked = out / f".m.mlpackage.tmp-{dead}-0"
    (marked / "new" / "Data").mkdir(parents=True)
    (marked / MARKER).write_text("")
    unmarked = out / f".m.mlpackage.tmp-{dead}-1"
    unmarked.mkdir()
    (unmarked / "keep.txt").write_text("not ours")
    _native.save_unchanged(str(source), str(out / "m.mlpackage"))
    assert sorted(os.listdir(out)) == [unmarked.name, "m.mlpackage"]


cli = models.run_cli


def test_cli_replaces_an_existing_package_only_with_force(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.mlpackage"
    palettize = ["palettize", str(source), str(dest), "--nbits", "4"]
    assert cli(*palettize).returncode == 0
    before = tree(dest)
    for argv in (
        palettize,
        ["prune", str(source), str(dest), "--sparsity", "0.5"],
        ["decompress", str(source), str(dest)],
        ["extract", str(source), "main", str(dest)],
        ["merge", str(dest), str(source)],
    ):
        r = cli(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert (
            r.stderr
            == f"coreml-compress: error: {dest} already exists; pass --force to replace it\n"
        )
        assert tree(dest) == before
    r = cli("prune", str(source), str(dest), "--sparsity", "0.5", "--force")
    assert r.returncode == 0, r.stderr
    assert tree(dest) != before
    assert sorted(os.listdir(tmp_path)) == ["models", "out.mlpackage"]
    # --force never replaces what is not a package, nor the input.
    plain = tmp_path / "plain"
    plain.write_text("mine")
    r = cli("decompress", str(source), str(plain), "--force")
    assert r.returncode == 1 and "is not a directory" in r.stderr, r.stderr
    assert plain.read_text() == "mine"
    r = cli("decompress", str(source), str(source), "--force")
    assert r.returncode == 1 and "is the input package" in r.stderr, r.stderr


# Ctrl-C during a write: the progress report raises it (here the callback signals its own
# process, as a terminal would), the engine stops and removes its work directory.
INTERRUPTED = """
import os, signal, sys
import coremltools.optimize.coreml as cto
from coreml_compress import optimize
from coreml_compress.multifunction import MultiFunctionDescriptor, save_multifunction

door, src, dest = sys.argv[1:]

def progress(done, total):
    os.kill(os.getpid(), signal.SIGINT)

try:
    if door == "palettize":
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4))
        optimize.palettize_weights(src, config, output_path=dest, progress=progress)
    else:
        desc = MultiFunctionDescriptor(src)
        desc.default_function_name = "main"
        save_multifunction(desc, dest, progress=progress)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


@pytest.mark.parametrize("door", ["palettize", "merge"])
@pytest.mark.parametrize("replacing", [False, True])
def test_ctrl_c_stops_a_write_and_leaves_nothing(
    door: str, replacing: bool, source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "m.mlpackage"
    if replacing:
        _native.write_example(str(dest))
    before = tree(out)
    r = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, door, str(source), str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert r.stdout == "KeyboardInterrupt\n", (r.stdout, r.stderr)
    assert tree(out) == before
