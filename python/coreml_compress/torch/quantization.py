"""``PostTrainingQuantizer``: data-free linear weight quantization of a torch model on the native
quantize kernel (coremltools' ``optimize.torch.quantization.PostTrainingQuantizer`` semantics).

Each supported weight is quantized by :func:`coreml_compress.kernels.quantize` (the Rust kernel
that is bit-identical to coremltools' ``compute_qparams``) with the block sizes coremltools
derives from the config, and replaced by its dequantized value ``scale·(q − zero_point)``
(float32, the same arithmetic as coremltools). The module gets ``compression_type=[3]``,
``quantization_n_bits``, ``quantization_scale`` (weight rank: ``[C_out, 1]`` per channel,
``[C_out, C_in/b]`` per block, ``[C_out, 1, 1, 1]`` for a per-channel Conv2d) and, for affine or
unsigned dtypes, ``zero_point``; ``ct.convert(..., minimum_deployment_target=ct.target.iOS18)``
turns them into ``constexpr_blockwise_shift_scale``.

Supported modules (as coremltools): ``nn.Linear``, ``nn.Conv1d/2d/3d``,
``nn.ConvTranspose1d/2d/3d`` (output channels on axis 1) and ``nn.MultiheadAttention``
(``in_proj_weight``, ``q/k/v_proj_weight`` and ``out_proj.weight``). Weight dtypes: ``int8``,
``uint8``, ``int4``, ``uint4`` (strings or torch dtypes) and ``float32`` (= leave the module);
the fp8 dtypes coremltools also accepts are refused (no fp8 kernel).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from .. import kernels as _kernels
from ._arrays import as_f32
from ._config import _check_in, _ModuleConfig, _OptimizationConfig, _plain
from ._metadata import register_metadata, register_metadata_version, warn_per_block

_log = logging.getLogger(__name__)

_SUPPORTED = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.MultiheadAttention,
)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_INT_DTYPES = {"int8": (8, True), "uint8": (8, False), "int4": (4, True), "uint4": (4, False)}


def _dtype_name(value: Any, n_bits: int | None = None) -> str:
    """``"int8" | "uint8" | "int4" | "uint4" | "float32"`` from a string or torch dtype (4-bit
    torch dtypes need ``n_bits``, as coremltools stores ``torch.int8`` + ``weight_n_bits=4``)."""
    if isinstance(value, torch.dtype):
        if value == torch.float32:
            return "float32"
        if value in (torch.int8, torch.uint8):
            return ("int" if value == torch.int8 else "uint") + str(n_bits or 8)
        raise ValueError(f"unsupported weight_dtype {value} (fp8 has no native kernel)")
    name = str(value).lower().replace("torch.", "")
    if name in _INT_DTYPES or name == "float32":
        return name
    if name.startswith(("fp8", "float8")):
        raise ValueError(f"unsupported weight_dtype {value!r} (fp8 has no native kernel)")
    raise ValueError(
        f"weight_dtype must be one of int8, uint8, int4, uint4, float32, not {value!r}"
    )


def _block_size(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@attrs.define(kw_only=True)
class ModulePostTrainingQuantizerConfig(_ModuleConfig):
    """coremltools' ``ModulePostTrainingQuantizerConfig``: ``weight_dtype`` (default ``"int8"``),
    ``granularity`` (``per_channel``/``per_tensor``/``per_block``), ``quantization_scheme``
    (``symmetric``/``affine``), ``block_size`` (int = input-channel blocks with per-channel
    output; tuple = one block size per leading axis; required iff ``per_block``)."""

    weight_dtype: Any = "int8"
    granularity: str = attrs.field(
        default="per_channel",
        converter=_plain,
        validator=_check_in(("per_channel", "per_tensor", "per_block")),
    )
    quantization_scheme: str = attrs.field(
        default="symmetric", converter=_plain, validator=_check_in(("symmetric", "affine"))
    )
    block_size: tuple[int, ...] | None = attrs.field(default=None, converter=_block_size)

    def __attrs_post_init__(self) -> None:
        self.weight_dtype = _dtype_name(self.weight_dtype)
        if self.granularity == "per_block" and self.block_size is None:
            raise ValueError("block_size has to be specified along with per_block granularity.")
        if self.granularity != "per_block" and self.block_size is not None:
            raise ValueError(
                "block_size can't be specified along with per_tensor or per_channel granularity."
            )

    @property
    def weight_n_bits(self) -> int | None:
        return None if self.weight_dtype == "float32" else _INT_DTYPES[self.weight_dtype][0]

    @property
    def signed(self) -> bool:
        return self.weight_dtype == "float32" or _INT_DTYPES[self.weight_dtype][1]


@attrs.define(kw_only=True)
class PostTrainingQuantizerConfig(_OptimizationConfig):
    """coremltools' ``PostTrainingQuantizerConfig`` (an empty config = int8 per-channel
    symmetric for every supported module; ``quantization_scheme`` must agree across configs)."""

    _module_cls = ModulePostTrainingQuantizerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModulePostTrainingQuantizerConfig()
        schemes = {
            c.quantization_scheme
            for c in [
                self.global_config,
                *self.module_type_configs.values(),
                *self.module_name_configs.values(),
            ]
            if c is not None
        }
        if len(schemes) > 1:
            raise ValueError("quantization_scheme must be the same in every module config")

    @classmethod
    def coerce(cls, obj: Any) -> Any:
        if obj is not None and not isinstance(obj, cls) and hasattr(obj, "global_config"):
            # A coremltools config object: module configs carry weight_dtype as torch dtypes
            # plus weight_n_bits; read them field by field.
            fields = {
                "global_config": _foreign_module(obj.global_config),
                "module_type_configs": {
                    k: _foreign_module(v) for k, v in dict(obj.module_type_configs).items()
                },
                "module_name_configs": {
                    k: _foreign_module(v) for k, v in dict(obj.module_name_configs).items()
                },
            }
            return cls(**fields)
        return super().coerce(obj)


def _foreign_module(obj: Any) -> Any:
    if obj is None or isinstance(obj, (Mapping, ModulePostTrainingQuantizerConfig)):
        return obj
    return ModulePostTrainingQuantizerConfig(
        weight_dtype=_dtype_name(obj.weight_dtype, getattr(obj, "weight_n_bits", None)),
        granularity=_plain(obj.granularity),
        quantization_scheme=_plain(obj.quantization_scheme),
        block_size=obj.block_size,
    )


def block_sizes_for(
    weight: torch.Tensor, module: nn.Module, cfg: ModulePostTrainingQuantizerConfig, name: str
) -> list[int] | None:
    """coremltools' per-axis block sizes for ``weight`` (0 = whole axis), or ``None`` when it
    skips the weight (with its warning)."""
    rank = weight.dim()
    if rank < 2:
        return None
    blocks = [0] * rank
    transposed = isinstance(module, _TRANSPOSED)
    if cfg.granularity == "per_channel":
        blocks[1 if transposed else 0] = 1
    elif cfg.granularity == "per_block":
        bs = list(cfg.block_size or ())
        shape = weight.shape
        if len(bs) > rank:
            _log.warning("%s: block_size %s has more entries than the weight's rank", name, bs)
            return None
        if any(b not in (0, shape[i]) for i, b in enumerate(bs) if i > 1):
            _log.warning("%s: blocking is only supported along the input or output axis", name)
            return None
        out_b, in_b = (bs[0], bs[1]) if len(bs) >= 2 else (None, bs[0])
        block_out = bool(out_b) and 0 < out_b < shape[0]
        block_in = 0 < in_b < shape[1]
        if block_in and not block_out:
            out_b, block_out = 1, True
        if not block_in and not block_out:
            _log.warning("%s: no valid block_size %s for any axis - skipping", name, bs)
            return None
        if block_out and shape[0] % out_b:
            _log.warning("%s: block size %d does not divide %d - skipping", name, out_b, shape[0])
            return None
        if block_in and shape[1] % in_b:
            _log.warning("%s: block size %d does not divide %d - skipping", name, in_b, shape[1])
            return None
        pair = [out_b if block_out else 0, in_b if block_in else 0]
        # coremltools keeps the normalised (out, in) pair, which also holds for ConvTranspose
        # read in reverse (its output axis is 1).
        blocks[:2] = pair[::-1] if transposed else pair
    return blocks


def quantize_weight(
    weight: torch.Tensor, blocks: list[int], cfg: ModulePostTrainingQuantizerConfig
) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """``(dequantized weight, metadata fields)`` of one weight by the native kernel."""
    w = as_f32(weight)
    q = _kernels.quantize(
        w,
        dtype=cfg.weight_dtype,
        mode="linear_symmetric" if cfg.quantization_scheme == "symmetric" else "linear",
        granularity="per_block",
        block_size=blocks,
    )
    if q is None:
        return None
    dense = _kernels.dequantize(q)
    fields: dict[str, Any] = {
        "compression_type": ["quantization"],
        "quantization_n_bits": cfg.weight_n_bits,
        "quantization_scale": torch.from_numpy(np.ascontiguousarray(q.scale, dtype=np.float32)),
    }
    if cfg.quantization_scheme == "affine" or not cfg.signed:
        zp = q.offset if q.offset is not None else np.zeros(q.scale.shape, q.data.dtype)
        fields["zero_point"] = torch.from_numpy(np.ascontiguousarray(zp))
    return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)), fields


def _params(name: str, module: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(qualified module name, owning module, parameter name)`` to quantize."""
    if not isinstance(module, nn.MultiheadAttention):
        return [(name, module, "weight")]
    out = [
        (name, module, p)
        for p in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
        if getattr(module, p, None) is not None
    ]
    if getattr(module, "out_proj", None) is not None and module.out_proj.weight is not None:
        out.append((f"{name}.out_proj" if name else "out_proj", module.out_proj, "weight"))
    return out


def atomic_modules(model: nn.Module, types: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """Modules of ``types``, not descending into a matched module (coremltools'
    ``get_atomic_layers``)."""
    found: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        if isinstance(module, types):
            found.append((prefix, module))
            return
        for child_name, child in module.named_children():
            walk(child, f"{prefix}.{child_name}" if prefix else child_name)

    walk(model, "")
    return found


class PostTrainingQuantizer:
    """Data-free weight quantization (coremltools' ``PostTrainingQuantizer``) on the native
    kernel. ``compress(inplace=False)`` returns a compressed deep copy unless ``inplace``."""

    _supported_modules = _SUPPORTED

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = PostTrainingQuantizerConfig.coerce(config)

    @torch.no_grad()
    def compress(self, inplace: bool = False) -> nn.Module:
        model = self._model if inplace else copy.deepcopy(self._model)
        for name, module in atomic_modules(model, _SUPPORTED):
            cfg = self._config.module_config(name, module)
            if cfg is None or cfg.weight_dtype == "float32":
                continue
            for qual, owner, pname in _params(name, module):
                param = getattr(owner, pname)
                blocks = block_sizes_for(param, owner, cfg, f"{qual}.{pname}")
                out = None if blocks is None else quantize_weight(param, blocks, cfg)
                if out is None:
                    _log.warning("Unable to quantize layer %s - skipping it.", qual)
                    continue
                dense, fields = out
                param.data.copy_(dense.reshape(param.shape).to(param.dtype))
                register_metadata(owner, pname, fields)
        register_metadata_version(model)
        warn_per_block(model, stacklevel=3)  # under the no_grad decorator
        self._model = model
        return model
