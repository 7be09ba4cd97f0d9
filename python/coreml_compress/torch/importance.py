"""Per-input-channel importance from calibration data: the mean squared input activation of every
``nn.Linear`` and ``nn.Conv1d/2d/3d``, the diagonal of the layer Hessian GPTQ uses.

A weight's output error from a change ΔW over inputs X is ‖ΔW X‖²; keeping only the diagonal of
XXᵀ (what GPTQ's Hessian is, up to its factor 2/n) gives Σ_j imp_j · ‖ΔW[:, j]‖², with imp_j the
mean of x_j² over the calibration rows. ``coreml_compress.optimize.fit`` weighs each weight's
error with these vectors.

Rows, as GPTQ counts them (``torch/layerwise.py``): for a Linear every input vector (all leading
dimensions: batch, tokens); for a convolution every output position of every sample, over the
unfolded receptive field (zero padding included, as ``unfold`` gives it), so imp_c is the mean
of x_c² over the rows and the kernel's offsets: the average over kernel offsets of the diagonal
entries of channel c. The vector has ``in_channels`` entries; in a grouped convolution, column j
of the weight's axis 1 in group g reads input channel g · in_channels/groups + j.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._arrays import to_device

__all__ = ["collect_importance"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _squares_per_channel(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(Σ over rows of x_c², rows)`` of one input, in float64 (see the module docstring)."""
    x = x.detach().to(torch.float64)
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        return (rows * rows).sum(0), rows.shape[0]
    spatial = len(module.kernel_size)
    if x.dim() == spatial + 1:  # an unbatched input
        x = x.unsqueeze(0)
    squares = x * x
    padding = module.padding
    if module.padding_mode != "zeros":
        # What nn.Conv does for these modes: pad first, then convolve without padding.
        squares = nn.functional.pad(
            x, module._reversed_padding_repeated_twice, mode=module.padding_mode
        ).square()
        padding = 0
    channels = x.shape[1]
    ones = torch.ones((channels, 1, *module.kernel_size), dtype=torch.float64, device=x.device)
    conv = (nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[spatial - 1]
    # Each output position sums x² over its receptive field, per channel (a depthwise conv of
    # ones): the unfolded rows' squares, without materializing the unfold.
    window = conv(
        squares,
        ones,
        stride=module.stride,
        padding=padding,
        dilation=module.dilation,
        groups=channels,
    )
    kernel = math.prod(module.kernel_size)
    rows = window.shape[0] * math.prod(window.shape[2:])
    return window.sum(dim=[0, *range(2, window.dim())]) / kernel, rows


def _call(model: nn.Module, item: Any) -> None:
    if isinstance(item, dict):
        model(**item)
    elif isinstance(item, (tuple, list)):
        model(*item)
    else:
        model(item)


@torch.no_grad()
def collect_importance(
    model: nn.Module,
    data: Iterable[Any],
    *,
    n_samples: int = 128,
    path: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """The mean squared input activation of each input channel of every ``nn.Linear`` and
    ``nn.Conv1d/2d/3d`` of ``model`` over calibration data.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its mode is restored afterwards); it is not modified.
    data : iterable
        Calibration items, as coremltools' calibration loaders give them: a tensor (``model(x)``),
        a tuple or list (``model(*x)``) or a dict (``model(**x)``). Moved to the model's device.
    n_samples : int
        How many items of ``data`` to run (fewer if it ends first).
    path : str or Path, optional
        Also save the result as safetensors (needs the ``safetensors`` package), keyed by module
        name, with ``n_samples`` (the items run) in its metadata.

    Returns
    -------
    dict[str, torch.Tensor]
        Module name (as ``model.named_modules()`` gives it) → float32 vector of ``in_features``
        or ``in_channels`` entries, for every such module the data reached.

    Raises
    ------
    ValueError
        ``n_samples`` < 1, or ``data`` gave no item.

    Example
    -------
    >>> from coreml_compress.torch import collect_importance
    >>> imp = collect_importance(model, loader, n_samples=64, path="importance.safetensors")
    >>> imp["encoder.layer.0.attention.self.query"].shape
    torch.Size([384])
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            squares, count = _squares_per_channel(module, args[0])
            sums[name] = sums[name] + squares if name in sums else squares
            rows[name] = rows.get(name, 0) + count

        return hook

    handles = [
        module.register_forward_pre_hook(hook_for(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, *_CONVS))
    ]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    run = 0
    try:
        for item in data:
            if run == n_samples:
                break
            _call(model, to_device(item, device))
            run += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if run == 0:
        raise ValueError("collect_importance: data gave no item")
    importance = {name: (sums[name] / rows[name]).to(torch.float32).cpu() for name in sums}
    if path is not None:
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in importance.items()},
            str(path),
            metadata={"n_samples": str(run)},
        )
    return importance
