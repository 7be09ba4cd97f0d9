"""Zero-copy views between CPU torch tensors / numpy arrays and the native kernels, and moving
calibration items to a device."""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is optional for the functional kernels
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None  # type: ignore[assignment]


def as_f32(x: Any, what: str = "array") -> np.ndarray:
    """A C-contiguous float32 numpy view of ``x`` (copied only when dtype, device or layout
    require it: a contiguous float32 CPU tensor or array is shared, not copied)."""
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype != torch.float32:
            t = t.float()
        if not t.is_contiguous():
            t = t.contiguous()
        return t.numpy()
    a = np.asarray(x)
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)
    return a


def to_device(item: Any, device: Any) -> Any:
    """A calibration item (a tensor, or tuples, lists and dicts of them) on ``device``; other
    values as they are."""
    if torch.is_tensor(item):
        return item.to(device)
    if isinstance(item, (list, tuple)):
        return type(item)(to_device(v, device) for v in item)
    if isinstance(item, dict):
        return {k: to_device(v, device) for k, v in item.items()}
    return item
