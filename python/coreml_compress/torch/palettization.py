"""Sensitive k-means (coremltools' ``SKMPalettizer``) and data-free ``PostTrainingPalettizer`` on
the native exact weighted 1-D k-means.

Supported modules: ``nn.Linear``, ``nn.Embedding``, ``nn.Conv2d`` (weight). A weight is viewed as
a matrix (Conv2d: ``[C_out, C_in·kh·kw]`` for ``channel_axis=0``, ``[C_out·kh·kw, C_in]`` for
``channel_axis=1``), cut into LUT groups of ``group_size`` channels along the axis (or one group),
optionally divided by a per-output-channel abs-max scale, and each group is clustered by the
exact weighted k-means (weights: the normalised Fisher information for SKM, ones for PTP). The
module keeps the palettized dense weight and gets ``compression_type=[2]``, ``lut`` (weight rank
+ 2) and optionally ``palettization_scale``. With ``lut_dtype`` int8/uint8 each LUT is then
linearly quantized (symmetric, one scale per LUT, coremltools' ``compute_qparams``, on the native
kernel), weights take the dequantized centroid of their cluster, and the metadata becomes
``[2, 3]`` with the LUT's ``quantization_scale`` (and ``zero_point`` for uint8), which
``ct.convert`` turns into an int8 LUT followed by ``constexpr_blockwise_shift_scale``. With
``cluster_dim > 1`` (vector palettization) see :func:`_palettize_vectors`; the metadata then also
holds ``vector_axis``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import kernels as _kernels
from . import kernels
from ._config import PostTrainingPalettizerConfig, SKMPalettizerConfig, parse_weight_dtype
from ._metadata import register_metadata, register_metadata_version

_log = logging.getLogger(__name__)
_SUPPORTED = (nn.Linear, nn.Embedding, nn.Conv2d)


def _to_matrix(w: torch.Tensor, axis: int) -> torch.Tensor:
    if w.dim() == 2:
        return w
    if axis == 0:
        return w.reshape(w.shape[0], -1)
    return w.transpose(0, 1).flatten(1).transpose(0, 1)


def _from_matrix(m: torch.Tensor, shape: torch.Size, axis: int) -> torch.Tensor:
    if len(shape) == 2:
        return m.reshape(shape)
    if axis == 0:
        return m.reshape(shape)
    c_out, c_in = shape[0], shape[1]
    return m.transpose(0, 1).reshape((c_in, c_out) + tuple(shape[2:])).transpose(0, 1)


def palettize_weight(
    weight: torch.Tensor, cfg: Any, importance: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """Palettizes one weight; returns ``(dense, metadata fields)`` or ``None`` when the config
    does not fit the shape (coremltools skips such weights with a warning)."""
    if (cfg.cluster_dim or 1) > 1:
        return _palettize_vectors(weight, cfg, importance)
    shape = weight.shape
    axis = cfg.channel_axis
    k = 2**cfg.n_bits
    w = weight.detach().float().cpu()
    scale = None
    if cfg.enable_per_channel_scale:
        flat = w.reshape(shape[0], -1)
        scale = flat.abs().amax(dim=1)
        scale[scale == 0] = 1.0
        w = w / scale.reshape([-1] + [1] * (w.dim() - 1))
    m = _to_matrix(w, axis)
    imp = None if importance is None else _to_matrix(importance.detach().float().cpu(), axis)
    n_ch = m.shape[axis]
    if cfg.granularity == "per_grouped_channel":
        gs = cfg.group_size
        if n_ch % gs:
            return None
        groups = n_ch // gs
    else:
        groups = 1
    if axis == 1:
        m = m.t()
        imp = None if imp is None else imp.t()
    m = m.contiguous()
    dense, luts, _ = kernels.weighted_kmeans(
        m, None if imp is None else imp.contiguous(), groups, k
    )
    d = torch.from_numpy(dense).reshape(m.shape)
    lut_q = None
    if cfg.lut_dtype is not None:
        luts, d, lut_q = _quantized_luts(luts, d, parse_weight_dtype(cfg.lut_dtype)[1])
    if axis == 1:
        d = d.t()
    d = _from_matrix(d, shape, axis)
    lut = torch.from_numpy(luts)  # [G, K]
    lut = lut.unsqueeze(1 - axis).unsqueeze(-1)  # [G,1,K,1] or [1,G,K,1]
    for _ in range(len(shape) - 2):
        lut = lut.unsqueeze(2)
    fields: dict[str, Any] = {"compression_type": ["palettization"], "lut": lut}
    if lut_q is not None:
        fields.update(_lut_quantization_fields(lut_q, axis, lut.dim()))
    if scale is not None:
        d = d * scale.reshape([-1] + [1] * (d.dim() - 1))
        fields["palettization_scale"] = scale.reshape([-1] + [1] * (len(shape) - 1))
    return d.to(weight.dtype), fields


_LLOYD_ITERATIONS = 30


def _palettize_vectors(
    weight: torch.Tensor, cfg: Any, importance: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, Any]] | None:
    """Vector palettization: points are ``cluster_dim`` consecutive channels along
    ``channel_axis`` at one position of the other axes, one LUT of ``2^n_bits`` vectors per
    channel group. Clustered by the native vector k-means (the kernel of
    ``palettize_weights``); with an importance (SKM), refined by weighted Lloyd iterations from
    that start, each vector weighted by the summed importance of its elements (coremltools'
    SKM weighting), which only lowers the weighted error."""
    axis, cd = cfg.channel_axis, cfg.cluster_dim
    w = weight.detach().float().cpu()
    channels = w.shape[axis]
    group = cfg.group_size if cfg.granularity == "per_grouped_channel" else channels
    if channels % cd or channels % group or group % cd:
        return None
    params = _kernels.palettize(
        w.numpy(),
        cfg.n_bits,
        "kmeans",
        cfg.granularity,
        group or 0,
        channel_axis=axis,
        cluster_dim=cd,
    )
    if params is None:
        return None
    k = 2**cfg.n_bits
    luts = torch.from_numpy(np.ascontiguousarray(params.lut, dtype=np.float32)).reshape(-1, k, cd)
    # points [channels/cd, positions, cd], vector rows of a LUT group contiguous
    points = w.movedim(axis, 0).reshape(channels // cd, cd, -1).transpose(1, 2)
    labels = (
        torch.from_numpy(params.indices.astype(np.int64))
        .movedim(axis, 0)
        .reshape(channels // cd, -1)
    )
    per_group = group // cd
    if importance is not None:
        vector_importance = (
            importance.detach()
            .float()
            .cpu()
            .movedim(axis, 0)
            .reshape(channels // cd, cd, -1)
            .sum(1)
        )
        for g in range(luts.shape[0]):
            rows = slice(g * per_group, (g + 1) * per_group)
            labels[rows] = _weighted_lloyd(
                points[rows].reshape(-1, cd),
                vector_importance[rows].reshape(-1),
                luts[g],
                labels[rows].reshape(-1),
            ).reshape(per_group, -1)
    dense_points = luts[torch.arange(luts.shape[0]).repeat_interleave(per_group)[:, None], labels]
    lut_q = None
    if cfg.lut_dtype is not None:
        flat, dense_flat, lut_q = _quantized_luts(
            luts.reshape(luts.shape[0], -1).numpy(),
            dense_points.reshape(luts.shape[0], -1),
            parse_weight_dtype(cfg.lut_dtype)[1],
        )
        luts = torch.from_numpy(flat).reshape(luts.shape)
        dense_points = dense_flat.reshape(dense_points.shape)
    rest = [s for i, s in enumerate(w.shape) if i != axis]
    dense = dense_points.transpose(1, 2).reshape([channels, *rest]).movedim(0, axis)
    lut = luts.reshape(params.lut.shape)
    fields: dict[str, Any] = {
        "compression_type": ["palettization"],
        "lut": lut,
        "vector_axis": axis,
    }
    if lut_q is not None:
        fields.update(_lut_quantization_fields(lut_q, axis, lut.dim()))
    return dense.contiguous().to(weight.dtype), fields


def _weighted_lloyd(
    x: torch.Tensor, weights: torch.Tensor, lut: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Weighted Lloyd iterations on ``lut`` (updated in place) from ``labels``; returns the
    final labels. Empty clusters keep their centroid."""
    for _ in range(_LLOYD_ITERATIONS):
        sums = torch.zeros_like(lut).index_add_(0, labels, x * weights[:, None])
        mass = torch.zeros(lut.shape[0]).index_add_(0, labels, weights)
        used = mass > 0
        lut[used] = sums[used] / mass[used, None]
        new = torch.cdist(x, lut).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def _quantized_luts(
    luts: np.ndarray, dense: torch.Tensor, signed: bool
) -> tuple[np.ndarray, torch.Tensor, Any]:
    """``(dequantized LUTs [G, K], weights on them, QuantParams)``: each LUT row quantized to 8
    bits symmetrically by the native kernel, each weight moved to its centroid's dequantized
    value (its centroid is the LUT entry it equals)."""
    q = _kernels.quantize(
        luts,
        dtype="int8" if signed else "uint8",
        mode="linear_symmetric",
        granularity="per_block",
        block_size=[1, 0],
    )
    deq = torch.from_numpy(np.ascontiguousarray(_kernels.dequantize(q), dtype=np.float32))
    lut = torch.from_numpy(luts)
    rows = dense.reshape(lut.shape[0], -1)
    out = torch.empty_like(rows)
    for g in range(lut.shape[0]):
        ordered, perm = torch.sort(lut[g], stable=True)
        pos = torch.searchsorted(ordered, rows[g]).clamp_max(lut.shape[1] - 1)
        out[g] = deq[g][perm[pos]]
    return deq.numpy(), out.reshape(dense.shape), q


def _lut_quantization_fields(q: Any, axis: int, lut_rank: int) -> dict[str, Any]:
    """The LUT quantization metadata: one scale (and zero point) per LUT, laid out along
    ``axis`` like the LUTs and padded with 1s to the LUT's rank, as coremltools stores it."""
    shape = [1] * lut_rank
    shape[axis] = q.scale.shape[0]
    fields: dict[str, Any] = {
        "compression_type": ["palettization", "quantization"],
        "quantization_n_bits": 8,
        "quantization_scale": torch.from_numpy(
            np.ascontiguousarray(q.scale, dtype=np.float32)
        ).reshape(shape),
    }
    if q.offset is not None:
        fields["zero_point"] = torch.from_numpy(np.ascontiguousarray(q.offset)).reshape(shape)
    return fields


def normalized_sensitivity(fisher: torch.Tensor) -> torch.Tensor:
    """coremltools' post-processing of the summed squared gradients of one tensor."""
    v = 100.0 * fisher.detach().float()
    if not torch.any(v != 0):
        return torch.ones_like(v)
    v = v / v.max()
    nonzero = v[v != 0]
    v[v == 0] = nonzero.min()
    return v.clamp_min(1e-12)


def fisher_information(
    model: nn.Module,
    dataloader: Iterable,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    nsamples: int,
    only: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``{param name: Σ_items (∂loss/∂θ)²}`` over the first ``nsamples`` items (the model's
    state is restored afterwards). With ``only``, gradients of other parameters are not
    computed at all."""
    params = {
        n: p for n, p in model.named_parameters() if p.requires_grad and (only is None or n in only)
    }
    frozen = [p for n, p in model.named_parameters() if p.requires_grad and n not in params]
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    saved = copy.deepcopy(model.state_dict())
    for p in frozen:
        p.requires_grad_(False)
    try:
        for i, item in enumerate(dataloader):
            if i >= nsamples:
                break
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model, item)
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    acc[n] += p.grad.detach().float() ** 2
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
    return acc


class _Palettizer:
    _config_cls: Any = None

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = self._config_cls.coerce(config)

    def _run(self, model: nn.Module, sensitivity: dict[str, torch.Tensor] | None) -> nn.Module:
        for name, module in model.named_modules():
            if not isinstance(module, _SUPPORTED):
                continue
            cfg = self._config.module_config(name, module)
            if cfg is None:
                continue
            imp = None
            if sensitivity is not None:
                key = f"{name}.weight" if name else "weight"
                if key not in sensitivity:
                    continue
                imp = sensitivity[key]
            out = palettize_weight(module.weight, cfg, imp)
            if out is None:
                _log.warning(
                    "skipping %s: group_size or cluster_dim does not divide the channel axis", name
                )
                continue
            dense, fields = out
            with torch.no_grad():
                module.weight.data = dense.to(module.weight.device)
            register_metadata(module, "weight", fields)
        register_metadata_version(model)
        return model


class PostTrainingPalettizer(_Palettizer):
    """Data-free palettization (coremltools' ``PostTrainingPalettizer``), exact k-means."""

    _config_cls = PostTrainingPalettizerConfig

    def compress(self, num_kmeans_workers: int = 1, inplace: bool = False) -> nn.Module:
        model = self._model if inplace else copy.deepcopy(self._model)
        with torch.no_grad():
            return self._run(model, None)


class SKMPalettizer(_Palettizer):
    """Sensitive k-means (coremltools' ``SKMPalettizer``): Fisher information from calibration
    data weights an exact 1-D k-means per LUT group."""

    _config_cls = SKMPalettizerConfig

    def compute_sensitivity(
        self,
        dataloader: Iterable,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        num_sensitivity_workers: int = 1,
        fsdp_auto_wrap_policy: Any = None,
    ) -> dict[str, torch.Tensor]:
        """The normalised Fisher information of every weight the config palettizes, in this
        process. ``num_sensitivity_workers`` and ``fsdp_auto_wrap_policy`` follow coremltools:
        more than one worker needs CUDA (without it coremltools logs a warning and uses one
        process, where the wrap policy is unused, and so does this); with CUDA, coremltools
        shards the model over GPU workers with FSDP, which the engine does not do: a warning
        says so and coremltools' ``SKMPalettizer`` computes the sensitivities (the same sum of
        squared gradients, spread over the workers); the k-means stays the engine's."""
        if num_sensitivity_workers > 1 and not torch.cuda.is_available():
            _log.warning(
                "num_sensitivity_workers > 1 is only supported on GPUs with CUDA; using one "
                "process (fsdp_auto_wrap_policy is unused there)"
            )
        elif num_sensitivity_workers > 1:
            return self._coremltools_sensitivity(
                dataloader, loss_fn, num_sensitivity_workers, fsdp_auto_wrap_policy
            )
        needed = {
            f"{name}.weight" if name else "weight"
            for name, module in self._model.named_modules()
            if isinstance(module, _SUPPORTED)
            and self._config.module_config(name, module) is not None
        }
        fisher = fisher_information(
            self._model, dataloader, loss_fn, self._config.calibration_nsamples, needed
        )
        return {n: normalized_sensitivity(v) for n, v in fisher.items()}

    def _coremltools_sensitivity(
        self,
        dataloader: Iterable,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        num_sensitivity_workers: int,
        fsdp_auto_wrap_policy: Any,
    ) -> dict[str, torch.Tensor]:
        from coremltools.optimize.torch.palettization import SKMPalettizerConfig as CtConfig

        from .patch import coremltools_original

        warnings.warn(
            f"coreml_compress: SKMPalettizer sensitivities with num_sensitivity_workers="
            f"{num_sensitivity_workers} (FSDP over CUDA workers, fsdp_auto_wrap_policy="
            f"{fsdp_auto_wrap_policy!r}) are computed by coremltools' own code; the engine "
            "computes them in one process only",
            RuntimeWarning,
            stacklevel=3,
        )
        ct_config = CtConfig(calibration_nsamples=self._config.calibration_nsamples)
        original = coremltools_original("palettization", "SKMPalettizer")
        return original(self._model, ct_config).compute_sensitivity(
            dataloader,
            loss_fn,
            num_sensitivity_workers=num_sensitivity_workers,
            fsdp_auto_wrap_policy=fsdp_auto_wrap_policy,
        )

    def compress(
        self,
        dataloader: Iterable | None = None,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        sensitivity_path: str | None = None,
        num_kmeans_workers: int = 1,
        num_sensitivity_workers: int = 1,
        inplace: bool = False,
        fsdp_auto_wrap_policy: Any = None,
        sensitivity: dict[str, torch.Tensor] | None = None,
    ) -> nn.Module:
        if sensitivity is None:
            if sensitivity_path is not None:  # coremltools: a given path is read, not written
                sensitivity = torch.load(sensitivity_path)
            elif dataloader is not None and loss_fn is not None:
                sensitivity = self.compute_sensitivity(
                    dataloader, loss_fn, num_sensitivity_workers, fsdp_auto_wrap_policy
                )
            else:
                raise ValueError("SKMPalettizer needs dataloader and loss_fn, or sensitivity_path")
        model = self._model if inplace else copy.deepcopy(self._model)
        with torch.no_grad():
            return self._run(model, sensitivity)
