"""coreml-compress: fast, bounded-memory weight compression for Core ML ML Program packages.

The engine is Rust (``coreml_compress._native``); this package is a thin, coremltools-compatible
front: ``coreml_compress.optimize`` mirrors ``coremltools.optimize.coreml``.
"""


from . import optimize
from .errors import (
    CompressionConfigError,
    CoreMLCompressError,
    MalformedPackageError,
    PackageIOError,
    UnsupportedModelError,
)
from .inspect import inspect

__version__ = "0.1.0"

__all__ = [
    "CompressionConfigError",
    "CoreMLCompressError",
    "MalformedPackageError",
    "PackageIOError",
    "UnsupportedModelError",
    "inspect",
    "optimize",
]
