"""coremltools' ``DKMPalettizer`` API and configs on the :class:`TrainingPalettizer`.

The config is coremltools' own ``DKMPalettizerConfig`` (an object, a dict for its
``from_dict``, or a YAML path/stream for its ``from_yaml``); modules are resolved by
coremltools' ``get_module_config`` (name regexes, then types, then the global config; a list of
configs is chosen by ``weight_threshold`` as coremltools does, the last one the weight exceeds
wins; ``n_bits=None`` takes coremltools' per-type default: 4 for Linear, 2 otherwise).

This is a different algorithm from DKM (said once at ``prepare()``): no soft k-means attention
in the forward pass; hard assignments to a learned LUT, exact native k-means when a module's
palettization starts, straight-through gradients to the dense weights and nearest-centroid
re-assignment at every ``step()``. The extra memory per palettized weight is its uint8 indices
and the LUT, O(weight), where DKM keeps an N×2^n_bits attention matrix per weight.

Fields used: ``n_bits``, ``weight_threshold``, ``granularity``, ``group_size``,
``channel_axis``, ``enable_per_channel_scale``, ``per_channel_scaling_factor_scheme``,
``milestone`` (palettization starts at the ``step()`` call whose count before it equals the
milestone, as in coremltools), ``cluster_dim`` (vectors of consecutive output channels, the
native vector k-means at the milestone, nearest-vector re-assignment), ``lut_dtype`` (``f16``/``bf16`` round the
centroids; ``i8``/``u8`` quantize each LUT symmetrically to ±127 steps, one scale per LUT, and
export it as an 8-bit LUT with ``[2, 3]`` metadata, where coremltools' DKM exports float
centroids; ``quant_min``/``quant_max`` must then keep their defaults). ``dtype`` only matters
with activation quantization, which is not used. Any other field with a non-default value, and
``LayerNorm``/``MultiheadAttention`` modules the config selects are listed by
:func:`unsupported_dkm_options`; the constructor refuses them (``ValueError``), and under
``patch_coremltools(torch=True)`` such scripts run on coremltools' own ``DKMPalettizer``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import attrs
from torch import nn

from ._config import _plain, coremltools_config
from .training_palettization import (
    ModuleTrainingPalettizerConfig,
    TrainingPalettizer,
    TrainingPalettizerConfig,
)

# DKM fields this adapter implements (or that have no effect without LUT/activation
# quantization, as in coremltools).
_USED = {
    "n_bits",
    "weight_threshold",
    "granularity",
    "group_size",
    "channel_axis",
    "enable_per_channel_scale",
    "per_channel_scaling_factor_scheme",
    "milestone",
    "cluster_dim",
    "lut_dtype",
    "quant_min",
    "quant_max",
    "dtype",
}
_OURS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
_NOT_OURS = (nn.LayerNorm, nn.MultiheadAttention)


def dkm_config(config: Any) -> Any:
    """coremltools' ``DKMPalettizerConfig`` from an instance, a dict or a YAML path/stream."""
    from coremltools.optimize.torch.palettization import DKMPalettizerConfig

    return coremltools_config(DKMPalettizerConfig, config)


def _module_dkm_config(config: Any, name: str, module: nn.Module) -> Any:
    """The module config coremltools' ``DKMPalettizer`` applies to ``module`` (or ``None``)."""
    found = config.get_module_config(name, module)
    if found is None:
        return None
    chosen = None
    weights = [p for n, p in module.named_parameters(recurse=False) if "weight" in n]
    for cfg in found if isinstance(found, list) else [found]:
        if weights and all(p.numel() > cfg.weight_threshold for p in weights):
            chosen = cfg
    return chosen


def _gaps(cfg: Any) -> list[str]:
    out = []
    for f in attrs.fields(type(cfg)):
        if f.name in _USED or f.name.startswith("_"):
            continue
        default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
        value = getattr(cfg, f.name, default)
        if default is not attrs.NOTHING and value != default:
            out.append(f"{f.name}={value!r}")
    if cfg.lut_dtype not in ("f32", "f16", "bf16", "i8", "u8"):
        out.append(f"lut_dtype={cfg.lut_dtype!r}")
    if cfg.lut_dtype in ("i8", "u8") and (cfg.quant_min, cfg.quant_max) != (-128, 127):
        out.append(f"quant_min/quant_max={cfg.quant_min}/{cfg.quant_max} with an 8-bit LUT")
    return out


def _default_n_bits(module: nn.Module) -> int:
    from coremltools.optimize.torch.palettization.palettization_config import (
        DEFAULT_PALETTIZATION_SCHEME,
    )

    return DEFAULT_PALETTIZATION_SCHEME.get(type(module), DEFAULT_PALETTIZATION_SCHEME[nn.Linear])[
        "n_bits"
    ]


def unsupported_dkm_options(model: nn.Module, config: Any) -> list[str]:
    """What of ``config`` (coremltools' ``DKMPalettizerConfig``) on ``model`` this adapter does
    not implement, one entry per option/module: empty when it runs the whole config."""
    config = dkm_config(config)
    out: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, _OURS + _NOT_OURS):
            continue
        cfg = _module_dkm_config(config, name, module)
        if cfg is None:
            continue
        if isinstance(module, _NOT_OURS):
            out.append(f"module type {type(module).__name__} ({name})")
            continue
        out.extend(f"{g} ({name})" for g in _gaps(cfg) if f"{g} ({name})" not in out)
    return out


def training_config(model: nn.Module, config: Any) -> TrainingPalettizerConfig:
    """The :class:`TrainingPalettizerConfig` that applies ``config`` (coremltools'
    ``DKMPalettizerConfig``) to ``model``: one exact-name entry per palettized module."""
    config = dkm_config(config)
    by_name: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not isinstance(module, _OURS):
            continue
        cfg = _module_dkm_config(config, name, module)
        if cfg is None:
            continue
        by_name[re.escape(name)] = ModuleTrainingPalettizerConfig(
            n_bits=cfg.n_bits if cfg.n_bits is not None else _default_n_bits(module),
            granularity=_plain(cfg.granularity),
            group_size=cfg.group_size,
            channel_axis=cfg.channel_axis,
            enable_per_channel_scale=bool(cfg.enable_per_channel_scale),
            per_channel_scaling_factor_scheme=cfg.per_channel_scaling_factor_scheme,
            weight_threshold=cfg.weight_threshold,
            lut_dtype=cfg.lut_dtype,
            cluster_dim=cfg.cluster_dim or 1,
            # coremltools compares the count before incrementing it, TrainingPalettizer after
            milestone=cfg.milestone + 1 if cfg.milestone > 0 else 0,
        )
    by_name[".*"] = None  # every other module is left alone
    return TrainingPalettizerConfig(module_name_configs=by_name)


class DKMPalettizer(TrainingPalettizer):
    """coremltools' ``DKMPalettizer(model, config)`` with ``prepare``/``step``/``finalize`` on
    the :class:`TrainingPalettizer` (see the module docstring for what differs from DKM)."""

    def __init__(self, model: nn.Module, config: Any = None):
        gaps = unsupported_dkm_options(model, config)
        if gaps:
            raise ValueError(f"DKMPalettizer options not supported here: {', '.join(gaps)}")
        super().__init__(model, training_config(model, config))

    def prepare(self, inplace: bool = False) -> nn.Module:
        warnings.warn(
            "coreml_compress: DKMPalettizer runs the TrainingPalettizer (hard assignments to a "
            "learned LUT, native k-means at each milestone), not DKM's soft k-means",
            UserWarning,
            stacklevel=2,
        )
        return super().prepare(inplace=inplace)


__all__ = ["DKMPalettizer", "dkm_config", "training_config", "unsupported_dkm_options"]
