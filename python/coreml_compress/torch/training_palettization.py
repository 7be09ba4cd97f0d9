"""``TrainingPalettizer``: palettization inside a PyTorch training loop, on the native k-means.

``prepare()`` reparametrizes each selected weight (``torch.nn.utils.parametrize``) as a lookup
``W = LUT[g, indices]`` (times an optional fixed per-output-channel scale): ``LUT`` is a
trainable ``nn.Parameter`` of shape ``[groups, 2^n_bits, cluster_dim]`` that receives the gradients of every
weight assigned to each centroid; ``indices`` is a buffer. The dense weight stays a parameter too
(``parametrizations.weight.original``) and, with ``straight_through=True`` (default), receives
the gradient of ``W`` unchanged (straight-through estimator), so weights can move between
clusters. The LUT and the indices come from the exact weighted 1-D k-means of the native engine
(the kernel of :class:`PostTrainingPalettizer`), run when a module's palettization is enabled
(``milestone``) and again every ``recluster_interval`` steps on the current dense weights; at the
other steps ``step()`` re-assigns every weight to its nearest current centroid. Forward passes,
training and eval alike, use the hard lookup, so the loss seen during training is the loss of
the exported model.

``finalize()`` writes ``LUT[indices]·scale`` into a plain ``weight`` parameter and registers
``compression_type=[2]``, ``lut`` (``[G, 1, K, 1]`` / ``[1, G, K, 1]`` plus one 1 per extra weight
dim) and ``palettization_scale`` when used: ``ct.convert(...,
minimum_deployment_target=ct.target.iOS18)`` emits ``constexpr_lut_to_dense`` (and
``constexpr_blockwise_shift_scale`` for the scale) that decompress to exactly these weights.

This is not coremltools' ``DKMPalettizer`` (soft k-means attention in every forward): it uses
hard assignments with learned centroids, which costs one gather per forward. Its lifecycle and
config names follow ``DKMPalettizer`` where they overlap (``n_bits``, ``granularity``,
``group_size``, ``channel_axis``, ``enable_per_channel_scale``, ``weight_threshold``,
``milestone``; ``prepare``/``step``/``finalize``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import kernels as _kernels
from ..errors import CheckpointError
from . import kernels
from ._config import _check_in, _ModuleConfig, _OptimizationConfig, _plain
from ._parametrize import finalize_weights
from .palettization import _from_matrix, _to_matrix

_log = logging.getLogger(__name__)
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
_CHUNK = 1 << 22  # elements·K per nearest-centroid chunk
_LUT_DTYPES = {"f32": None, "f16": torch.float16, "bf16": torch.bfloat16, "i8": None, "u8": None}


@attrs.define(kw_only=True)
class ModuleTrainingPalettizerConfig(_ModuleConfig):
    """Per-module options.

    ``n_bits`` (1–8), ``granularity`` (``per_tensor`` | ``per_grouped_channel`` with
    ``group_size`` channels per LUT along ``channel_axis``), ``enable_per_channel_scale`` (a
    fixed scale per output channel, taken whenever the weights are clustered: ``max|w|`` with
    ``per_channel_scaling_factor_scheme="abs"``, ``(max − min)/2`` with ``"min_max"``, DKM's
    default),
    ``weight_threshold`` (only weights with more elements are palettized; DKM's default 2048),
    ``lut_dtype`` (DKM's names: ``f32``; ``f16``/``bf16`` round the centroids through that
    type; ``i8``/``u8`` quantize each LUT to 8 bits symmetrically, one scale per LUT, as
    ``PostTrainingPalettizer``'s ``lut_dtype`` does; the forward uses the rounded centroids with
    straight-through gradients, and the 8-bit LUTs are exported as ``[2, 3]``), ``cluster_dim``
    (LUT entries are vectors of that many consecutive channels along ``channel_axis``; clustered
    by the native vector k-means of ``palettize_weights``; exported with ``vector_axis``),
    ``milestone`` (the step at which palettization starts), ``recluster_interval`` (steps between
    native k-means re-clusterings of the dense weights; 0 = only at the milestone),
    ``train_lut`` (centroids are trainable), ``straight_through`` (dense weights get the
    straight-through gradient), ``reassign`` (``step()`` moves weights to their nearest
    centroid).
    """

    n_bits: int = 4
    granularity: str = attrs.field(
        default="per_tensor",
        converter=_plain,
        validator=_check_in(("per_tensor", "per_grouped_channel")),
    )
    group_size: int | None = None
    channel_axis: int = attrs.field(default=0, validator=_check_in((0, 1)))
    enable_per_channel_scale: bool = False
    per_channel_scaling_factor_scheme: str = attrs.field(
        default="abs", validator=_check_in(("abs", "min_max"))
    )
    weight_threshold: int = 2048
    lut_dtype: str = attrs.field(default="f32", validator=_check_in(tuple(_LUT_DTYPES)))
    cluster_dim: int = 1
    milestone: int = 0
    recluster_interval: int = 0
    train_lut: bool = True
    straight_through: bool = True
    reassign: bool = True

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.n_bits <= 8:
            raise ValueError("n_bits must be in 1..8")
        if self.granularity == "per_grouped_channel" and not (self.group_size or 0) > 0:
            raise ValueError("per_grouped_channel needs a positive group_size")
        if self.granularity == "per_tensor" and self.group_size is not None:
            raise ValueError("group_size is only allowed with per_grouped_channel")
        if self.milestone < 0 or self.recluster_interval < 0:
            raise ValueError("milestone and recluster_interval must be >= 0")
        if self.cluster_dim < 1:
            raise ValueError("cluster_dim must be >= 1")
        if self.cluster_dim > 1 and self.enable_per_channel_scale:
            raise ValueError("cluster_dim > 1 and enable_per_channel_scale are mutually exclusive")


@attrs.define(kw_only=True)
class TrainingPalettizerConfig(_OptimizationConfig):
    """Global / per-type / per-name module configs, resolved like coremltools' (an empty config
    palettizes every supported module with the default module config)."""

    _module_cls = ModuleTrainingPalettizerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModuleTrainingPalettizerConfig()


class LutParametrization(nn.Module):
    """``weight = LUT[group(row), indices] · scale`` over the weight's matrix view (rows =
    channels along ``channel_axis``, ``group_size`` consecutive rows per LUT)."""

    def __init__(self, weight: torch.Tensor, cfg: ModuleTrainingPalettizerConfig):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.axis = cfg.channel_axis
        self.k = 2**cfg.n_bits
        self.straight_through = cfg.straight_through
        rows, cols = self._rows(weight.detach()).shape
        self.group_rows = cfg.group_size if cfg.granularity == "per_grouped_channel" else rows
        if rows % self.group_rows:
            raise ValueError(f"group_size {self.group_rows} does not divide {rows} channels")
        self.cd = cfg.cluster_dim
        if self.group_rows % self.cd:
            raise ValueError(f"cluster_dim {self.cd} does not divide {self.group_rows} channels")
        groups = rows // self.group_rows
        self.use_scale = cfg.enable_per_channel_scale
        self.lut_dtype = cfg.lut_dtype
        self.scale_scheme = cfg.per_channel_scaling_factor_scheme
        self.lut = nn.Parameter(
            torch.zeros(groups, self.k, self.cd, dtype=torch.float32, device=weight.device),
            requires_grad=cfg.train_lut,
        )
        self.register_buffer(
            "indices",
            torch.zeros(rows // self.cd, cols, dtype=torch.uint8, device=weight.device),
        )
        self.register_buffer(
            "scale",
            torch.ones((self.shape[0],) + (1,) * (len(self.shape) - 1), device=weight.device),
        )
        self.register_buffer("enabled", torch.tensor(False))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        found = state_dict.get(f"{prefix}lut")
        if found is not None and tuple(found.shape) == tuple(self.lut.shape[:2]):
            raise CheckpointError(
                f"{prefix}lut has shape {list(found.shape)}, the [groups, K] layout of "
                f"checkpoints before the LUT became [groups, K, cluster_dim]; expected "
                f"{list(self.lut.shape)} (add the last axis: lut.unsqueeze(-1))"
            )
        super()._load_from_state_dict(state_dict, prefix, *args)

    # views -------------------------------------------------------------------------------

    def _rows(self, w: torch.Tensor) -> torch.Tensor:
        m = _to_matrix(w, self.axis)
        return m if self.axis == 0 else m.t()

    def _unrows(self, m: torch.Tensor) -> torch.Tensor:
        return _from_matrix(m if self.axis == 0 else m.t(), torch.Size(self.shape), self.axis)

    def _points(self, w: torch.Tensor) -> torch.Tensor:
        """``[rows/cd, cols, cd]``: ``cluster_dim`` consecutive channels at each position."""
        x = self._rows(w)
        return x.reshape(x.shape[0] // self.cd, self.cd, x.shape[1]).transpose(1, 2)

    def _unpoints(self, p: torch.Tensor) -> torch.Tensor:
        return self._unrows(p.transpose(1, 2).reshape(p.shape[0] * self.cd, p.shape[1]))

    def _lut_rows(self, lut: torch.Tensor) -> torch.Tensor:
        """``[rows/cd, K, cd]``: each point row's LUT."""
        return lut.repeat_interleave(self.group_rows // self.cd, dim=0)

    def _gather(self, lut: torch.Tensor) -> torch.Tensor:
        index = self.indices.long().unsqueeze(-1).expand(-1, -1, self.cd)
        return torch.gather(self._lut_rows(lut), 1, index)

    # clustering --------------------------------------------------------------------------

    @torch.no_grad()
    def nearest(self, w: torch.Tensor) -> None:
        """Assigns every weight (vector) to its nearest centroid of the current LUT."""
        x = self._points(w.detach().float() / self.scale)
        lut = self._lut_rows(self.stored_lut().detach())
        step = max(1, _CHUNK // max(1, x.shape[1] * self.k * self.cd))
        for r in range(0, x.shape[0], step):
            d = (x[r : r + step, :, None, :] - lut[r : r + step, None, :, :]).square().sum(-1)
            self.indices[r : r + step] = d.argmin(dim=-1).to(torch.uint8)

    @torch.no_grad()
    def cluster(self, w: torch.Tensor) -> None:
        """Native k-means of the current dense weights, per LUT group: the exact 1-D k-means,
        or with ``cluster_dim > 1`` the vector k-means of ``palettize_weights``."""
        w = w.detach().float()
        if self.use_scale:
            rows = w.reshape(self.shape[0], -1)
            if self.scale_scheme == "abs":
                s = rows.abs().amax(dim=1)
            else:
                s = 0.5 * (rows.amax(dim=1) - rows.amin(dim=1))
            s[s == 0] = 1.0
            self.scale.copy_(s.reshape(self.scale.shape))
        x = self._rows(w / self.scale).contiguous().cpu()
        if self.cd == 1:
            _, luts, _ = kernels.weighted_kmeans(x, None, self.lut.shape[0], self.k)
            lut = torch.from_numpy(luts).unsqueeze(-1)
        else:
            grouped = self.lut.shape[0] > 1
            params = _kernels.palettize(
                x.numpy(),
                int(self.k).bit_length() - 1,
                "kmeans",
                "per_grouped_channel" if grouped else "per_tensor",
                self.group_rows if grouped else 0,
                channel_axis=0,
                cluster_dim=self.cd,
            )
            found = torch.from_numpy(np.ascontiguousarray(params.lut, dtype=np.float32))
            found = found.reshape(self.lut.shape[0], -1, self.cd)
            lut = torch.zeros_like(self.lut, device="cpu")
            lut[:, : found.shape[1]] = found  # fewer distinct vectors: zero-padded
        self.lut.data.copy_(lut.to(self.lut.device))
        self.nearest(w)
        self.enabled.fill_(True)

    # forward -----------------------------------------------------------------------------

    def _lut_scale(self) -> torch.Tensor:
        """One 8-bit symmetric scale per LUT (``max|c| / 127``; 1 for an all-zero LUT)."""
        amax = self.lut.detach().abs().amax(dim=(1, 2), keepdim=True)
        return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))

    def stored_lut(self) -> torch.Tensor:
        """The centroids as ``lut_dtype`` stores them, with straight-through gradients to the
        trained ``lut``."""
        if self.lut_dtype == "f32":
            return self.lut
        if self.lut_dtype in ("i8", "u8"):
            s = self._lut_scale()
            rounded = torch.clamp(torch.round(self.lut.detach() / s), -127, 127) * s
        else:
            rounded = self.lut.detach().to(_LUT_DTYPES[self.lut_dtype]).float()
        return self.lut + (rounded - self.lut).detach()

    def lookup(self) -> torch.Tensor:
        """``LUT[indices]`` in the weight's layout (without the scale)."""
        return self._unpoints(self._gather(self.stored_lut()))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not bool(self.enabled):
            return w
        x = self._points(w / self.scale)
        q = self._gather(self.stored_lut())
        if self.straight_through and w.requires_grad:
            q = q + (x - x.detach())
        return (self._unpoints(q) * self.scale).to(w.dtype)

    def metadata(self) -> dict[str, Any]:
        lut = self.stored_lut().detach().float().cpu().unsqueeze(1 - self.axis)
        for _ in range(len(self.shape) - 2):
            lut = lut.unsqueeze(2)
        fields: dict[str, Any] = {"compression_type": ["palettization"], "lut": lut}
        if self.cd > 1:
            fields["vector_axis"] = self.axis
        if self.lut_dtype in ("i8", "u8"):
            shape = [1] * lut.dim()
            shape[self.axis] = self.lut.shape[0]
            fields.update(
                compression_type=["palettization", "quantization"],
                quantization_n_bits=8,
                quantization_scale=self._lut_scale().cpu().reshape(shape),
            )
            if self.lut_dtype == "u8":  # codes 0..254 around 127, coremltools' uint8 LUTs
                fields["zero_point"] = torch.full(shape, 127, dtype=torch.uint8)
        if self.use_scale:
            fields["palettization_scale"] = self.scale.detach().float().cpu()
        return fields


def _lut_of(module: nn.Module, pname: str = "weight") -> LutParametrization | None:
    if not parametrize.is_parametrized(module, pname):
        return None
    for p in module.parametrizations[pname]:
        if isinstance(p, LutParametrization):
            return p
    return None


class TrainingPalettizer:
    """Palettization-aware fine-tuning::

        palettizer = TrainingPalettizer(model, {"global_config": {"n_bits": 2}})
        model = palettizer.prepare()
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)   # after prepare()
        for x, y in data:
            loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
            palettizer.step()
        exported = palettizer.finalize()   # plain modules + _COREML_ buffers

    The centroids (``...parametrizations.weight.0.lut``) are parameters of the prepared model,
    so the optimizer must be created after ``prepare()``.
    """

    _supported_modules = _SUPPORTED

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = TrainingPalettizerConfig.coerce(config)
        self._step_count = 0
        self._modules: dict[str, ModuleTrainingPalettizerConfig] = {}

    @property
    def step_count(self) -> int:
        return self._step_count

    def _targets(self, model: nn.Module):
        mods = dict(model.named_modules())
        for name, cfg in self._modules.items():
            module = mods.get(name)
            p = None if module is None else _lut_of(module)
            if p is not None:
                yield name, module, p, cfg

    def prepare(self, inplace: bool = False) -> nn.Module:
        if self._modules:
            _log.warning("the model is already prepared; prepare() does nothing")
            return self._model
        model = self._model if inplace else copy.deepcopy(self._model)
        model.train()
        for name, module in model.named_modules():
            if not isinstance(module, _SUPPORTED):
                continue
            cfg = self._config.module_config(name, module)
            if cfg is None or module.weight.numel() <= cfg.weight_threshold:
                continue
            try:
                lut = LutParametrization(module.weight, cfg)
            except ValueError as exc:
                _log.warning("skipping %s: %s", name, exc)
                continue
            parametrize.register_parametrization(module, "weight", lut, unsafe=True)
            self._modules[name] = cfg
            if cfg.milestone == 0:
                lut.cluster(module.parametrizations.weight.original)
        self._model = model
        return model

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Advances the step counter, starts palettization at each module's milestone,
        re-clusters every ``recluster_interval`` steps after it and otherwise re-assigns
        weights to their nearest centroid.

        Clustering replaces a LUT's values in place (the parameter stays the one the
        optimizer holds). With ``optimizer``, that optimizer's state for each replaced LUT
        (e.g. Adam's moments) is dropped, so it restarts from the new centroids; without it the
        state of the old centroids carries over."""
        self._step_count += 1
        for _, module, lut, cfg in self._targets(self._model):
            dense = module.parametrizations.weight.original
            if not bool(lut.enabled):
                if self._step_count >= cfg.milestone:
                    self._cluster(lut, dense, optimizer)
                continue
            since = self._step_count - cfg.milestone
            if cfg.recluster_interval and since % cfg.recluster_interval == 0:
                self._cluster(lut, dense, optimizer)
            elif cfg.reassign:
                lut.nearest(dense)

    @staticmethod
    def _cluster(
        lut: LutParametrization, dense: torch.Tensor, optimizer: torch.optim.Optimizer | None
    ) -> None:
        lut.cluster(dense)
        if optimizer is not None:
            optimizer.state.pop(lut.lut, None)

    @torch.no_grad()
    def report(self) -> dict[str, dict[str, Any]]:
        """Per palettized module (coremltools' DKM report keys): ``device``, ``error`` (RMSE of
        the palettized weight against the dense one), ``#params`` and ``#dtype``."""
        out: dict[str, dict[str, Any]] = {}
        for name, module, lut, _ in self._targets(self._model):
            dense = module.parametrizations.weight.original.detach().float()
            palettized = lut.lookup() * lut.scale if bool(lut.enabled) else dense
            out[name] = {
                "device": dense.device,
                "error": float((palettized - dense).pow(2).mean().sqrt()),
                "#params": dense.numel(),
                "#dtype": f":num_clusters: {lut.k} <{lut.lut_dtype}> dim={lut.cd}",
            }
        return out

    @torch.no_grad()
    def finalize(self, model: nn.Module | None = None, inplace: bool = False) -> nn.Module:
        """Writes ``LUT[indices]·scale`` into plain weights, removes the parametrizations and
        registers the ``_COREML_`` buffers. A module whose milestone was not reached is
        clustered now. Returns a finalized copy unless ``inplace``; the result is in eval
        mode."""

        def export(module: nn.Module) -> tuple[torch.Tensor, dict[str, Any]] | None:
            lut = _lut_of(module)
            if lut is None:
                return None
            if not bool(lut.enabled):
                lut.cluster(module.parametrizations.weight.original)
            return lut.lookup() * lut.scale, lut.metadata()

        out = finalize_weights(self._model if model is None else model, inplace, export)
        if model is None:
            self._model = out
        return out


__all__ = [
    "LutParametrization",
    "ModuleTrainingPalettizerConfig",
    "TrainingPalettizer",
    "TrainingPalettizerConfig",
]
