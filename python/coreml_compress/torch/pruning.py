"""``MagnitudePruner``: magnitude pruning inside a PyTorch training loop, with coremltools'
``optimize.torch.pruning`` configs, schedules and mask rules.

``prepare()`` reparametrizes each selected weight (``torch.nn.utils.parametrize``) as
``dense · mask``: the optimizer trains the dense weight (``parametrizations.weight.original``),
masked entries get zero gradient, and the mask (a buffer of the parametrization) is recomputed
from the dense weight only when the schedule changes the sparsity, as coremltools does.
``step()`` advances the schedule (counter first, then the scheduled sparsity);
``finalize()`` bakes the zeros into a plain ``weight`` parameter and registers
``compression_type=[1]`` (``_COREML_`` buffers), which ``ct.convert(...,
minimum_deployment_target=ct.target.iOS18)`` turns into ``constexpr_sparse_to_dense``.

Masks (coremltools' rules): magnitude ``|w|`` (``per_scalar``, and always for rank-2 weights) or
the L2 norm per kernel / per output channel for rank ≥ 3; ``block_size > 1`` replaces each
magnitude by the L2 norm of its block of consecutive output channels (zero-padded); the
``ceil(n·(1 − s))`` largest components are kept (ties keep more). ``n_m_ratio=(n, m)`` zeroes the
``n`` smallest of every ``m`` along ``dim`` (scheduled: ``int(s·m)`` zeros, unstructured while that
is 0). Schedules: :class:`ConstantSparsityScheduler` (target from ``begin_step`` on) and
:class:`PolynomialDecayScheduler` (at the i-th of ``update_steps``:
``target + (initial − target)·(1 − i/(len − 1))^power``).

Note: ``ct.convert`` zeroes every surviving value with ``|w| ≤ 2⁻¹⁰`` (fp16 epsilon) when it
builds the sparse op; such tiny survivors are reported by :meth:`MagnitudePruner.finalize` in
the log.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._config import _check_in, _ModuleConfig, _OptimizationConfig
from ._metadata import metadata_of, register_metadata, register_metadata_version
from ._parametrize import remove as remove_parametrization

_log = logging.getLogger(__name__)
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FP16_EPS = 2.0**-10


# ----------------------------------------------------------------------------------------------
# schedules


def _steps(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        m = re.fullmatch(r"\s*range\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?\)\s*", value)
        if not m:
            raise ValueError(f"update_steps {value!r}: expected a list of ints or 'range(...)'")
        args = [int(g) for g in m.groups() if g is not None]
        return tuple(range(*args))
    if torch.is_tensor(value):
        value = value.tolist()
    out = []
    for v in value:
        if int(v) != v or v < 0:
            raise ValueError(f"update_steps must be non-negative integers, got {value}")
        out.append(int(v))
    return tuple(out)


@attrs.define
class PolynomialDecayScheduler:
    """Sparsity ``target + (initial − target)·(1 − t)^power`` at the ``i``-th update step, with
    ``t = i/(len(update_steps) − 1)`` (``t = 1`` for a single step); unchanged at other steps."""

    update_steps: tuple[int, ...] = attrs.field(converter=_steps)
    power: int = 3

    def compute_sparsity(self, step_count: int, prev_sparsity: float, config: Any) -> float:
        if step_count not in self.update_steps:
            return prev_sparsity
        i = self.update_steps.index(step_count)
        n = len(self.update_steps)
        t = 1.0 if n == 1 else i / (n - 1)
        initial = getattr(config, "initial_sparsity", 0.0)
        target = config.target_sparsity
        return target + (initial - target) * (1.0 - t) ** self.power


@attrs.define
class ConstantSparsityScheduler:
    """Sparsity ``target_sparsity`` from ``begin_step`` on; unchanged before."""

    begin_step: int = 0

    def compute_sparsity(self, step_count: int, prev_sparsity: float, config: Any) -> float:
        return config.target_sparsity if step_count >= self.begin_step else prev_sparsity


def _scheduler(value: Any) -> Any:
    if isinstance(value, (PolynomialDecayScheduler, ConstantSparsityScheduler)):
        return value
    if isinstance(value, Mapping):
        if "update_steps" in value:
            return PolynomialDecayScheduler(**dict(value))
        return ConstantSparsityScheduler(**dict(value))
    if hasattr(value, "update_steps"):  # coremltools' scheduler objects
        return PolynomialDecayScheduler(value.update_steps, int(getattr(value, "power", 3)))
    if hasattr(value, "begin_step"):
        return ConstantSparsityScheduler(int(value.begin_step))
    raise TypeError(f"unsupported pruning scheduler {value!r}")


# ----------------------------------------------------------------------------------------------
# configs


@attrs.define(kw_only=True)
class ModuleMagnitudePrunerConfig(_ModuleConfig):
    """coremltools' ``ModuleMagnitudePrunerConfig`` (same fields and defaults)."""

    scheduler: Any = attrs.field(
        factory=lambda: ConstantSparsityScheduler(begin_step=0), converter=_scheduler
    )
    initial_sparsity: float = attrs.field(default=0.0, converter=float)
    target_sparsity: float = attrs.field(default=0.5, converter=float)
    granularity: str = attrs.field(
        default="per_scalar",
        validator=_check_in(("per_scalar", "per_kernel", "per_channel", "per_layer")),
    )
    block_size: int = 1
    n_m_ratio: tuple[int, int] | None = attrs.field(
        default=None, converter=lambda v: None if v is None else (int(v[0]), int(v[1]))
    )
    dim: int = 1
    param_name: str = "weight"

    def __attrs_post_init__(self) -> None:
        for name in ("initial_sparsity", "target_sparsity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.n_m_ratio is not None:
            n, m = self.n_m_ratio
            if m <= 0 or n > m:
                raise ValueError(f"n_m_ratio {self.n_m_ratio}: need 0 < m and n <= m")
            if self.block_size > 1:
                raise ValueError("n_m_ratio and block_size > 1 are mutually exclusive")
            if self.granularity != "per_scalar":
                raise ValueError("n_m_ratio needs granularity per_scalar")
            if self.dim not in (0, 1):
                raise ValueError("n:m dim must be 0 or 1")


@attrs.define(kw_only=True)
class MagnitudePrunerConfig(_OptimizationConfig):
    """coremltools' ``MagnitudePrunerConfig`` (an empty config prunes every supported module
    with the default module config)."""

    _module_cls = ModuleMagnitudePrunerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModuleMagnitudePrunerConfig()


# ----------------------------------------------------------------------------------------------
# masks


def magnitude_mask(
    weight: torch.Tensor, sparsity: float, block_size: int = 1, granularity: str = "per_scalar"
) -> torch.Tensor:
    """coremltools' magnitude-ranked mask (float 0/1, broadcastable to ``weight``)."""
    w = weight.detach()
    rank = w.dim()
    if granularity == "per_scalar" or rank <= 2:
        mag = w.abs()
        components = w.numel()
    elif granularity in ("per_kernel", "per_channel"):
        start = 2 if granularity == "per_kernel" else 1
        components = w.shape[0] * w.shape[1] if start == 2 else w.shape[0]
        mag = torch.linalg.vector_norm(w.flatten(start), dim=-1)
        mag = mag.reshape(mag.shape + (1,) * (rank - start))
    else:
        raise ValueError(f"granularity {granularity!r} is not supported for a rank-{rank} weight")
    if block_size > 1:
        c = mag.shape[0]
        pad = (-c) % block_size
        if pad:
            mag = torch.cat([mag, mag.new_zeros((pad,) + tuple(mag.shape[1:]))])
        blocks = mag.reshape((mag.shape[0] // block_size, block_size) + tuple(mag.shape[1:]))
        norm = blocks.pow(2).sum(1, keepdim=True).sqrt().expand_as(blocks)
        mag = norm.reshape(mag.shape)[:c]
    # fp32 arithmetic of the kept count, as coremltools computes it
    keep = int(torch.ceil(torch.tensor(components, dtype=torch.float32) * (1 - sparsity)))
    flat = mag.flatten()
    thr = flat.max() + 1.0 if keep == 0 else torch.topk(flat, keep, sorted=True).values[-1]
    return (mag >= thr).to(w.dtype).expand_as(w).contiguous()


def n_m_mask(weight: torch.Tensor, n: int, m: int, dim: int = 1) -> torch.Tensor:
    """coremltools' n:m mask: the ``n`` smallest ``|w|`` of every ``m`` consecutive values along
    ``dim`` (0 or 1; for rank > 2 the spatial positions are rows) are zeroed."""
    w = weight.detach()
    rank = w.dim()
    if dim == 0:
        w = w.transpose(0, 1)
    t = w.permute(list(range(2, rank)) + [0, 1]) if rank > 2 else w
    permuted = t.shape
    rows = t.reshape(-1, t.shape[-1]).abs()
    pad = m - rows.shape[-1] % m  # coremltools pads a whole group when already divisible
    padded = nn.functional.pad(rows, (0, pad))
    groups = padded.reshape(-1, m)
    order = torch.argsort(groups, dim=1)[:, :n]
    mask = torch.ones_like(groups).scatter_(1, order, 0.0)
    mask = mask.reshape(padded.shape)[:, : rows.shape[-1]]
    if rank > 2:
        mask = mask.reshape(permuted).permute([rank - 2, rank - 1] + list(range(rank - 2)))
    if dim == 0:
        mask = mask.transpose(0, 1)
    return mask.contiguous().to(weight.dtype)


def scheduled_mask(weight: torch.Tensor, sparsity: float, cfg: ModuleMagnitudePrunerConfig):
    if cfg.n_m_ratio is not None:
        m = cfg.n_m_ratio[1]
        zeros = int(sparsity * m)
        if zeros == 0:
            return magnitude_mask(weight, sparsity, 1, cfg.granularity)
        return n_m_mask(weight, zeros, m, cfg.dim)
    return magnitude_mask(weight, sparsity, cfg.block_size, cfg.granularity)


# ----------------------------------------------------------------------------------------------
# the pruner


class _Mask(nn.Module):
    """Parametrization ``weight = original · mask``."""

    def __init__(self, mask: torch.Tensor, sparsity: float):
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("amount", torch.tensor(float(sparsity)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _mask_of(module: nn.Module, pname: str) -> _Mask | None:
    if not parametrize.is_parametrized(module, pname):
        return None
    for p in module.parametrizations[pname]:
        if isinstance(p, _Mask):
            return p
    return None


class MagnitudePruner:
    """Training-time magnitude pruning with coremltools' API::

        pruner = MagnitudePruner(model, config)
        model = pruner.prepare()
        for x, y in data:
            loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
            pruner.step()
        pruned = pruner.finalize()

    The optimizer must be created after ``prepare()`` (the dense weight becomes
    ``<module>.parametrizations.<param>.original``).
    """

    _supported_modules = _SUPPORTED

    def __init__(self, model: nn.Module, config: Any = None):
        self._model = model
        self._config = MagnitudePrunerConfig.coerce(config)
        self._step_count = 0
        self._info: dict[str, dict[str, Any]] = {}

    @property
    def step_count(self) -> int:
        return self._step_count

    def prepare(self, inplace: bool = False) -> nn.Module:
        if self._info:
            _log.warning("the model is already prepared for pruning; prepare() does nothing")
            return self._model
        model = self._model if inplace else copy.deepcopy(self._model)
        for name, module in model.named_modules():
            if not isinstance(module, _SUPPORTED):
                continue
            cfg = self._config.module_config(name, module)
            if cfg is None:
                continue
            cfg = copy.deepcopy(cfg)
            if cfg.n_m_ratio is not None:
                cfg.target_sparsity = cfg.n_m_ratio[0] / cfg.n_m_ratio[1]
            pname = cfg.param_name
            with torch.no_grad():
                mask = scheduled_mask(getattr(module, pname), cfg.initial_sparsity, cfg)
            parametrize.register_parametrization(
                module, pname, _Mask(mask, cfg.initial_sparsity), unsafe=True
            )
            self._info[name] = {"config": cfg, "sparsity": cfg.initial_sparsity}
        self._model = model
        return model

    @torch.no_grad()
    def step(self) -> None:
        if not self._info:
            _log.warning("prepare() must be called before step(); step() does nothing")
            return
        self._step_count += 1
        modules = dict(self._model.named_modules())
        for name, info in self._info.items():
            cfg = info["config"]
            module = modules[name]
            masker = _mask_of(module, cfg.param_name)
            if masker is None:
                continue
            s = cfg.scheduler.compute_sparsity(self._step_count, info["sparsity"], cfg)
            if s != info["sparsity"]:
                dense = module.parametrizations[cfg.param_name].original
                masker.mask.copy_(scheduled_mask(dense, s, cfg))
                masker.amount.fill_(s)
            info["sparsity"] = s

    def sparsity(self) -> dict[str, float]:
        """Current scheduled sparsity per pruned module."""
        return {name: info["sparsity"] for name, info in self._info.items()}

    def report(self) -> dict[str, dict[str, float]]:
        """``{module: {"#params", "unstructured_weight_sparsity"}}`` of the masked weights."""
        out = {}
        modules = dict(self._model.named_modules())
        with torch.no_grad():
            for name, info in self._info.items():
                w = getattr(modules[name], info["config"].param_name)
                out[name] = {
                    "#params": w.numel(),
                    "unstructured_weight_sparsity": float((w == 0).float().mean()),
                }
        return out

    @torch.no_grad()
    def finalize(self, model: nn.Module | None = None, inplace: bool = False) -> nn.Module:
        """Bakes ``dense · mask`` into a plain parameter and registers ``compression_type``
        ``[1]``; a weight that already carries metadata (finalized palettizer or quantizer)
        gets pruning put first (``[1, 2]`` / ``[1, 3]``), as coremltools' joint flow does.
        Returns a finalized copy unless ``inplace``."""
        target = self._model if model is None else model
        out = target if inplace else copy.deepcopy(target)
        register_metadata_version(out)
        modules = dict(out.named_modules())
        for name, info in self._info.items():
            module = modules.get(name)
            pname = info["config"].param_name
            if module is None or _mask_of(module, pname) is None:
                continue
            remove_parametrization(module, pname, leave_parametrized=True)
            w = getattr(module, pname)
            tiny = int(((w != 0) & (w.abs() <= _FP16_EPS)).sum())
            if tiny:
                _log.info(
                    "%s: %d surviving weights are ≤ 2^-10 and ct.convert will zero them", name, tiny
                )
            fields: dict[str, Any] = dict(metadata_of(module, pname))
            earlier = [int(t) for t in fields.pop("compression_type", torch.tensor([])).tolist()]
            fields["compression_type"] = [1] + [t for t in earlier if t != 1]
            register_metadata(module, pname, fields)
        if model is None:
            self._model = out
        return out


__all__ = [
    "ConstantSparsityScheduler",
    "MagnitudePruner",
    "MagnitudePrunerConfig",
    "ModuleMagnitudePrunerConfig",
    "PolynomialDecayScheduler",
    "magnitude_mask",
    "n_m_mask",
]
