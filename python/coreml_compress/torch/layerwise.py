"""``LayerwiseCompressor``: GPTQ and SparseGPT over a torch model, block by block, on the native
kernels (coremltools' ``optimize.torch.layerwise_compression`` behaviour and configs).

Flow, as in coremltools: calibration inputs are cached (``"default"``: the dataloader items
themselves; ``"gpt"``: the positional inputs and keyword arguments that reach the first block);
for each block the inputs of every ``nn.Linear``/``nn.Conv2d`` inside it are captured by forward
hooks and accumulated into that module's Hessian by the native kernel, every module is
compressed, and the compressed block is re-run to produce the next block's inputs. Two
shortcuts that do not change results: a block that is itself a Linear/Conv2d accumulates its
Hessian straight from its inputs without running its forward, and the last block's outputs are
not recomputed.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from . import kernels
from ._arrays import to_device
from ._config import LayerwiseCompressorConfig, ModuleGPTQConfig
from ._metadata import register_metadata, register_metadata_version, warn_per_block
from .kernels import Hessian

_log = logging.getLogger(__name__)

_NF = {
    4: [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    3: [-1.0, -0.4786292, -0.21714179, 0.0, 0.1609302, 0.33791524, 0.562617, 1.0],
}


_FP16_EPS = float(np.finfo(np.float16).eps)


class _StopForward(Exception):
    pass


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and not isinstance(module.padding, str)
        and module.padding_mode == "zeros"
    )


def _groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def _activation_rows(module: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """``([X_g [tokens, columns] per convolution group], samples)`` for a module input,
    counted like coremltools (a grouped convolution's group ``g`` sees input channels
    ``g·C_in/groups …``, so each group has its own Hessian)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    samples = x.shape[0]
    if isinstance(module, nn.Linear):
        return [x.reshape(-1, x.shape[-1])], samples
    out = []
    for part in x.chunk(module.groups, dim=1):
        cols = nn.functional.unfold(
            part,
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )  # [B, C_g·kh·kw, L]
        out.append(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
    return out, samples


class _LayerState:
    def __init__(self, name: str, module: nn.Module, config: Any):
        self.name = name
        self.module = module
        self.config = config
        self.columns = module.weight[0].numel()
        self.hessians = [Hessian(self.columns) for _ in range(_groups(module))]

    def add(self, x: torch.Tensor) -> None:
        parts, samples = _activation_rows(self.module, x.detach())
        for hessian, rows in zip(self.hessians, parts):
            hessian.add(rows, samples=samples)

    def compress(self) -> None:
        module, cfg = self.module, self.config
        weight = module.weight.detach()
        w2 = weight.reshape(weight.shape[0], -1).float().cpu()
        # one weight slice per convolution group: its output channels against its Hessian
        slices = [
            (rows.contiguous(), hessian)
            for rows, hessian in zip(w2.chunk(len(self.hessians), dim=0), self.hessians)
        ]
        nf = cfg.enable_normal_float
        symmetric = cfg.quantization_scheme == "symmetric"
        if isinstance(cfg, ModuleGPTQConfig):
            bits, signed = _bits(cfg.weight_dtype)
            block = cfg.block_size
            if block is not None and isinstance(module, nn.Conv2d):
                block *= module.kernel_size[0] * module.kernel_size[1]
            if block is not None and self.columns % block:
                _log.warning(
                    "skipping %s: block_size %s does not divide %d columns",
                    self.name,
                    cfg.block_size,
                    self.columns,
                )
                return
            res = _stack(
                [
                    kernels.gptq(
                        w,
                        h,
                        bits,
                        symmetric=symmetric,
                        per_channel=cfg.granularity != "per_tensor",
                        normal_float=nf,
                        block_size=block,
                        act_order=cfg.use_activation_order_heuristic,
                        damp=cfg.hessian_dampening,
                        group=cfg.processing_group_size,
                    )
                    for w, h in slices
                ]
            )
            types: list[str] = []
        else:
            bits, signed = _bits(cfg.weight_dtype)
            res = _stack(
                [
                    kernels.sparsegpt(
                        w,
                        h,
                        cfg.target_sparsity,
                        n_m=cfg.n_m_ratio,
                        n_bits=bits,
                        symmetric=symmetric,
                        per_channel=cfg.quantization_granularity != "per_tensor",
                        normal_float=nf,
                        damp=cfg.hessian_dampening,
                        group=cfg.processing_group_size,
                    )
                    for w, h in slices
                ]
            )
            types = ["pruning"]
        dense = res["weight"]
        if types == ["pruning"] or "pruning" in types:
            # ct.convert turns every |w| <= fp16 eps into a pruned zero; do it here too (zero is
            # on every grid), so the module holds exactly what the converted model decompresses to.
            dense[np.abs(dense) <= _FP16_EPS] = 0.0
        new = torch.from_numpy(dense).reshape(weight.shape).to(weight.dtype)
        module.weight.data = new.to(weight.device)
        fields: dict[str, Any] = {}
        if bits is not None:
            scale = torch.from_numpy(res["scale"])
            if nf:
                types.append("palettization")
                lut = torch.tensor(_NF[bits], dtype=torch.float32).reshape(
                    [1] * weight.dim() + [len(_NF[bits]), 1]
                )
                fields.update(lut=lut, palettization_scale=scale)
            else:
                types.append("quantization")
                zp = torch.from_numpy(res["zero_point"])
                if signed:
                    zp = zp - 2 ** (bits - 1)
                fields.update(quantization_n_bits=bits, quantization_scale=scale, zero_point=zp)
        fields["compression_type"] = types
        register_metadata(module, "weight", fields)
        self.loss = res["loss"]


def _stack(results: list[dict]) -> dict:
    """The results of a convolution's groups as one: weights, scales and zero points stacked
    along the output channels, losses summed."""
    if len(results) == 1:
        return results[0]
    out = {"loss": sum(r["loss"] for r in results)}
    for key in results[0]:
        if key != "loss" and results[0][key] is not None:
            out[key] = np.concatenate([r[key] for r in results], axis=0)
    return out


def _bits(dtype: Any) -> tuple[int | None, bool]:
    from ._config import parse_weight_dtype

    bits, signed = parse_weight_dtype(dtype)
    return (bits if bits is not None and bits < 16 else None), signed


class LayerwiseCompressor:
    """Calibration-based GPTQ / SparseGPT (coremltools' ``LayerwiseCompressor``)."""

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = LayerwiseCompressorConfig.coerce(config)
        self.losses: dict[str, float] = {}

    def _layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        spec = self._config.layers
        if spec is None:
            return list(model.named_children())
        out = []
        for name, module in model.named_modules():
            for entry in spec:
                if (isinstance(entry, str) and re.fullmatch(entry, name)) or entry is module:
                    out.append((name, module))
                    break
        return out

    def _cache_inputs(
        self, model: nn.Module, layers: list[tuple[str, nn.Module]], data: Iterable, device: Any
    ) -> tuple[list[tuple], dict]:
        n = self._config.calibration_nsamples
        items = []
        for i, item in enumerate(data):
            if i >= n:
                break
            items.append(item)
        if self._config.input_cacher == "default":
            inputs = [
                to_device(x, device) if isinstance(x, tuple) else (to_device(x, device),)
                for x in items
            ]
            return inputs, {}
        first = layers[0][1]
        inputs: list[tuple] = []
        kwargs: dict = {}

        def hook(mod: nn.Module, args: tuple, kw: dict) -> None:
            inputs.append(tuple(args))
            kwargs.update(kw)  # coremltools keeps one shared kwargs dict (the last item wins)
            raise _StopForward

        handle = first.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for item in items:
                try:
                    model(to_device(item, device))
                except _StopForward:
                    pass
        finally:
            handle.remove()
        return inputs, kwargs

    @torch.no_grad()
    def compress(
        self, dataloader: Iterable, device: Any = "cpu", inplace: bool = False
    ) -> nn.Module:
        model = self._model if inplace else copy.deepcopy(self._model)
        was_training = model.training
        model.eval()
        try:
            layers = self._layers(model)
            if not layers:
                raise ValueError("no layers to compress")
            inputs, kwargs = self._cache_inputs(model, layers, dataloader, device)
            if not inputs:
                raise ValueError("the dataloader gave no calibration samples")
            for index, (bname, block) in enumerate(layers):
                block.to(device)
                states = []
                for sub, module in block.named_modules():
                    if not _supported(module):
                        continue
                    full = f"{bname}.{sub}" if sub else bname
                    cfg = self._config.module_config(full, module)
                    if cfg is None:
                        continue
                    states.append(_LayerState(full, module, cfg))
                last = index == len(layers) - 1
                if len(states) == 1 and states[0].module is block and not kwargs:
                    # The block is the layer: its Hessian comes straight from its inputs.
                    for args in inputs:
                        states[0].add(args[0])
                else:
                    handles = [
                        s.module.register_forward_hook(lambda m, a, o, s=s: s.add(a[0]))
                        for s in states
                    ]
                    try:
                        for args in inputs:
                            block(*args, **kwargs)
                    finally:
                        for h in handles:
                            h.remove()
                for s in states:
                    s.compress()
                    self.losses[s.name] = getattr(s, "loss", float("nan"))
                    s.hessians = []  # free
                if not last:
                    outs = []
                    for args in inputs:
                        out = block(*args, **kwargs)
                        outs.append(out if isinstance(out, tuple) else (out,))
                    inputs = outs
            register_metadata_version(model)
            warn_per_block(model, stacklevel=3)  # under the no_grad decorator
        finally:
            model.train(was_training)
        return model


def hessian_of(module: nn.Module, inputs: Iterable[torch.Tensor]) -> np.ndarray:
    """The Hessian GPTQ uses for ``module`` (Linear or Conv2d) from a sequence of its inputs."""
    state = _LayerState("", module, None)
    for x in inputs:
        state.add(x)
    return state.hessians[0].h
