"""The ``_COREML_`` buffer contract that ``ct.convert`` reads from a torch module's state dict.

A compressed parameter ``<param>`` of a module carries buffers ``_COREML_/<param>/<field>`` on
that module (``compression_type``: 1 pruning, 2 palettization, 3 quantization, in order of
application; then ``quantization_n_bits``, ``quantization_scale``, ``zero_point``, ``lut``,
``palettization_scale``, ``vector_axis`` as needed), and the root module carries
``_COREML_/metadata_version = tensor(1)``. ``ct.convert`` builds ``constexpr_*`` ops from them
when ``minimum_deployment_target >= ct.target.iOS16`` (iOS18 for blocks, 4-bit, grouped LUTs and
joint compression).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..lint import per_block_warning

PREFIX = "_COREML_"
VERSION_BUFFER = f"{PREFIX}/metadata_version"
COMPRESSION_TYPES = {"pruning": 1, "palettization": 2, "quantization": 3}
FIELDS = (
    "compression_type",
    "quantization_n_bits",
    "quantization_scale",
    "zero_point",
    "lut",
    "palettization_scale",
    "vector_axis",
)


def _buffer(param: str, field: str) -> str:
    if "/" in param or "." in param:
        raise ValueError(f"parameter name {param!r} cannot hold metadata ('/' or '.')")
    return f"{PREFIX}/{param}/{field}"


def clear_metadata(module: torch.nn.Module, param: str = "weight") -> None:
    """Removes every ``_COREML_/<param>/*`` buffer of ``module``."""
    prefix = f"{PREFIX}/{param}/"
    for name in [n for n in module._buffers if n.startswith(prefix)]:
        del module._buffers[name]


def register_metadata(
    module: torch.nn.Module,
    param: str,
    fields: Mapping[str, Any],
    *,
    append: bool = False,
) -> None:
    """Registers compression metadata for ``module.<param>``.

    ``fields["compression_type"]`` is a list of names or codes. Without ``append`` every earlier
    field of this parameter is removed first (stale fields are never left behind); with ``append``
    the new compression types are appended to the existing list (joint compression, e.g.
    pruning then palettization) and the other fields are overwritten.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown metadata fields {sorted(unknown)}")
    types = [COMPRESSION_TYPES.get(t, t) for t in fields.get("compression_type", [])]
    if not types or any(t not in (1, 2, 3) for t in types):
        raise ValueError(f"compression_type must list pruning/palettization/quantization: {types}")
    old: list[int] = []
    key = _buffer(param, "compression_type")
    if append and key in module._buffers:
        old = [int(v) for v in module._buffers[key].tolist()]
    if not append:
        clear_metadata(module, param)
    for field, value in fields.items():
        if field == "compression_type":
            value = old + types
        if value is None:
            continue
        tensor = value.detach().clone() if torch.is_tensor(value) else torch.tensor(value)
        if field in ("compression_type", "quantization_n_bits", "vector_axis"):
            tensor = tensor.to(torch.int64)
        elif tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        module.register_buffer(_buffer(param, field), tensor.cpu())


def register_metadata_version(model: torch.nn.Module) -> None:
    model.register_buffer(VERSION_BUFFER, torch.tensor(1))


def metadata_of(module: torch.nn.Module, param: str = "weight") -> dict[str, torch.Tensor]:
    """``{field: tensor}`` of the metadata registered for ``module.<param>``."""
    prefix = f"{PREFIX}/{param}/"
    return {n[len(prefix) :]: b for n, b in module._buffers.items() if n.startswith(prefix)}


def per_block_weights(model: torch.nn.Module) -> list[str]:
    """The parameters of ``model`` whose ``quantization_scale`` is neither per tensor nor per
    channel: ``ct.convert`` writes them in per_block form."""
    out = []
    for name, module in model.named_modules():
        params = {n.split("/")[1] for n in module._buffers if n.startswith(f"{PREFIX}/")}
        for param in sorted(params - {"metadata_version"}):
            scale = metadata_of(module, param).get("quantization_scale")
            weight = getattr(module, param, None)
            if scale is None or weight is None or scale.dim() == 0:
                continue
            # Per tensor, or one scale per channel of a single axis (0, or 1 for a transposed
            # convolution): any other shape has blocks.
            varying = [a for a, d in enumerate(scale.shape) if d > 1]
            if len(varying) > 1 or any(scale.shape[a] != weight.shape[a] for a in varying):
                out.append(f"{name}.{param}" if name else param)
    return out


def warn_per_block(model: torch.nn.Module, stacklevel: int = 2) -> None:
    """One ``DeploymentWarning`` naming the weights of ``model`` that convert to per_block
    linear quantization, which the Neural Engine does not run (as the post-training passes
    warn)."""
    names = per_block_weights(model)
    if names:
        weights = [{"name": n} for n in names]
        warnings.warn(per_block_warning(weights), stacklevel=stacklevel + 1)
