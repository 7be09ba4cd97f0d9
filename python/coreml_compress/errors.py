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


class OutputPathError(CoreMLCompressError, ValueError):
    """An output path that is refused: it is an input package, lies inside one or contains one,
    or something that is not a package is already there."""


__all__ = [
    "CompressionConfigError",
    "CoreMLCompressError",
    "MalformedPackageError",
    "OutputPathError",
    "PackageIOError",
    "UnsupportedModelError",
]
