"""Helpers around ``torch.nn.utils.parametrize`` for the training-time compressors."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._metadata import register_metadata, register_metadata_version

Export = Callable[[nn.Module], "tuple[torch.Tensor, dict[str, Any]] | None"]


def remove(module: nn.Module, name: str, leave_parametrized: bool) -> None:
    """``parametrize.remove_parametrizations`` that is safe on a deep copy.

    A parametrized module's class is created once and shared by its deep copies, and torch's
    removal deletes the property from that class, which would break every other copy (e.g.
    the prepared model after ``finalize(inplace=False)``). The module gets a private copy of
    the class first.
    """
    cls = type(module)
    own = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, own)
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)


@torch.no_grad()
def finalize_weights(target: nn.Module, inplace: bool, export: Export) -> nn.Module:
    """The training-time compressors' ``finalize``: on ``target`` (or a deep copy unless
    ``inplace``), every module for which ``export(module)`` gives ``(dense weight, metadata
    fields)`` loses its weight parametrization, keeps ``dense`` as a plain weight and gets the
    ``_COREML_`` buffers; the root gets the metadata version and the model is put in eval
    mode."""
    out = target if inplace else copy.deepcopy(target)
    for module in list(out.modules()):
        exported = export(module)
        if exported is None:
            continue
        dense, fields = exported
        remove(module, "weight", leave_parametrized=False)
        module.weight.data = dense.to(module.weight.dtype)
        register_metadata(module, "weight", fields)
    register_metadata_version(out)
    return out.eval()
