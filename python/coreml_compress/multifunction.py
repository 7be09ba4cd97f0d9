"""Multifunction packages: coremltools' ``MultiFunctionDescriptor`` / ``save_multifunction``,
merged by the Rust engine directly on the protobuf and the weight files, and
:func:`extract_function` to take one function back out.

What differs from ``coremltools.utils.save_multifunction`` (everything else follows it: function
order, ``FunctionDescription`` per function with its inputs, outputs and states, the default
function, a specification version of at least 9 / iOS18, errors and their messages):

- **Sharing by content.** Every weight blob of every input is hashed (blake3) and, on a match,
  compared byte for byte; equal blobs are written once. Compressed parts (palettization indices
  and LUTs, quantized data, scales, offsets, sparsity masks) are blobs like any other, so
  adapters compressed separately from one base share the compressed base. coremltools shares
  only equal ``const`` ops, which misses the parameters of iOS16/17 ``constexpr_*`` ops.
- **Ops keep their form.** No tensor is decoded and no op is rewritten: each function is copied
  with its own opset label (``CoreML6`` for an iOS16 function, ``CoreML8`` for iOS18, ...), so
  iOS16/17 palettized or pruned models merge too (coremltools fails on them).
- **Metadata.** coremltools drops the model metadata (author, license, version, user-defined
  keys) and the program's ``buildInfo``; coreml-compress keeps those of the package of the first
  function.
- **Bounded memory.** Blobs are streamed one at a time; memory does not grow with the number or
  size of the inputs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _native
from ._interop import ModelLike, package_path
from .errors import CoreMLCompressError, UnsupportedModelError

__all__ = [
    "MergeReport",
    "MultiFunctionDescriptor",
    "extract_function",
    "function_names",
    "save_multifunction",
]

if TYPE_CHECKING:
    import coremltools.utils

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MergeReport:
    """What :func:`save_multifunction` or :func:`extract_function` wrote."""

    path: Path
    #: Functions in the written package.
    functions: int
    #: Weight blobs the functions use, each counted once per function that uses it.
    blob_references: int
    #: Distinct blobs written.
    blobs_written: int
    #: Size of the written ``weight.bin`` (0 when no weight needs one).
    weight_file_bytes: int
    #: Size the weight files would take with every function saved as its own package.
    separate_bytes: int
    #: ``separate_bytes - weight_file_bytes``: what sharing saved.
    saved_bytes: int

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> MergeReport:
        return cls(**{**d, "path": Path(d["path"])})


def function_names(model_path: ModelLike) -> list[str]:
    """The functions of a package as coremltools lists them.

    Parameters
    ----------
    model_path : str, os.PathLike or coremltools.models.MLModel
        The package.

    Returns
    -------
    list of str
        ``description.functions`` of a multifunction package, ``["main"]`` otherwise.

    Raises
    ------
    coreml_compress.errors.CoreMLCompressError
        A malformed, unsupported or unreadable package.

    Example
    -------
    >>> function_names("merged.mlpackage")
    ['main', 'adapter']
    """
    return list(_native.function_names(str(package_path(model_path))))


class MultiFunctionDescriptor:
    """Which function of which package goes into a multifunction package, under which name.

    The same class as ``coremltools.utils.MultiFunctionDescriptor``: ``add_function``,
    ``add_model``, ``remove_function`` and ``default_function_name`` behave (and fail) alike.
    Paths may also be coremltools ``MLModel`` objects backed by a package.
    """

    def __init__(self, model_path: ModelLike | None = None):
        self._default_function_name: str | None = None
        # target name -> (model path, source function name), in insertion order
        self._name_to_source_function: dict[str, tuple[str, str]] = {}
        self._modelpath_to_functions: dict[str, list[str]] = {}
        if model_path is not None:
            self.add_model(model_path)

    def _functions(self) -> dict[str, tuple[str, str]]:
        return copy.copy(self._name_to_source_function)

    def _add_modelpath_to_cache(self, model_path: ModelLike) -> str:
        path = str(package_path(model_path))
        if path not in self._modelpath_to_functions:
            try:
                self._modelpath_to_functions[path] = function_names(path)
            except CoreMLCompressError as err:
                raise UnsupportedModelError(
                    f"invalid model_path {path} with error {err} while loading."
                ) from err
        return path

    @property
    def default_function_name(self) -> str | None:
        return self._default_function_name

    @default_function_name.setter
    def default_function_name(self, val: str) -> None:
        if not isinstance(val, str):
            raise ValueError(f"default_function_name must be type of str. Got {val}.")  # noqa: TRY004
        self._default_function_name = val

    def add_function(
        self, model_path: ModelLike, src_function_name: str, target_function_name: str
    ) -> None:
        """Add one function of a package under a (new) name.

        Parameters
        ----------
        model_path : str, os.PathLike or coremltools.models.MLModel
            The package that holds the function.
        src_function_name : str
            The function's name in that package (``"main"`` for a single-function package).
        target_function_name : str
            Its name in the multifunction package.

        Raises
        ------
        ValueError
            The function is not in the package, or the target name is taken.
        coreml_compress.errors.UnsupportedModelError
            The package cannot be read.

        Example
        -------
        >>> desc.add_function("adapter.mlpackage", "main", "adapter")
        """
        path = self._add_modelpath_to_cache(model_path)
        if src_function_name not in self._modelpath_to_functions[path]:
            raise ValueError(f"src_function_name {src_function_name} not found in {path}.")
        if target_function_name in self._name_to_source_function:
            raise ValueError(f"function {target_function_name} already exist.")
        self._name_to_source_function[target_function_name] = (path, src_function_name)

    def add_model(self, model_path: ModelLike) -> None:
        """Add every function of a package under its own name.

        Parameters
        ----------
        model_path : str, os.PathLike or coremltools.models.MLModel
            The package.

        Raises
        ------
        ValueError
            One of its names is taken already.
        coreml_compress.errors.UnsupportedModelError
            The package cannot be read.

        Example
        -------
        >>> desc.add_model("base.mlpackage")
        """
        path = self._add_modelpath_to_cache(model_path)
        for name in self._modelpath_to_functions[path]:
            self.add_function(path, name, name)

    def remove_function(self, function_name: str) -> None:
        """Remove a function from the descriptor.

        Parameters
        ----------
        function_name : str
            Its name in the multifunction package.

        Raises
        ------
        ValueError
            No function has that name.

        Example
        -------
        >>> desc.remove_function("adapter")
        """
        if function_name not in self._name_to_source_function:
            raise ValueError(f"function_name {function_name} not found.")
        del self._name_to_source_function[function_name]

    def __repr__(self) -> str:
        items = ", ".join(
            f"{t}={Path(p).name}:{s}" for t, (p, s) in self._name_to_source_function.items()
        )
        return f"MultiFunctionDescriptor({items}; default={self._default_function_name!r})"


def save_multifunction(
    desc: MultiFunctionDescriptor | coremltools.utils.MultiFunctionDescriptor,
    destination_path: str | os.PathLike,
    *,
    progress: Progress | None = None,
) -> MergeReport:
    """Save the functions of a descriptor as one multifunction package.

    Weights equal in content are stored once, whichever input they come from.

    Parameters
    ----------
    desc : MultiFunctionDescriptor or coremltools.utils.MultiFunctionDescriptor
        Which function of which package goes in, under which name, and the default function.
    destination_path : str or os.PathLike
        The package to write.
    progress : callable(done, total), optional
        Called as blobs are written.

    Returns
    -------
    MergeReport
        What was written: functions, blobs written and referenced, weight.bin size, and what
        sharing saved (coremltools returns None).

    Raises
    ------
    ValueError
        No default function is set, or a function name is unknown.
    coreml_compress.errors.CoreMLCompressError
        A malformed, unsupported or unreadable input, or an output that cannot be written.

    Example
    -------
    >>> desc = MultiFunctionDescriptor()
    >>> desc.add_function("base.mlpackage", "main", "main")
    >>> desc.add_function("adapter.mlpackage", "main", "adapter")
    >>> desc.default_function_name = "main"
    >>> save_multifunction(desc, "merged.mlpackage").saved_bytes
    3774873
    """
    default = desc.default_function_name
    if default is None:
        raise ValueError(
            "default_function_name must be set for the MultiFunctionDescriptor instance before "
            "calling save_multifunction."
        )
    functions = [(str(path), src, target) for target, (path, src) in desc._functions().items()]
    stats = _native.merge(functions, default, str(destination_path), progress)
    return MergeReport._from_native(stats)


def extract_function(
    model_path: ModelLike, function_name: str, destination_path: str | os.PathLike
) -> MergeReport:
    """Write one function of a package as a single-function package holding only the weights
    it uses.

    Its specification version follows the function's opset (an iOS16 function merged into an
    iOS18 package comes back as iOS16); metadata is kept.

    Parameters
    ----------
    model_path : str, os.PathLike or coremltools.models.MLModel
        The (multifunction) package to read.
    function_name : str
        The function to take out.
    destination_path : str or os.PathLike
        The package to write.

    Returns
    -------
    MergeReport
        What was written (one function, its blobs, the weight.bin size).

    Raises
    ------
    coreml_compress.errors.CoreMLCompressError
        An unknown function, a malformed, unsupported or unreadable input, or an output that
        cannot be written.

    Example
    -------
    >>> extract_function("merged.mlpackage", "adapter", "adapter.mlpackage").path
    PosixPath('adapter.mlpackage')
    """
    stats = _native.extract_function(
        str(package_path(model_path)), function_name, str(destination_path)
    )
    return MergeReport._from_native(stats)
