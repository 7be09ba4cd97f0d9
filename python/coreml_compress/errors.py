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


class SkippedWeightsWarning(UserWarning):
    """Weights the config asked to compress were left as they were (a group or block size that
    does not divide the channels, an unsupported dtype or op for the mode, NaN or infinite
    values, ...). Issued once per call; ``skipped`` holds one dict per weight (function, name,
    shape, reason, message, and step for recipes)."""

    def __init__(self, message: str, skipped: list[dict] | None = None) -> None:
        super().__init__(message)
        self.skipped = list(skipped or [])


__all__ = [
    "CompressionConfigError",
    "CoreMLCompressError",
    "MalformedPackageError",
    "PackageIOError",
    "SkippedWeightsWarning",
    "UnsupportedModelError",
]
