"""Models in and out: every entry point takes a package path or a coremltools MLModel, and hands
back an MLModel where coremltools is installed (a path otherwise). coremltools stays optional."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import UnsupportedModelError

ModelLike = str | os.PathLike | Any


def coremltools_or_none() -> Any:
    try:
        import coremltools
    except ImportError:
        return None
    return coremltools


def is_mlmodel(obj: Any) -> bool:
    ct = coremltools_or_none()
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
    raise TypeError(f"expected a .mlpackage path or a coremltools MLModel, got {type(model).__name__}")


def temp_package_path(stem: str = "model") -> Path:
    """A fresh destination for an output package that the caller did not place."""
    return Path(tempfile.mkdtemp(prefix="coreml_compress_")) / f"{stem}.mlpackage"


def wrap_output(path: Path, source: ModelLike, temporary: bool) -> Any:
    """An MLModel over the written package when coremltools is available, else the path."""
    ct = coremltools_or_none()
    if ct is None:
        return path
    skip_load = True
    compute_units = None
    if is_mlmodel(source):
        skip_load = getattr(source, "__proxy__", None) is None
        compute_units = getattr(source, "compute_unit", None)
    kwargs: dict[str, Any] = {"skip_model_load": skip_load, "is_temp_package": temporary}
    if compute_units is not None:
        kwargs["compute_units"] = compute_units
    return ct.models.MLModel(str(path), **kwargs)
