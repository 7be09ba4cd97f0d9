"""PyTorch-side compression on the native engine (``pip install "coreml-compress[torch]"``).

Calibration: :class:`LayerwiseCompressor` (GPTQ, SparseGPT), :class:`SKMPalettizer` (sensitive
k-means); data-free: :class:`PostTrainingPalettizer`, :class:`PostTrainingQuantizer`; inside a
training loop: :class:`TrainingPalettizer` (learned LUT, native k-means; also behind
coremltools' ``DKMPalettizer`` API as :class:`DKMPalettizer`), :class:`LinearQuantizer`
(weight-only QAT) and :class:`MagnitudePruner` (coremltools' schedules), each with
``prepare``/``step``/``finalize``. ``coreml_compress.patch_coremltools(torch=True)`` routes
``coremltools.optimize.torch``'s classes here (:mod:`coreml_compress.torch.patch`). Every
compressed module keeps dense weights that sit exactly on the compressed grid and carries the
``_COREML_`` buffers that ``ct.convert(..., minimum_deployment_target=ct.target.iOS18)`` turns into
``constexpr_*`` ops. Configs are coremltools' (objects, dicts or YAML).
:func:`collect_importance` records each Linear/Conv input channel's mean squared activation
(the diagonal of GPTQ's Hessian) for ``coreml_compress.optimize.fit``.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        'coreml_compress.torch needs PyTorch: pip install "coreml-compress[torch]"'
    ) from exc

from ._config import (
    LayerwiseCompressorConfig,
    ModuleGPTQConfig,
    ModulePostTrainingPalettizerConfig,
    ModuleSKMPalettizerConfig,
    ModuleSparseGPTConfig,
    PostTrainingPalettizerConfig,
    SKMPalettizerConfig,
)
from ._metadata import clear_metadata, metadata_of, register_metadata, register_metadata_version
from .dkm import DKMPalettizer
from .importance import collect_importance
from .kernels import Hessian, gptq, sparsegpt, weighted_kmeans
from .layerwise import LayerwiseCompressor
from .palettization import PostTrainingPalettizer, SKMPalettizer
from .pruning import (
    ConstantSparsityScheduler,
    MagnitudePruner,
    MagnitudePrunerConfig,
    ModuleMagnitudePrunerConfig,
    PolynomialDecayScheduler,
)
from .quantization import (
    ModulePostTrainingQuantizerConfig,
    PostTrainingQuantizer,
    PostTrainingQuantizerConfig,
)
from .quantization_aware import LinearQuantizer, LinearQuantizerConfig, ModuleLinearQuantizerConfig
from .training_palettization import (
    ModuleTrainingPalettizerConfig,
    TrainingPalettizer,
    TrainingPalettizerConfig,
)

__all__ = [
    "ConstantSparsityScheduler",
    "DKMPalettizer",
    "Hessian",
    "LayerwiseCompressor",
    "LayerwiseCompressorConfig",
    "LinearQuantizer",
    "LinearQuantizerConfig",
    "MagnitudePruner",
    "MagnitudePrunerConfig",
    "ModuleGPTQConfig",
    "ModuleLinearQuantizerConfig",
    "ModuleMagnitudePrunerConfig",
    "ModulePostTrainingPalettizerConfig",
    "ModulePostTrainingQuantizerConfig",
    "ModuleSKMPalettizerConfig",
    "ModuleSparseGPTConfig",
    "ModuleTrainingPalettizerConfig",
    "PolynomialDecayScheduler",
    "PostTrainingPalettizer",
    "PostTrainingPalettizerConfig",
    "PostTrainingQuantizer",
    "PostTrainingQuantizerConfig",
    "SKMPalettizer",
    "SKMPalettizerConfig",
    "TrainingPalettizer",
    "TrainingPalettizerConfig",
    "clear_metadata",
    "collect_importance",
    "gptq",
    "metadata_of",
    "register_metadata",
    "register_metadata_version",
    "sparsegpt",
    "weighted_kmeans",
]
