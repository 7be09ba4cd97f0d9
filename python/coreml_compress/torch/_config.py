"""coremltools-compatible configuration classes for ``coreml_compress.torch``.

Every config accepts what coremltools' does: an instance of this module's classes, an instance
of the coremltools class of the same name (read field by field), a dict (``from_dict``; unknown
keys raise) or a YAML file or stream (``from_yaml``). Module configs are resolved like
coremltools: ``module_name_configs`` (regex, full match, in order), then ``module_type_configs``
(class, then class name), then ``global_config``; a ``None`` value means "leave this module".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs
import torch
import yaml

_DTYPE_BITS = {"int3": 3, "int4": 4, "int8": 8, "uint3": 3, "uint4": 4, "uint8": 8}


def _plain(value: Any) -> Any:
    """Enum members (coremltools' granularity/scheme enums) become their values."""
    return value.value if isinstance(value, enum.Enum) else value


def parse_weight_dtype(dtype: Any, n_bits: int | None = None) -> tuple[int | None, bool]:
    """``(n_bits, signed)`` of a dtype given as a string or torch dtype; ``(None, _)`` for a float
    dtype (no quantization)."""
    if isinstance(dtype, str):
        name = dtype.lower().replace("torch.", "")
        if name in ("float32", "float16", "fp32", "fp16"):
            return None, True
        if name in _DTYPE_BITS:
            return _DTYPE_BITS[name], not name.startswith("u")
        if name.startswith("q") and name[1:] in _DTYPE_BITS:
            return _DTYPE_BITS[name[1:]], not name[1:].startswith("u")
        raise ValueError(f"unsupported weight_dtype {dtype!r}")
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return None, True
        if dtype in (torch.uint8, torch.quint8):
            return (n_bits or 8), False
        if dtype in (torch.int8, torch.qint8):
            return (n_bits or 8), True
    raise ValueError(f"unsupported weight_dtype {dtype!r}")


def _check_in(values: tuple[str, ...]):
    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in values:
            raise ValueError(f"{attribute.name} must be one of {values}, got {value!r}")

    return check


def _foreign_fields(obj: Any, cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in attrs.fields(cls):
        if f.name.startswith("_") or not hasattr(obj, f.name):
            continue
        out[f.name] = _plain(getattr(obj, f.name))
    return out


def _from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    """``cls(**d)``, refusing keys that are not fields of ``cls``."""
    extra = set(d) - {f.name for f in attrs.fields(cls)}
    if extra:
        raise ValueError(f"unknown keys for {cls.__name__}: {sorted(extra)}")
    return cls(**dict(d))


@attrs.define(kw_only=True)
class _ModuleConfig:
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return _from_dict(cls, d)

    @classmethod
    def coerce(cls, obj: Any) -> Any:
        if obj is None or isinstance(obj, cls):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        fields = _foreign_fields(obj, cls)
        n_bits = getattr(obj, "weight_n_bits", None)
        if "weight_dtype" in fields and isinstance(fields["weight_dtype"], torch.dtype):
            bits, signed = parse_weight_dtype(fields["weight_dtype"], n_bits)
            if bits is None:
                fields["weight_dtype"] = "float32"
            else:
                fields["weight_dtype"] = ("int" if signed else "uint") + str(bits)
        return cls(**fields)


@attrs.define(kw_only=True)
class ModuleGPTQConfig(_ModuleConfig):
    """GPTQ options (coremltools' ``ModuleGPTQConfig``; ``"int4"``/``"int8"`` are accepted here
    and give signed codes with zero points shifted by ``2^(n-1)``: the same grid)."""

    weight_dtype: Any = "uint8"
    granularity: str = attrs.field(
        default="per_channel",
        converter=_plain,
        validator=_check_in(("per_channel", "per_tensor", "per_block")),
    )
    quantization_scheme: str = attrs.field(
        default="symmetric", converter=_plain, validator=_check_in(("symmetric", "affine"))
    )
    block_size: int | None = None
    enable_normal_float: bool = False
    hessian_dampening: float = 0.01
    use_activation_order_heuristic: bool = False
    processing_group_size: int = 128
    algorithm: str = attrs.field(default="gptq", validator=_check_in(("gptq",)))

    def __attrs_post_init__(self) -> None:
        bits, _ = parse_weight_dtype(self.weight_dtype)
        if bits is None:
            raise ValueError("GPTQ needs an integer weight_dtype (uint3/uint4/uint8/int4/int8)")
        if self.enable_normal_float and bits not in (3, 4):
            raise ValueError("enable_normal_float needs 3 or 4 bits")
        if self.granularity == "per_block" and self.block_size is None:
            raise ValueError("per_block granularity needs block_size")

    @property
    def weight_n_bits(self) -> int:
        return parse_weight_dtype(self.weight_dtype)[0]  # type: ignore[return-value]


@attrs.define(kw_only=True)
class ModuleSparseGPTConfig(_ModuleConfig):
    """SparseGPT options (coremltools' ``ModuleSparseGPTConfig``; the default also 8-bit
    quantizes the surviving weights, as coremltools' code does)."""

    target_sparsity: float = 0.5
    n_m_ratio: tuple[int, int] | None = attrs.field(
        default=None, converter=lambda v: None if v is None else (int(v[0]), int(v[1]))
    )
    weight_dtype: Any = "uint8"
    quantization_granularity: str = attrs.field(
        default="per_channel",
        converter=_plain,
        validator=_check_in(("per_channel", "per_tensor", "per_block")),
    )
    quantization_scheme: str = attrs.field(
        default="symmetric", converter=_plain, validator=_check_in(("symmetric", "affine"))
    )
    enable_normal_float: bool = False
    hessian_dampening: float = 0.01
    processing_group_size: int = 128
    algorithm: str = attrs.field(default="sparse_gpt", validator=_check_in(("sparse_gpt",)))

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.target_sparsity <= 1.0:
            raise ValueError("target_sparsity must be in [0, 1]")
        parse_weight_dtype(self.weight_dtype)

    @property
    def weight_n_bits(self) -> int | None:
        return parse_weight_dtype(self.weight_dtype)[0]


_ALGORITHMS = {"gptq": ModuleGPTQConfig, "sparse_gpt": ModuleSparseGPTConfig}


def _algorithm_config(obj: Any) -> Any:
    if obj is None or isinstance(obj, (ModuleGPTQConfig, ModuleSparseGPTConfig)):
        return obj
    if isinstance(obj, Mapping):
        algo = obj.get("algorithm", "gptq")
        if algo not in _ALGORITHMS:
            raise ValueError(f"unknown algorithm {algo!r} (expected 'gptq' or 'sparse_gpt')")
        return _ALGORITHMS[algo].from_dict(obj)
    algo = getattr(obj, "algorithm", None)
    if algo not in _ALGORITHMS:
        raise TypeError(f"cannot read a layerwise config from {type(obj).__name__}")
    return _ALGORITHMS[algo].coerce(obj)


def coremltools_config(config_cls: type, config: Any) -> Any:
    """An instance of coremltools' ``config_cls`` from what coremltools' optimizers accept or
    document: ``None`` (its default), an instance, a dict (its ``from_dict``) or a YAML
    path/stream (its ``from_yaml``)."""
    if config is None:
        return config_cls()
    if isinstance(config, config_cls):
        return config
    if isinstance(config, Mapping):
        return config_cls.from_dict(config)
    return config_cls.from_yaml(config)


def _load_yaml(source: Any) -> Any:
    if hasattr(source, "read"):
        return yaml.safe_load(source)
    with open(source) as f:
        return yaml.safe_load(f)


@attrs.define(kw_only=True)
class _OptimizationConfig:
    global_config: Any = None
    module_type_configs: dict = attrs.field(factory=dict)
    module_name_configs: dict = attrs.field(factory=dict)

    _module_cls = None

    @classmethod
    def _module(cls, obj: Any) -> Any:
        return cls._module_cls.coerce(obj)  # type: ignore[attr-defined]

    def __attrs_post_init__(self) -> None:
        self.global_config = self._module(self.global_config)
        self.module_type_configs = {
            k: self._module(v) for k, v in dict(self.module_type_configs or {}).items()
        }
        self.module_name_configs = {
            k: self._module(v) for k, v in dict(self.module_name_configs or {}).items()
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return _from_dict(cls, d)

    @classmethod
    def from_yaml(cls, source: Any) -> Any:
        return cls.from_dict(_load_yaml(source) or {})

    @classmethod
    def coerce(cls, obj: Any) -> Any:
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        if isinstance(obj, str) or hasattr(obj, "read"):
            return cls.from_yaml(obj)
        fields = {}
        for f in attrs.fields(cls):
            if not f.name.startswith("_") and hasattr(obj, f.name):
                fields[f.name] = getattr(obj, f.name)
        return cls(**fields)

    def module_config(self, name: str, module: torch.nn.Module) -> Any:
        for pattern, cfg in self.module_name_configs.items():
            if re.fullmatch(pattern, name):
                return cfg
        for key, cfg in self.module_type_configs.items():
            if key is type(module):
                return cfg
        for key, cfg in self.module_type_configs.items():
            if isinstance(key, str) and key == type(module).__name__:
                return cfg
        return self.global_config


def _cacher_name(value: Any) -> Any:
    if isinstance(value, str):
        return value
    name = getattr(value, "__name__", type(value).__name__)
    return {"DefaultInputCacher": "default", "GPTFirstLayerInputCacher": "gpt"}.get(name, value)


@attrs.define(kw_only=True)
class LayerwiseCompressorConfig(_OptimizationConfig):
    """coremltools' ``LayerwiseCompressorConfig``: ``layers`` (modules or regexes of the blocks
    run in sequence; ``None`` → the model's children), per-module GPTQ/SparseGPT configs chosen by
    their ``algorithm`` key, ``input_cacher`` (``"default"`` or ``"gpt"``) and
    ``calibration_nsamples``."""

    layers: list | None = None
    input_cacher: str = attrs.field(
        default="default",
        converter=lambda v: _cacher_name(v),
        validator=_check_in(("default", "gpt")),
    )
    calibration_nsamples: int = 128

    @classmethod
    def _module(cls, obj: Any) -> Any:
        return _algorithm_config(obj)


@attrs.define(kw_only=True)
class ModuleSKMPalettizerConfig(_ModuleConfig):
    """Sensitive k-means options (coremltools' ``ModuleSKMPalettizerConfig``)."""

    n_bits: int = 4
    lut_dtype: Any = None
    granularity: str = attrs.field(
        default="per_tensor",
        converter=_plain,
        validator=_check_in(("per_tensor", "per_grouped_channel")),
    )
    group_size: int | None = None
    channel_axis: int = attrs.field(default=0, validator=_check_in((0, 1)))
    cluster_dim: int | None = None
    enable_per_channel_scale: bool = False

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.n_bits <= 8:
            raise ValueError("n_bits must be in 1..8")
        if self.granularity == "per_grouped_channel" and not (self.group_size or 0) > 0:
            raise ValueError("per_grouped_channel needs a positive group_size")
        if self.granularity == "per_tensor" and self.group_size is not None:
            raise ValueError("group_size is only allowed with per_grouped_channel")
        if self.cluster_dim is not None and self.cluster_dim < 1:
            raise ValueError(f"cluster_dim must be positive, not {self.cluster_dim}")
        if (self.cluster_dim or 1) > 1 and self.enable_per_channel_scale:
            raise ValueError("cluster_dim > 1 and enable_per_channel_scale are mutually exclusive")
        if self.lut_dtype is not None and parse_weight_dtype(self.lut_dtype)[0] != 8:
            raise ValueError(f"lut_dtype must be int8 or uint8, not {self.lut_dtype!r}")


@attrs.define(kw_only=True)
class ModulePostTrainingPalettizerConfig(ModuleSKMPalettizerConfig):
    """coremltools' ``ModulePostTrainingPalettizerConfig``. Clustering is always the exact
    k-means of the actual values, so the fast-mode options are accepted and ignored."""

    enable_fast_kmeans_mode: bool = True
    rounding_precision: int = 4


@attrs.define(kw_only=True)
class SKMPalettizerConfig(_OptimizationConfig):
    calibration_nsamples: int = 128
    _module_cls = ModuleSKMPalettizerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModuleSKMPalettizerConfig()


@attrs.define(kw_only=True)
class PostTrainingPalettizerConfig(_OptimizationConfig):
    _module_cls = ModulePostTrainingPalettizerConfig

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if (
            self.global_config is None
            and not self.module_type_configs
            and not self.module_name_configs
        ):
            self.global_config = ModulePostTrainingPalettizerConfig()
