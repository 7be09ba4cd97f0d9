"""PyTorch-side compression on the native engine (``pip install "coreml-compress[torch]"``).

Calibration: :class:`LayerwiseCompressor` (GPTQ, SparseGPT), :class:`SKMPalettizer` (sensitive
k-means); data-free: :class:`PostTrainingPalettizer`, :class:`PostTrainingQuantizer`. Every
compressed module keeps dense weights that sit exactly on the compressed grid and carries the
``_COREML_`` buffers that ``ct.convert(..., minimum_deployment_target=ct.target.iOS18)`` turns into
``constexpr_*`` ops. Configs are coremltools' (objects, dicts or YAML).
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
from .kernels import Hessian, gptq, sparsegpt, weighted_kmeans
from .layerwise import LayerwiseCompressor
from .palettization import PostTrainingPalettizer, SKMPalettizer

__all__ = [
    "Hessian",
    "LayerwiseCompressor",
    "LayerwiseCompressorConfig",
    "ModuleGPTQConfig",
    "ModulePostTrainingPalettizerConfig",
    "ModuleSKMPalettizerConfig",
    "ModuleSparseGPTConfig",
    "PostTrainingPalettizer",
    "PostTrainingPalettizerConfig",
    "SKMPalettizer",
    "SKMPalettizerConfig",
    "clear_metadata",
    "gptq",
    "metadata_of",
    "register_metadata",
    "register_metadata_version",
    "sparsegpt",
    "weighted_kmeans",
]
