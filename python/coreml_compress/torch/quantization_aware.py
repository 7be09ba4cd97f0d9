"""``LinearQuantizer``: weight-only quantization-aware training (coremltools'
``optimize.torch.quantization.LinearQuantizer`` with ``activation_dtype=float32``).

``prepare()`` reparametrizes the weight of every selected ``nn.Linear`` / ``nn.Conv1d/2d/3d``
(``torch.nn.utils.parametrize``, no ``torch.fx`` tracing, so untraceable models work) as
``FakeQuantize(weight)``, built exactly as coremltools builds its weight fake-quantizer: torch's
observer for ``weight_observer`` (``moving_average_min_max`` or ``min_max``, per channel along the
output axis or per tensor), the ``symmetric``/``affine`` qscheme, and the code range of
``weight_dtype`` (``qint8`` [-128, 127], ``quint8`` [0, 255], ``qint4`` [-8, 7], ``quint4``
[0, 15]). Its fake quantization passes gradients straight through inside the range. ``step()``
applies ``milestones`` (enable observers, enable fake quantization, disable observers; the
fourth, BatchNorm freezing, has nothing to freeze because BatchNorm is not folded here) exactly
at the step count coremltools does; with ``milestones=None`` observers and fake quantization run
from ``prepare()`` on.

``finalize()`` quantizes each weight with its observer's scale and zero point, writes
``scale·(q − zero_point)`` into a plain weight and registers ``compression_type=[3]``,
``quantization_n_bits``, ``quantization_scale`` and ``zero_point`` (``[C_out, 1]``, or ``[1, 1]``
per tensor), so ``ct.convert(..., minimum_deployment_target=ct.target.iOS18)`` emits
``constexpr_blockwise_shift_scale`` holding exactly these codes, scales and offsets.

Activation quantization (coremltools' default W8A8), the ``learnable`` algorithm, the
``ema_min_max`` observer, BatchNorm folding and the other module types coremltools' QAT handles
are not implemented: the config refuses them (``ValueError``) and, under
``patch_coremltools(torch=True)``, such scripts run on coremltools' own ``LinearQuantizer``.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
from torch import nn
from torch.ao import quantization as aoq
from torch.nn.utils import parametrize

from ._config import _check_in, _ModuleConfig, _OptimizationConfig, _plain, parse_weight_dtype
from ._parametrize import finalize_weights

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_OBSERVERS = {
    ("moving_average_min_max", True): aoq.MovingAveragePerChannelMinMaxObserver,
    ("moving_average_min_max", False): aoq.MovingAverageMinMaxObserver,
    ("min_max", True): aoq.PerChannelMinMaxObserver,
    ("min_max", False): aoq.MinMaxObserver,
}


def _milestones(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    out = tuple(int(v) for v in value)
    if len(out) != 4:
        raise ValueError("milestones must hold 4 step counts")
    return out


@attrs.define(kw_only=True)
class ModuleLinearQuantizerConfig(_ModuleConfig):
    """Per-module options, coremltools' names: ``weight_dtype`` (``qint8``/``quint8``/``qint4``/
    ``quint4``, also ``int8``-style strings or torch dtypes with ``weight_n_bits``),
    ``weight_observer``, ``weight_per_channel``, ``quantization_scheme``, ``milestones``.
    ``activation_dtype`` must be ``float32`` (weight-only; the default here, unlike
    coremltools' ``quint8``); ``activation_observer`` is then unused, as in coremltools."""

    algorithm: str = attrs.field(default="vanilla", validator=_check_in(("vanilla",)))
    weight_dtype: Any = "qint8"
    weight_n_bits: int | None = None
    weight_observer: str = attrs.field(
        default="moving_average_min_max",
        converter=_plain,
        validator=_check_in(("moving_average_min_max", "min_max")),
    )
    weight_per_channel: bool = True
    activation_dtype: Any = "float32"
    activation_observer: str = attrs.field(default="moving_average_min_max", converter=_plain)
    quantization_scheme: str = attrs.field(
        default="symmetric", converter=_plain, validator=_check_in(("symmetric", "affine"))
    )
    milestones: tuple[int, ...] | None = attrs.field(default=None, converter=_milestones)

    def __attrs_post_init__(self) -> None:
        bits, _ = parse_weight_dtype(self.weight_dtype, self.weight_n_bits)
        if bits is None:
            raise ValueError("weight_dtype must be an integer dtype (qint8, quint8, qint4, quint4)")
        if parse_weight_dtype(self.activation_dtype)[0] is not None:
            raise ValueError(
                f"activation_dtype={self.activation_dtype}: activation quantization is not "
                "supported (weight-only QAT needs activation_dtype float32)"
            )

    @property
    def code_range(self) -> tuple[int, int]:
        bits, signed = parse_weight_dtype(self.weight_dtype, self.weight_n_bits)
        assert bits is not None
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)

    def fake_quantize(self) -> aoq.FakeQuantize:
        """The weight fake-quantizer coremltools' ``LinearQuantizer`` builds for this config."""
        per_channel = self.weight_per_channel
        lo, hi = self.code_range
        scheme = {
            ("symmetric", True): torch.per_channel_symmetric,
            ("symmetric", False): torch.per_tensor_symmetric,
            ("affine", True): torch.per_channel_affine,
            ("affine", False): torch.per_tensor_affine,
        }[(self.quantization_scheme, per_channel)]
        kwargs: dict[str, Any] = {
            "observer": _OBSERVERS[(self.weight_observer, per_channel)],
            "quant_min": lo,
            "quant_max": hi,
            "dtype": torch.qint8 if lo < 0 else torch.quint8,
            "qscheme": scheme,
        }
        if per_channel:
            kwargs["ch_axis"] = 0
        return aoq.FakeQuantize(**kwargs)


@attrs.define(kw_only=True)
class LinearQuantizerConfig(_OptimizationConfig):
    """Global / per-type / per-name module configs (an empty config quantizes every supported
    module with the default: int8 per-channel symmetric weights). ``non_traceable_module_names``
    and ``preserved_attributes`` are accepted; nothing is traced and modules keep their
    attributes."""

    non_traceable_module_names: list = attrs.field(factory=list)
    preserved_attributes: list = attrs.field(factory=list)
    _module_cls = ModuleLinearQuantizerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModuleLinearQuantizerConfig()


class FakeQuantizedWeight(nn.Module):
    """``weight ↦ FakeQuantize(weight)`` (straight-through gradients inside the code range)."""

    def __init__(self, cfg: ModuleLinearQuantizerConfig):
        super().__init__()
        self.fake_quant = cfg.fake_quantize()
        self.n_bits = parse_weight_dtype(cfg.weight_dtype, cfg.weight_n_bits)[0]
        if cfg.milestones is not None:  # coremltools starts both disabled with milestones
            self.fake_quant.disable_observer()
            self.fake_quant.disable_fake_quant()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.fake_quant(w)

    @torch.no_grad()
    def quantized(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(fake-quantized w, scale, zero point)`` with the observer's current statistics,
        without observing ``w``; the arithmetic of the training forward."""
        fq = self.fake_quant
        scale, zp = fq.calculate_qparams()
        scale, zp = scale.float().reshape(-1), zp.to(torch.int32).reshape(-1)
        if fq.is_per_channel:
            dense = torch.fake_quantize_per_channel_affine(
                w.detach().float(), scale, zp, fq.ch_axis, fq.quant_min, fq.quant_max
            )
        else:
            dense = torch.fake_quantize_per_tensor_affine(
                w.detach().float(), scale, zp, fq.quant_min, fq.quant_max
            )
        return dense, scale, zp

    @torch.no_grad()
    def export(self, w: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(dequantized weight, metadata fields)`` from the observer's current statistics
        (a weight that was never observed is observed once now)."""
        observer = self.fake_quant.activation_post_process
        if torch.isinf(observer.min_val).any() or observer.min_val.numel() == 0:
            observer(w.detach())
        dense, scale, zp = self.quantized(w)
        rows = scale.shape[0]
        fields = {
            "compression_type": ["quantization"],
            "quantization_n_bits": self.n_bits,
            "quantization_scale": scale.reshape(rows, 1),
            "zero_point": zp.reshape(rows, 1),
        }
        return dense.to(w.dtype), fields


def _fake_quant_of(module: nn.Module) -> FakeQuantizedWeight | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations["weight"]:
        if isinstance(p, FakeQuantizedWeight):
            return p
    return None


class LinearQuantizer:
    """Weight-only quantization-aware training::

    quantizer = LinearQuantizer(model, {"global_config": {"weight_dtype": "qint8"}})
    model = quantizer.prepare()
    for x, y in data:
        loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
        quantizer.step()
    exported = quantizer.finalize()   # plain modules + _COREML_ buffers
    """

    _supported_modules = _SUPPORTED

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = LinearQuantizerConfig.coerce(config)
        self._step_count = 0
        self._milestones: dict[str, tuple[int, ...] | None] = {}

    @property
    def step_count(self) -> int:
        return self._step_count

    def prepare(self, example_inputs: Any = None, inplace: bool = False) -> nn.Module:
        """Attaches the weight fake-quantizers (``example_inputs`` is accepted for coremltools'
        signature; nothing is traced)."""
        model = self._model if inplace else copy.deepcopy(self._model)
        model.train()
        for name, module in model.named_modules():
            if not isinstance(module, _SUPPORTED) or _fake_quant_of(module) is not None:
                continue
            cfg = self._config.module_config(name, module)
            if cfg is None:
                continue
            parametrize.register_parametrization(module, "weight", FakeQuantizedWeight(cfg))
            self._milestones[name] = cfg.milestones
        self._model = model
        return model

    def step(self) -> None:
        """At ``milestones[0]`` enables observers, at ``[1]`` fake quantization, at ``[2]``
        disables observers (a step count is compared before it is incremented, as in
        coremltools)."""
        modules = dict(self._model.named_modules())
        for name, milestones in self._milestones.items():
            fq = _fake_quant_of(modules[name])
            if milestones is None or fq is None:
                continue
            if self._step_count == milestones[0]:
                fq.fake_quant.enable_observer()
            if self._step_count == milestones[1]:
                fq.fake_quant.enable_fake_quant()
            if self._step_count == milestones[2]:
                fq.fake_quant.disable_observer()
        self._step_count += 1

    @torch.no_grad()
    def report(self) -> dict[str, dict[str, Any]]:
        """Per quantized module (coremltools' report keys): ``type``, ``device``,
        ``algorithm``, ``qscheme``, ``per_channel``, ``dtype``, ``error`` (RMSE of the
        fake-quantized weight against the dense one) and ``#params``."""
        out: dict[str, dict[str, Any]] = {}
        for name, module in self._model.named_modules():
            fq = _fake_quant_of(module)
            if fq is None:
                continue
            dense = module.parametrizations.weight.original
            quantized, _, _ = fq.quantized(dense)
            out[name] = {
                "type": "weight",
                "device": dense.device,
                "algorithm": "vanilla",
                "qscheme": "symmetric"
                if fq.fake_quant.qscheme
                in (torch.per_channel_symmetric, torch.per_tensor_symmetric)
                else "affine",
                "per_channel": fq.fake_quant.is_per_channel,
                "dtype": fq.fake_quant.dtype,
                "error": float((quantized - dense.detach().float()).pow(2).mean().sqrt()),
                "#params": dense.numel(),
            }
        return out

    @torch.no_grad()
    def finalize(self, model: nn.Module | None = None, inplace: bool = False) -> nn.Module:
        """Plain modules whose weights are the quantized values, with the ``_COREML_``
        buffers; a finalized copy unless ``inplace``, in eval mode."""

        def export(module: nn.Module) -> tuple[torch.Tensor, dict[str, Any]] | None:
            fq = _fake_quant_of(module)
            return None if fq is None else fq.export(module.parametrizations.weight.original)

        out = finalize_weights(self._model if model is None else model, inplace, export)
        if model is None:
            self._model = out
        return out


__all__ = [
    "FakeQuantizedWeight",
    "LinearQuantizer",
    "LinearQuantizerConfig",
    "ModuleLinearQuantizerConfig",
]
