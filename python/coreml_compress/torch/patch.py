"""The ``coremltools.optimize.torch`` side of ``patch_coremltools(torch=True)``.

Each routed coremltools class name (``DKMPalettizer``, ``PostTrainingPalettizer``,
``SKMPalettizer``, ``LinearQuantizer``, ``PostTrainingQuantizer``, ``MagnitudePruner``,
``LayerwiseCompressor``) is rebound, in every ``coremltools.optimize.torch`` module that exports
it, to a stand-in whose construction reads the config the way coremltools' class does (its own
config object; a dict or a YAML path/stream go through its config class's ``from_dict`` /
``from_yaml``) and returns this engine's implementation. When the config or the model asks for
something the implementation does not do (an option with a non-default value it does not
implement, a value it refuses, a module type it does not handle), one ``RuntimeWarning`` names
each such thing and the instance is coremltools' original class, with the same arguments.
:func:`unpatch` rebinds the originals.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

import attrs
from torch import nn

from ._config import coremltools_config

# (coremltools package, class, its config class, the engine's class as "module:name")
_ROUTES = (
    ("palettization", "DKMPalettizer", "DKMPalettizerConfig", "dkm:DKMPalettizer"),
    (
        "palettization",
        "PostTrainingPalettizer",
        "PostTrainingPalettizerConfig",
        "palettization:PostTrainingPalettizer",
    ),
    ("palettization", "SKMPalettizer", "SKMPalettizerConfig", "palettization:SKMPalettizer"),
    (
        "quantization",
        "LinearQuantizer",
        "LinearQuantizerConfig",
        "quantization_aware:LinearQuantizer",
    ),
    (
        "quantization",
        "PostTrainingQuantizer",
        "PostTrainingQuantizerConfig",
        "quantization:PostTrainingQuantizer",
    ),
    ("pruning", "MagnitudePruner", "MagnitudePrunerConfig", "pruning:MagnitudePruner"),
    (
        "layerwise_compression",
        "LayerwiseCompressor",
        "LayerwiseCompressorConfig",
        "layerwise:LayerwiseCompressor",
    ),
)
# coremltools options the engine's class takes with the same meaning under another form, or
# that do not change its result (PTP's fast mode approximates the exact k-means run here).
_EQUIVALENT = {
    "weight_n_bits",
    "enable_fast_kmeans_mode",
    "rounding_precision",
    "activation_observer",
}
# module types coremltools' class compresses that the engine's class does not
_NOT_HANDLED: dict[str, tuple[type, ...]] = {
    "PostTrainingPalettizer": (nn.MultiheadAttention,),
    "SKMPalettizer": (nn.MultiheadAttention,),
    "LinearQuantizer": (
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.Embedding,
        nn.MultiheadAttention,
    ),
}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

_rebound: list[tuple[Any, str, Any]] = []  # (module, attribute, coremltools' original)


def _engine_class(target: str) -> type:
    module, name = target.split(":")
    return getattr(importlib.import_module(f"coreml_compress.torch.{module}"), name)


def _module_configs(config: Any) -> list[Any]:
    out: list[Any] = []
    for value in [
        config.global_config,
        *dict(config.module_type_configs).values(),
        *dict(config.module_name_configs).values(),
    ]:
        out.extend(v for v in (value if isinstance(value, list) else [value]) if v is not None)
    return out


def _option_gaps(config: Any) -> list[str]:
    """Non-default values of coremltools module-config fields that the engine's module config
    of the same class name lacks."""
    import coreml_compress.torch as engine

    gaps: list[str] = []
    for cfg in _module_configs(config):
        ours = {f.name for f in attrs.fields(getattr(engine, type(cfg).__name__))} | _EQUIVALENT
        for f in attrs.fields(type(cfg)):
            if f.name in ours or f.name.startswith("_"):
                continue
            default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
            value = getattr(cfg, f.name, default)
            if (
                default is not attrs.NOTHING
                and value != default
                and f"{f.name}={value!r}" not in gaps
            ):
                gaps.append(f"{f.name}={value!r}")
    return gaps


def _module_gaps(name: str, model: nn.Module, config: Any) -> list[str]:
    gaps: list[str] = []
    types = _NOT_HANDLED.get(name, ())
    selected = [
        (mname, module)
        for mname, module in model.named_modules()
        if config.get_module_config(mname, module) is not None
    ]
    for mname, module in selected:
        if types and isinstance(module, types):
            gaps.append(f"module type {type(module).__name__} ({mname})")
    if name == "LinearQuantizer" and any(isinstance(m, _BATCH_NORMS) for _, m in selected):
        gaps.append("BatchNorm folding into quantized convolutions")
    return gaps


def unsupported(name: str, model: nn.Module, config: Any) -> list[str]:
    """What of ``config`` (a coremltools config object) on ``model`` the engine's ``name``
    class does not implement, one entry per option or module; empty when nothing is missing
    (the engine's constructor may still refuse a value, see :func:`_stand_in`)."""
    if name == "DKMPalettizer":
        from .dkm import unsupported_dkm_options

        return unsupported_dkm_options(model, config)
    return _option_gaps(config) + _module_gaps(name, model, config)


def _stand_in(package: str, name: str, config_name: str, target: str, original: type) -> type:
    config_cls = getattr(
        importlib.import_module(f"coremltools.optimize.torch.{package}"), config_name
    )

    def __new__(cls: type, model: nn.Module, config: Any = None, *args: Any, **kwargs: Any) -> Any:
        config = coremltools_config(config_cls, config)
        gaps = unsupported(name, model, config)
        if not gaps:
            try:
                return _engine_class(target)(model, config, *args, **kwargs)
            except (ValueError, TypeError) as e:  # a value the engine's config refuses
                gaps = [str(e)]
        warnings.warn(
            f"coreml_compress: {name} ran on coremltools' own code, not on the engine: "
            f"{'; '.join(gaps)} not supported",
            RuntimeWarning,
            stacklevel=2,
        )
        return original(model, config, *args, **kwargs)

    return type(
        name,
        (),
        {
            "__new__": __new__,
            "__doc__": original.__doc__,
            "__module__": original.__module__,
            "__qualname__": original.__qualname__,
        },
    )


def coremltools_original(package: str, name: str) -> type:
    """coremltools' own class ``coremltools.optimize.torch.<package>.<name>``, patched or not."""
    public = importlib.import_module(f"coremltools.optimize.torch.{package}")
    return next(
        (orig for module, attr, orig in _rebound if module is public and attr == name),
        getattr(public, name),
    )


def patch() -> None:
    """Rebinds the routed classes in every loaded ``coremltools.optimize.torch`` module
    (idempotent)."""
    if _rebound:
        return
    for package, name, config_name, target in _ROUTES:
        public = importlib.import_module(f"coremltools.optimize.torch.{package}")
        original = getattr(public, name)
        stand_in = _stand_in(package, name, config_name, target, original)
        for mod_name, module in list(sys.modules.items()):
            if (
                mod_name.startswith("coremltools.optimize.torch")
                and getattr(module, name, None) is original
            ):
                _rebound.append((module, name, original))
                setattr(module, name, stand_in)


def unpatch() -> None:
    """Rebinds coremltools' original classes (a no-op when not patched)."""
    while _rebound:
        module, name, original = _rebound.pop()
        setattr(module, name, original)
