"""Shared fixtures: packages built with coremltools' MIL builder (tests/models.py), cached for the
session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _disable_numpys_avx512_icl_sort() -> None:
    """numpy 2.4.6's float16 sort is wrong on AVX512_ICL CPUs (docs/DECISIONS.md), and the oracle
    (coremltools' unique mode, get_weights_metadata) counts with np.unique: turn that path off
    before numpy is imported, where the CPU has it. .ci/run sets the same variable."""
    if "NPY_DISABLE_CPU_FEATURES" in os.environ:
        return
    if "numpy" in sys.modules:  # too late to disable: refuse only where it matters
        from numpy._core._multiarray_umath import __cpu_features__

        if __cpu_features__.get("AVX512_ICL"):
            raise RuntimeError(
                "numpy was imported before tests/conftest.py; run the suite with "
                "NPY_DISABLE_CPU_FEATURES=AVX512_ICL on this CPU"
            )
        return
    probe = "from numpy._core._multiarray_umath import __cpu_features__ as f; print(f.get(%r))"
    run = subprocess.run(
        [sys.executable, "-c", probe % "AVX512_ICL"], check=False, capture_output=True, text=True
    )
    if run.stdout.strip() == "True":
        os.environ["NPY_DISABLE_CPU_FEATURES"] = "AVX512_ICL"


_disable_numpys_avx512_icl_sort()

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oracle")
