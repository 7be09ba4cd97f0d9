"""Exceptions raised by coreml-compress: one hierarchy rooted at CoreMLCompressError.

Config and recipe mistakes (from a file, a dict or YAML) are :class:`ConfigError`\\ s that name
where the mistake is (file, step, key) and also derive from the exception type coremltools raises
for the same mistake, so ``except ValueError`` / ``except TypeError`` / ``except AttributeError``
written for coremltools still catches them. A field that does not structure (an unknown key, a
value of the wrong type or out of range) raises ``coreml_compress.config.ConfigFieldError``, a
``ConfigError`` that is also cattrs' ``ClassValidationError``, as in coremltools.
"""

from __future__ import annotations


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


class ConfigError(CompressionConfigError):
    """A mistake in a config or recipe given as a file, a dict or YAML.

    ``str()`` is the location (``where``: file, step, key, outermost first) and the reason.
    """

    where: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else ""

    def located(self, *where: str) -> ConfigError:
        """Prefix the location with ``where`` (outer context); returns ``self`` to re-raise."""
        self.where = (*where, *self.where)
        return self

    def __str__(self) -> str:
        return ": ".join([*self.where, self.reason])


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type where coremltools raises TypeError."""


class UnknownConfigTypeError(ConfigError, AttributeError):
    """A ``config_type`` that names no config class (coremltools raises AttributeError)."""


class ConfigFileError(ConfigError, OSError):
    """A config or recipe file that cannot be read."""


class SkippedWeightsWarning(UserWarning):
    """Weights the config asked to compress were left as they were (a group or block size that
    does not divide the channels, an unsupported dtype or op for the mode, NaN or infinite
    values, ...). Issued once per call; ``skipped`` holds one dict per weight (function, name,
    shape, reason, message, and step for recipes)."""

    def __init__(self, message: str, skipped: list[dict] | None = None) -> None:
        super().__init__(message)
        self.skipped = list(skipped or [])


class DeploymentWarning(UserWarning):
    """What was written will not run as intended on some compute unit: per_block linear
    quantization, which the Neural Engine does not run (``coreml_compress.lint`` has the rules
    and their sources). Issued once per call; ``weights`` holds one dict per weight (function,
    name, and step for recipes)."""

    def __init__(self, message: str, weights: list[dict] | None = None) -> None:
        super().__init__(message)
        self.weights = list(weights or [])


class OutputPathError(CoreMLCompressError, ValueError):
    """An output path that is refused: it is an input package, lies inside one or contains one,
    or something that is not a package is already there."""


class CheckpointError(CoreMLCompressError, RuntimeError):
    """A checkpoint (``state_dict``) that does not fit the model it is loaded into, such as one
    written by an earlier version with another layout (a RuntimeError, as torch's own
    ``load_state_dict`` mismatches)."""


class MissingDependencyError(CoreMLCompressError, ImportError):
    """An optional dependency that the asked feature needs is not installed (the message says
    which extra to install)."""


class InternalError(CoreMLCompressError):
    """A defect of coreml-compress itself (the engine panicked); please report it with the input."""


__all__ = [
    "CheckpointError",
    "CompressionConfigError",
    "ConfigError",
    "ConfigFileError",
    "ConfigTypeError",
    "CoreMLCompressError",
    "DeploymentWarning",
    "InternalError",
    "MalformedPackageError",
    "MissingDependencyError",
    "OutputPathError",
    "PackageIOError",
    "SkippedWeightsWarning",
    "UnknownConfigTypeError",
    "UnsupportedModelError",
]
