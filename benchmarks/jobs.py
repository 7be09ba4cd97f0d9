"""Benchmark jobs: each runs in a fresh process started by ``harness.py``.

A job is ``fn(out_dir, **kwargs) -> dict`` returning ``op_s`` (seconds spent in the public API
calls: load, compress, write) and ``output`` (the written package, measured by the harness).
Imports happen before the clock starts, so ``op_s`` excludes Python and library import time;
the harness's wall time includes it.

coremltools side: ``ct.models.MLModel(path, skip_model_load=True)``, the
``coremltools.optimize.coreml`` / ``coremltools.utils`` call, then ``.save(out)``.

Our side: ``coreml_compress`` public API with paths in and ``output_path`` out. These jobs run
with ``import coremltools`` blocked (the engine needs only numpy, PyYAML and attrs; without
coremltools paths go in and paths come out), so configs are ``coreml_compress.config``'s
classes, which have coremltools' fields. Paths give paths whether or not coremltools is
importable; an ``MLModel`` result (``return_mlmodel=True``) would cost the coremltools import
(see the "import" row).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

_CONFIG_CLASS = {
    "palettize_weights": "OpPalettizerConfig",
    "linear_quantize_weights": "OpLinearQuantizerConfig",
    "prune_weights": "OpMagnitudePrunerConfig",
}


def _config(module: Any, kind: str, op: dict[str, Any] | None) -> Any:
    if kind not in _CONFIG_CLASS:
        return None
    op = dict(op or {})
    if isinstance(op.get("n_m_ratio"), list):
        op["n_m_ratio"] = tuple(op["n_m_ratio"])
    cls = getattr(module, _CONFIG_CLASS[kind])
    return module.OptimizationConfig(global_config=cls(**op))


def _quiet_coremltools() -> None:
    logging.getLogger("coremltools").setLevel(logging.ERROR)


# --- import cost -------------------------------------------------------------------------------


def import_coremltools(out_dir: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    import coremltools.optimize.coreml  # noqa: F401

    return {"op_s": time.perf_counter() - t0}


def import_ours(out_dir: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    import coreml_compress.optimize  # noqa: F401

    return {"op_s": time.perf_counter() - t0}


# --- single-model passes -------------------------------------------------------------------------


def ct_run(out_dir: str, src: str, kind: str, op: dict[str, Any] | None = None) -> dict[str, Any]:
    """coremltools: load, ``kind`` (or decompress / round trip), save.

    ``kind="roundtrip"``: ``linear_quantize_weights(model, OptimizationConfig())``, which
    compresses nothing but runs coremltools' whole path (milproto -> pymil, default pipeline,
    export of every weight to a new package); ``.save()`` alone only copies the directory.
    """
    _quiet_coremltools()
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    config = _config(cto, kind, op)
    dst = str(Path(out_dir) / "out.mlpackage")
    t0 = time.perf_counter()
    model = ct.models.MLModel(src, skip_model_load=True)
    if kind == "decompress_weights":
        result = cto.decompress_weights(model)
    elif kind == "roundtrip":
        result = cto.linear_quantize_weights(model, cto.OptimizationConfig())
    else:
        result = getattr(cto, kind)(model, config)
    result.save(dst)
    op_s = time.perf_counter() - t0
    return {"op_s": op_s, "output": dst}


def ours_run(
    out_dir: str, src: str, kind: str, op: dict[str, Any] | None = None, cold: bool = False
) -> dict[str, Any]:
    """coreml-compress: the same call with a path in and ``output_path`` out.

    ``kind="roundtrip"``: ``coreml_compress._native.save_unchanged(src, dst)`` (parse the
    package, re-serialize the protobuf, copy every used blob into a new weight.bin).
    ``cold``: first evict the input package's files from the page cache, so the run reads them
    from disk.
    """
    from coreml_compress import _native, optimize
    from coreml_compress import config as cfg

    config = _config(cfg, kind, op)
    dst = str(Path(out_dir) / "out.mlpackage")
    if cold:
        _evict_from_page_cache(Path(src))
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if kind == "decompress_weights":
        optimize.decompress_weights(src, output_path=dst)
    elif kind == "roundtrip":
        _native.save_unchanged(src, dst)
    else:
        _, report = getattr(optimize, kind)(src, config, output_path=dst, with_report=True)
        extra["compressed_weights"] = len(report)
    op_s = time.perf_counter() - t0
    return {"op_s": op_s, "output": dst, **extra}


def _evict_from_page_cache(package: Path) -> None:
    """Drop ``package``'s files from the page cache (their pages are clean: nothing is lost)."""
    for f in package.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --- multifunction merge -------------------------------------------------------------------------


def ct_merge(out_dir: str, functions: list[list[str]], default: str) -> dict[str, Any]:
    """coremltools.utils.MultiFunctionDescriptor + save_multifunction."""
    _quiet_coremltools()
    import coremltools as ct

    dst = str(Path(out_dir) / "merged.mlpackage")
    t0 = time.perf_counter()
    desc = ct.utils.MultiFunctionDescriptor()
    for path, src, target in functions:
        desc.add_function(path, src, target)
    desc.default_function_name = default
    ct.utils.save_multifunction(desc, dst)
    return {"op_s": time.perf_counter() - t0, "output": dst}


def ours_merge(out_dir: str, functions: list[list[str]], default: str) -> dict[str, Any]:
    """coreml_compress.MultiFunctionDescriptor + save_multifunction (same semantics)."""
    import coreml_compress as cc

    dst = str(Path(out_dir) / "merged.mlpackage")
    t0 = time.perf_counter()
    desc = cc.MultiFunctionDescriptor()
    for path, src, target in functions:
        desc.add_function(path, src, target)
    desc.default_function_name = default
    report = cc.save_multifunction(desc, dst)
    op_s = time.perf_counter() - t0
    info = {k: v for k, v in vars(report).items() if isinstance(v, (int, float, str))}
    return {"op_s": op_s, "output": dst, "report": info}
