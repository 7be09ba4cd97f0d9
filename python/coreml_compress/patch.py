"""Drop-in acceleration of existing coremltools scripts.

After ``coreml_compress.patch_coremltools()``, ``coremltools.optimize.coreml.palettize_weights``,
``linear_quantize_weights``, ``prune_weights`` and ``decompress_weights`` run on this engine and
return coremltools ``MLModel`` objects as before, joint compression included.
``unpatch_coremltools()`` restores the originals. A model the engine does not take (no ML Program
package behind the MLModel, e.g. a NeuralNetwork model) goes to coremltools' own function, and a
warning says so, once.

``patch_coremltools(torch=True)`` also routes ``coremltools.optimize.torch``'s
``DKMPalettizer``, ``PostTrainingPalettizer``, ``SKMPalettizer``, ``LinearQuantizer``,
``PostTrainingQuantizer``, ``MagnitudePruner`` and ``layerwise_compression.LayerwiseCompressor``
to ``coreml_compress.torch`` (see :mod:`coreml_compress.torch.patch`).
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import optimize
from .errors import UnsupportedModelError

__all__ = ["is_patched", "patch_coremltools", "unpatch_coremltools"]

_NAMES = ("palettize_weights", "linear_quantize_weights", "prune_weights", "decompress_weights")
# coremltools releases (major, minor) whose private modules the patch is tested against
# (pyproject.toml's `coremltools` extra; README, "Wheels and platforms").
SUPPORTED_COREMLTOOLS = ((8, 3), (9, 0))
_originals: dict[str, Callable[..., Any]] = {}
_handed_over: list[str] = []  # the first call handed to coremltools, to warn once


def _engine_or_original(name: str, ours: Callable[[], Any], original: Callable[[], Any]) -> Any:
    """``ours()``; when the engine does not take the model, ``original()`` with a warning (the
    first time) that says which call went to coremltools and why."""
    try:
        return ours()
    except UnsupportedModelError as e:
        if not _handed_over:
            _handed_over.append(name)
            warnings.warn(
                f"coreml_compress: {name} ran on coremltools' own code, not on the engine ({e}); "
                "further calls the engine does not take go there without a warning",
                RuntimeWarning,
                stacklevel=4,
            )
        return original()


def _modules() -> list[Any]:
    import coremltools.optimize.coreml as public
    from coremltools.optimize.coreml import _post_training_quantization as impl

    return [public, impl]


def _accelerated(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    ours = getattr(optimize, name)

    if name == "decompress_weights":

        @functools.wraps(original)
        def decompress(mlmodel: Any) -> Any:
            return _engine_or_original(name, lambda: ours(mlmodel), lambda: original(mlmodel))

        return decompress

    @functools.wraps(original)
    def compress(mlmodel: Any, config: Any = None, joint_compression: bool = False) -> Any:
        return _engine_or_original(
            name,
            lambda: ours(mlmodel, config, joint_compression),
            lambda: original(mlmodel, config, joint_compression=joint_compression),
        )

    return compress


def patch_coremltools(torch: bool = False) -> None:
    """Route coremltools' post-training compression functions to this engine (idempotent).

    ``coremltools.optimize.coreml.palettize_weights``, ``linear_quantize_weights``,
    ``prune_weights`` (``joint_compression=True`` included) and ``decompress_weights`` then run
    on this engine and return MLModels, as before. A model the engine does not take goes to
    coremltools' own function, with a ``RuntimeWarning`` the first time.

    With ``torch=True`` (needs PyTorch) the ``coremltools.optimize.torch`` classes
    ``DKMPalettizer``, ``PostTrainingPalettizer``, ``SKMPalettizer``, ``LinearQuantizer``,
    ``PostTrainingQuantizer``, ``MagnitudePruner`` and ``LayerwiseCompressor`` are routed too:
    constructing one gives ``coreml_compress.torch``'s implementation, reading coremltools'
    config (object, dict or YAML) as coremltools does; a config option or module type the
    implementation does not do gets one ``RuntimeWarning`` naming it and coremltools' own class.

    Parameters
    ----------
    torch : bool
        Also route the ``coremltools.optimize.torch`` classes (default ``False``).

    Raises
    ------
    ImportError
        coremltools (or, with ``torch=True``, PyTorch) is not installed.

    Example
    -------
    >>> import coreml_compress, coremltools.optimize.coreml as cto
    >>> coreml_compress.patch_coremltools()
    >>> small = cto.palettize_weights(mlmodel, cto.OptimizationConfig(
    ...     global_config=cto.OpPalettizerConfig(nbits=4)))    # runs on the engine
    >>> coreml_compress.patch_coremltools(torch=True)       # and coremltools.optimize.torch
    >>> from coremltools.optimize.torch.palettization import DKMPalettizer   # the engine's
    """
    if torch:
        from .torch import patch as torch_patch

        torch_patch.patch()
    if _originals:
        return
    public, impl = _modules()
    _warn_if_untested(sys.modules["coremltools"].__version__)
    for name in _NAMES:
        original = getattr(public, name)
        _originals[name] = original
        replacement = _accelerated(name, original)
        for module in (public, impl):
            if hasattr(module, name):
                setattr(module, name, replacement)


def _warn_if_untested(version: str) -> None:
    """A ``RuntimeWarning`` when ``version`` is not a coremltools release the patch is tested
    with: its private modules may have moved."""
    release = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if release not in SUPPORTED_COREMLTOOLS:
        tested = ", ".join(f"{a}.{b}" for a, b in SUPPORTED_COREMLTOOLS)
        warnings.warn(
            f"coreml_compress: patch_coremltools() is tested with coremltools {tested}, "
            f"not {version}",
            RuntimeWarning,
            stacklevel=3,
        )


def unpatch_coremltools() -> None:
    """Restore coremltools' own functions and classes (a no-op when they are not patched).

    Example
    -------
    >>> coreml_compress.unpatch_coremltools()
    """
    _handed_over.clear()
    torch_patch = sys.modules.get("coreml_compress.torch.patch")
    if torch_patch is not None:
        torch_patch.unpatch()
    if not _originals:
        return
    for module in _modules():
        for name, original in _originals.items():
            if hasattr(module, name):
                setattr(module, name, original)
    _originals.clear()


def is_patched() -> bool:
    """Whether coremltools' functions currently run on this engine.

    Returns
    -------
    bool
        True between :func:`patch_coremltools` and :func:`unpatch_coremltools`.

    Example
    -------
    >>> coreml_compress.patch.is_patched()
    False
    """
    return bool(_originals)
