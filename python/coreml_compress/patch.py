"""Drop-in acceleration of existing coremltools scripts.

After ``coreml_compress.patch_coremltools()``, ``coremltools.optimize.coreml.palettize_weights``,
``linear_quantize_weights``, ``prune_weights`` and ``decompress_weights`` run on this engine and
return coremltools ``MLModel`` objects as before. ``unpatch_coremltools()`` restores the originals.
Calls this engine does not take yet (``joint_compression=True``) go to the original functions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import optimize

__all__ = ["is_patched", "patch_coremltools", "unpatch_coremltools"]

_NAMES = ("palettize_weights", "linear_quantize_weights", "prune_weights", "decompress_weights")
_originals: dict[str, Callable[..., Any]] = {}


def _modules() -> list[Any]:
    import coremltools.optimize.coreml as public
    from coremltools.optimize.coreml import _post_training_quantization as impl

    return [public, impl]


def _accelerated(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    ours = getattr(optimize, name)

    if name == "decompress_weights":

        @functools.wraps(original)
        def decompress(mlmodel: Any) -> Any:
            return ours(mlmodel)

        return decompress

    @functools.wraps(original)
    def compress(mlmodel: Any, config: Any = None, joint_compression: bool = False) -> Any:
        if joint_compression:
            return original(mlmodel, config, joint_compression=joint_compression)
        return ours(mlmodel, config, joint_compression=False)

    return compress


def patch_coremltools() -> None:
    """Route coremltools' post-training compression functions to this engine (idempotent)."""
    if _originals:
        return
    public, impl = _modules()
    for name in _NAMES:
        original = getattr(public, name)
        _originals[name] = original
        replacement = _accelerated(name, original)
        for module in (public, impl):
            if hasattr(module, name):
                setattr(module, name, replacement)


def unpatch_coremltools() -> None:
    """Restore coremltools' own functions."""
    if not _originals:
        return
    for module in _modules():
        for name, original in _originals.items():
            if hasattr(module, name):
                setattr(module, name, original)
    _originals.clear()


def is_patched() -> bool:
    return bool(_originals)
