"""tests/distinct.py against a set-based count, where numpy's float16 sort is right and where it
is not (numpy 2.4.6 with AVX512_ICL: docs/DECISIONS.md), and a guard that the suites use it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The reproducer from the issue: 16 fp16 levels repeated over sizes around numpy's SIMD-sort
# threshold; the helper must agree with a set-based count whatever numpy's sort does.
CHECK = r"""
import collections, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from distinct import distinct, distinct_count, sorted_values

rng = np.random.default_rng(1)
lut = np.sort(rng.standard_normal(16).astype(np.float16) * 0.1)
numpy_wrong = False
for n in (1000, 16384, 20000, 32768, 65536, 200000):
    a = lut[rng.integers(0, 16, n)]
    a[:3] = [np.float16(0.0), np.float16(-0.0), np.float16("nan")]
    expected = collections.Counter(float(v) for v in a.tolist() if v == v)
    values, counts = distinct(a, return_counts=True)
    assert values.dtype == np.float16
    assert np.isnan(values[-1]) and counts[-1] == 1, n
    assert {float(v): int(c) for v, c in zip(values[:-1], counts[:-1])} == expected, n
    assert distinct_count(a) == len(expected) + 1, n
    s = sorted_values(a)
    assert s.dtype == np.float16 and (s[1:-1] >= s[:-2]).all() and np.isnan(s[-1]), n
    numpy_wrong |= len(np.unique(a[3:])) != len(set(a[3:].tolist()))
print(json.dumps({"numpy_fp16_sort_wrong": bool(numpy_wrong)}))
"""


def _numpy_has(feature: str) -> bool:
    probe = (
        "from numpy._core._multiarray_umath import __cpu_features__ as f;"
        f"print(bool(f.get({feature!r})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=False, capture_output=True, text=True
    )
    return out.stdout.strip() == "True"


@pytest.mark.parametrize("disable_icl", [False, True], ids=["numpy-default", "AVX512_ICL-off"])
def test_distinct_matches_set_count(disable_icl: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    if disable_icl:
        if not _numpy_has("AVX512_ICL"):
            pytest.skip("this CPU has no AVX512_ICL: numpy's default run above is the same run")
        env["NPY_DISABLE_CPU_FEATURES"] = "AVX512_ICL"
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(ROOT / "tests")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "numpy_fp16_sort_wrong" in run.stdout


def test_oracle_runs_without_the_avx512_icl_sort() -> None:
    """conftest.py disables numpy's AVX512_ICL sort for the suite (coremltools' unique mode and
    get_weights_metadata count with np.unique), where the CPU has it."""
    if _numpy_has("AVX512_ICL"):
        assert "AVX512_ICL" in os.environ.get("NPY_DISABLE_CPU_FEATURES", "")
        from numpy._core._multiarray_umath import __cpu_features__

        assert not __cpu_features__.get("AVX512_ICL")


SORTING = {"unique", "sort", "argsort", "partition", "argpartition", "lexsort"}


def _sorting_calls(path: Path) -> list[str]:
    """numpy sorting calls (np.unique, np.sort, ...) without kind="stable" in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in {"np", "numpy"}):
            continue
        if node.func.attr not in SORTING:
            continue
        stable = any(
            k.arg == "kind" and isinstance(k.value, ast.Constant) and k.value.value == "stable"
            for k in node.keywords
        )
        if not stable:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: np.{node.func.attr}")
    return found


def test_no_numpy_default_sort_outside_the_helper() -> None:
    """Distinct values go through tests/distinct.py; any other numpy sort states kind="stable"."""
    files = [
        p
        for folder in ("tests", "benchmarks", "python")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.name != "distinct.py"
    ]
    offenders = [hit for p in files for hit in _sorting_calls(p)]
    assert not offenders, "\n".join(offenders)
