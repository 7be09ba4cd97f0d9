"""coreml-compress: fast, bounded-memory weight compression for Core ML ML Program packages.

The engine is Rust (``coreml_compress._native``); this package is a thin, coremltools-compatible
front: ``coreml_compress.optimize`` mirrors ``coremltools.optimize.coreml``
(``palettize_weights``, ``linear_quantize_weights``, ``prune_weights``, ``decompress_weights``,
and ``apply_recipe`` for several steps in one pass), :func:`inspect` lists a package's weights,
:func:`save_multifunction` / :func:`extract_function` merge and split multifunction packages,
:func:`patch_coremltools` makes coremltools' own functions run here, and ``kernels`` holds the
numpy kernels. A path in gives a path out (coremltools is not imported); an MLModel in gives an
MLModel out. Errors derive from :class:`CoreMLCompressError`.

Example
-------
>>> import coreml_compress as cc
>>> cc.optimize.palettize_weights("model.mlpackage", cc.optimize.OpPalettizerConfig(nbits=4),
...                               output_path="model.4bit.mlpackage")
PosixPath('model.4bit.mlpackage')
>>> cc.inspect("model.4bit.mlpackage")          # a table; .to_dict() for pandas
"""

import importlib
from types import ModuleType

from . import optimize
from .errors import (
    CompressionConfigError,
    ConfigError,
    CoreMLCompressError,
    InternalError,
    MalformedPackageError,
    OutputPathError,
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


def __getattr__(name: str) -> ModuleType:
    # `kernels` (the numpy API) loads numpy; it is imported on first use, so that path-based
    # passes and the CLI start without numpy (and its BLAS threads).
    if name == "kernels":
        return importlib.import_module(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # dir() and help() show the public API (help() lists what dir() gives), not the module's
    # machinery (__getattr__, __dir__) or its submodules' names.
    return sorted([*__all__, "__version__"])


__all__ = [
    "CompressionConfigError",
    "ConfigError",
    "CoreMLCompressError",
    "InternalError",
    "MalformedPackageError",
    "MergeReport",
    "MultiFunctionDescriptor",
    "OutputPathError",
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
