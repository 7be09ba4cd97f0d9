"""Helpers around ``torch.nn.utils.parametrize`` for the training-time compressors."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize


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
