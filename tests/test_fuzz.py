"""A short, deterministic run of the package fuzzer (fuzz/fuzz_packages.py): mutated packages
through every public call in child processes with memory and time limits. Any outcome other than
a normal return (whose output our own ``inspect`` accepts) or a ``CoreMLCompressError`` fails."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

import fuzz_packages


def test_mutated_packages_give_results_or_clean_errors() -> None:
    summary = fuzz_packages.fuzz(seconds=600, seed=16, out=None, max_mutants=150)
    assert summary["mutants"] == 150
    assert summary["bad"] == [], summary["bad"]
    # The run exercises both sides: some mutants still compress, most are refused.
    assert summary["outcomes"].get("ok", 0) > 0
    assert summary["outcomes"].get("error", 0) > 0


def test_the_classifier_sees_a_crash(tmp_path: Path) -> None:
    # A call that kills its child is reported as a crash, and the calls after it still run.
    pkg = tmp_path / "p.mlpackage"
    pkg.mkdir()
    results = fuzz_packages.run_calls(
        pkg, ["abort", "inspect"], tmp_path, timeout=20, memory=4 << 30
    )
    assert [(r["call"], r["verdict"]) for r in results] == [
        ("abort", "crash"),
        ("inspect", "error"),
    ]
