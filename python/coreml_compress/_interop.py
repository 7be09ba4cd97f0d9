"""Models in and out. Every entry point takes a package path or a coremltools MLModel; what it
returns has the input's kind: a path for a path (coremltools is never imported), an MLModel for
an MLModel (coremltools is then already imported). ``return_mlmodel=True`` asks for an MLModel
from a path."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import UnsupportedModelError

if TYPE_CHECKING:
    from coremltools.models import MLModel

# The input of every entry point: a .mlpackage path, or a coremltools MLModel.
ModelLike = Union[str, os.PathLike, "MLModel"]
# What a pass returns: the written package's path, or an MLModel over it.
ModelResult = Union[Path, "MLModel"]


def is_mlmodel(obj: Any) -> bool:
    # An MLModel exists only once coremltools is imported: never import it to find out.
    ct = sys.modules.get("coremltools")
    return ct is not None and isinstance(obj, ct.models.MLModel)


def package_path(model: ModelLike) -> Path:
    """The .mlpackage directory behind a path or an MLModel."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model)
    if is_mlmodel(model):
        path = getattr(model, "package_path", None)
        if not path:
            raise UnsupportedModelError(
                "this MLModel has no .mlpackage behind it; only ML Program models are supported"
            )
        return Path(path)
    raise TypeError(
        f"expected a .mlpackage path or a coremltools MLModel, got {type(model).__name__}"
    )


def temp_package_path(stem: str = "model") -> Path:
    """A fresh destination for an output package that the caller did not place, in a new
    ``coreml_compress_*`` directory of the system temp folder."""
    return Path(tempfile.mkdtemp(prefix="coreml_compress_")) / f"{stem}.mlpackage"


def wrap_output(
    path: Path, source: ModelLike, temporary: bool, return_mlmodel: bool
) -> ModelResult:
    """The written package as the caller asked: an MLModel when the source was one or
    ``return_mlmodel`` is set, else its path. A temporary package handed out as an MLModel is
    removed at exit with its directory, as coremltools removes its own temporary packages."""
    if not (return_mlmodel or is_mlmodel(source)):
        return path
    import coremltools as ct  # raises ImportError when return_mlmodel=True without coremltools

    skip_load = True
    compute_units = None
    if is_mlmodel(source):
        skip_load = getattr(source, "__proxy__", None) is None
        compute_units = getattr(source, "compute_unit", None)
    kwargs: dict[str, Any] = {"skip_model_load": skip_load, "is_temp_package": temporary}
    if compute_units is not None:
        kwargs["compute_units"] = compute_units
    if temporary:
        atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
    return ct.models.MLModel(str(path), **kwargs)
