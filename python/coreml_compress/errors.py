"""Exceptions raised by coreml-compress: one hierarchy rooted at CoreMLCompressError."""


class CoreMLCompressError(Exception):
    """Base class of every error coreml-compress raises on purpose."""


class PackageIOError(CoreMLCompressError, OSError):
    """A file of the package could not be read or written."""


class MalformedPackageError(CoreMLCompressError):
    """The package, its manifest, its model file or its weights are malformed."""


class UnsupportedModelError(CoreMLCompressError, ValueError):
    """A well-formed model that this version does not handle (e.g. a NeuralNetwork model)."""


class CompressionConfigError(CoreMLCompressError, ValueError):
    """A compression configuration that is invalid, or invalid for this model."""


class InternalError(CoreMLCompressError):
    """A defect of coreml-compress itself (the engine panicked); please report it with the input."""


__all__ = [
    "CompressionConfigError",
    "CoreMLCompressError",
    "InternalError",
    "MalformedPackageError",
    "PackageIOError",
    "UnsupportedModelError",
]
