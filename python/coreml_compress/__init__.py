"""coreml-compress: fast, bounded-memory weight compression for Core ML ML Program packages.

The engine is Rust (``coreml_compress._native``); this package is a thin, coremltools-compatible
front: ``coreml_compress.optimize`` mirrors ``coremltools.optimize.coreml``.
"""

import importlib
from typing import Any

from . import optimize
from .errors import (
    CompressionConfigError,
    CoreMLCompressError,
    InternalError,
    MalformedPackageError,
    PackageIOError,
    UnsupportedModelError,
)
from .inspect import inspect
from .multifunction import (
    MergeReport,
    MultiFunctionDescriptor,
    extract_function,
    save_multifunction,
)
from .patch import patch_coremltools, unpatch_coremltools

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `kernels` (the numpy API) loads numpy; it is imported on first use, so that path-based
    # passes and the CLI start without numpy (and its BLAS threads).
    if name == "kernels":
        return importlib.import_module(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CompressionConfigError",
    "CoreMLCompressError",
    "InternalError",
    "MalformedPackageError",
    "MergeReport",
    "MultiFunctionDescriptor",
    "PackageIOError",
    "UnsupportedModelError",
    "extract_function",
    "inspect",
    "kernels",
    "optimize",
    "patch_coremltools",
    "save_multifunction",
    "unpatch_coremltools",
]
