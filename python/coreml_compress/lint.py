"""Deployment lint: what in a package will not run as intended on the chosen compute units.

``lint_package(model, compute_units)`` reads any ML Program package (compressed by this engine,
by coremltools or by hand) through :func:`coreml_compress.inspect` and the model's declared
versions, and returns one :class:`LintMessage` per finding: the op, the weight, the reason and
where the fact comes from. coremltools is not needed for a path.

The rules (each names its source; what is known is said, what is not is not claimed):

``per-block-on-ane`` (error when the compute units include the Neural Engine)
    Linear quantization whose scales vary in blocks along an axis (``per_block``: neither per
    tensor nor per output channel). The ANE compiler refuses it ("ANE only support
    per-cout/per-tensor quantization", coremltools issue 2510) and the ops fall back to the CPU;
    on device an 8-bit per-block model gave an output cosine of 0.367 against 0.9975 for grouped
    8-bit k-means (coreai-models issue 279).
``per-channel-scale-on-ane`` (warning when the compute units include the Neural Engine)
    A LUT with a per-channel scale (coremltools' ``enable_per_channel_scale``: a float
    ``constexpr_blockwise_shift_scale`` in the chain of a ``constexpr_lut_to_dense``) fails
    MPSGraph verification when loaded for the ANE on macOS 26; CPU and GPU load it (coremltools
    PR 2688, open). The PR's thread reports the plain iOS18 LUT lowering with an fp16 scale failing the
    same way; nothing is known for iOS/iPadOS 26.
``ios18-op-in-older-opset`` (error, any compute units)
    An iOS18 op form (``constexpr_blockwise_shift_scale``, ``constexpr_lut_to_sparse``,
    ``constexpr_sparse_blockwise_shift_scale``, the iOS18 ``constexpr_lut_to_dense``) in a
    function whose opset is older than iOS18 (``CoreML8``): Core ML's iOS18 opset defines them,
    older ones do not, so the model does not compile.
``older-opset`` (info)
    A function with an opset older than iOS18 cannot hold the iOS18 compression forms:
    per-grouped-channel LUTs, per-block and 4-bit linear quantization, per-channel LUT scales and
    joint forms (pruned + palettized or quantized). Converting with
    ``minimum_deployment_target=ct.target.iOS18`` allows them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import _native
from ._interop import ModelLike, package_path
from .errors import DeploymentWarning
from .inspect import WeightInfo, inspect

__all__ = [
    "COMPUTE_UNITS",
    "PER_BLOCK_ON_ANE",
    "LintMessage",
    "Rule",
    "Severity",
    "format_messages",
    "includes_neural_engine",
    "is_per_block",
    "lint_package",
]

#: The compute units ``lint_package`` takes (coremltools' ``ct.ComputeUnit`` names, lower case).
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")

#: The first opset (``CoreML8``) that has the iOS18 compression ops.
IOS18_OPSET_VERSION = 8

_IOS18_OPS = frozenset(
    {
        "constexpr_blockwise_shift_scale",
        "constexpr_lut_to_sparse",
        "constexpr_sparse_blockwise_shift_scale",
    }
)


class Severity(str, enum.Enum):
    """``error``: it will not run as intended there; ``warning``: it is reported to fail on some
    systems; ``info``: a missed opportunity, nothing breaks."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Rule:
    """A deployment fact: an identifier, what goes wrong, and where it is documented."""

    id: str
    reason: str
    source: str


PER_BLOCK_ON_ANE = Rule(
    "per-block-on-ane",
    "per_block linear quantization does not run on the Neural Engine: its compiler says "
    '"ANE only support per-cout/per-tensor quantization" and the op falls back to the CPU; '
    "on device an 8-bit per-block model gave an output cosine of 0.367 against 0.9975 for "
    "grouped 8-bit k-means. Use per_channel quantization or per_grouped_channel palettization "
    "for the ANE",
    "https://github.com/apple/coremltools/issues/2510, "
    "https://github.com/apple/coreai-models/issues/279",
)


def per_block_warning(weights: list[dict[str, str]]) -> DeploymentWarning:
    """The one warning for weights written in per_block linear quantization (each a dict with at
    least ``"name"``), naming the first ten: where the compute units are not known, a write
    cannot refuse the form, but the Neural Engine does not run it."""
    shown = 10
    names = ", ".join(w["name"] for w in weights[:shown])
    if len(weights) > shown:
        names += f" and {len(weights) - shown} more, all in the warning's .weights"
    message = (
        f"{len(weights)} weight(s) were quantized per_block ({names}). {PER_BLOCK_ON_ANE.reason} "
        f"(sources: {PER_BLOCK_ON_ANE.source}). `coreml-compress lint MODEL --compute-units "
        "cpu_and_ne` checks a package."
    )
    return DeploymentWarning(message, weights)


PER_CHANNEL_SCALE_ON_ANE = Rule(
    "per-channel-scale-on-ane",
    "a LUT with a per-channel scale (enable_per_channel_scale) fails MPSGraph verification when "
    "loaded for the Neural Engine on macOS 26 ('mps.dequantize' op operand #2 must be tensor of "
    "quantized values); CPU and GPU load it. The PR's thread reports the plain iOS18 LUT "
    "lowering with an fp16 scale failing the same way; other OS versions are not reported. "
    "Palettize without the per-channel scale, or fold the scale into grouped LUTs",
    "https://github.com/apple/coremltools/pull/2688 (open)",
)
IOS18_OP_IN_OLDER_OPSET = Rule(
    "ios18-op-in-older-opset",
    "an iOS18 op form in a function whose opset is older than iOS18: the model does not "
    "compile. Convert with minimum_deployment_target=iOS18",
    "Core ML MIL op definitions (coremltools.converters.mil.mil.ops.defs.iOS18.compression)",
)
OLDER_OPSET = Rule(
    "older-opset",
    "the opset is older than iOS18, so per_grouped_channel LUTs, per_block and 4-bit linear "
    "quantization, per-channel LUT scales and joint forms (pruned + palettized or quantized) "
    "are unavailable; converting with minimum_deployment_target=iOS18 allows them",
    "Core ML MIL op definitions (coremltools.converters.mil.mil.ops.defs.iOS18.compression)",
)


@dataclass(frozen=True)
class LintMessage:
    """One finding. ``op`` is the op type at fault, ``weight`` the weight it computes (the
    chain end's name, as :func:`~coreml_compress.inspect` names weights; empty for a finding
    about a whole function)."""

    severity: Severity
    rule: str
    function: str
    op: str
    weight: str
    reason: str
    source: str

    def __str__(self) -> str:
        where = (
            f"{self.weight} ({self.op}, function {self.function})"
            if self.weight
            else (f"function {self.function} ({self.op})")
        )
        return f"{self.severity.value}: {where}: {self.reason} [{self.rule}; {self.source}]"


def includes_neural_engine(compute_units: Any) -> bool:
    """Whether ``compute_units`` (a name of :data:`COMPUTE_UNITS`, any case, a
    ``ct.ComputeUnit``, or None for Core ML's default, ``all``) lets Core ML use the Neural
    Engine."""
    return _compute_units(compute_units) in ("all", "cpu_and_ne")


def _compute_units(compute_units: Any) -> str:
    if compute_units is None:  # not said: Core ML's default
        return "all"
    # A ct.ComputeUnit member has the name; coremltools is not imported for it.
    name = str(getattr(compute_units, "name", compute_units)).lower().replace("-", "_")
    if name not in COMPUTE_UNITS:
        raise ValueError(
            f"unknown compute units {compute_units!r}; use one of {', '.join(COMPUTE_UNITS)}"
        )
    return name


def is_per_block(scale_shape: Sequence[int], shape: Sequence[int]) -> bool:
    """Whether a linear quantization scale of ``scale_shape`` over a weight of ``shape`` varies
    in blocks: more than one axis with several scales, or one axis with several scales but
    fewer than its elements. Per-tensor (all ones) and per-channel (one axis, one scale per
    element) are not."""
    split = [(s, d) for s, d in zip(scale_shape, shape) if s > 1]
    return len(split) > 1 or any(s < d for s, d in split)


def _opset_version(opset: str) -> int | None:
    """``CoreML8`` → 8; None for a name of another form."""
    digits = opset.removeprefix("CoreML")
    return int(digits) if digits.isdigit() and digits != opset else None


def _quantized_per_block(w: WeightInfo) -> str | None:
    """The op type of a per_block quantization that produces ``w``'s dense value, else None.

    The quantization acts on the dense weight when its op ends the chain (``chain[0]``, also
    over palettized codes) or holds a pruned weight's nonzero values; a quantization inside a
    chain that feeds a LUT quantizes the LUT, and a float-data shift-scale at the end is a
    per-channel LUT scale, not a quantization."""
    scale_shape = w.params.get("scale_shape")
    if scale_shape is None or not w.chain or len(scale_shape) != len(w.shape):
        return None
    if (
        w.chain[0] == "constexpr_blockwise_shift_scale"
        and "per_channel_scale_shape" not in w.params
    ):
        op = w.chain[0]
    elif "constexpr_sparse_blockwise_shift_scale" in w.chain:
        op = "constexpr_sparse_blockwise_shift_scale"
    else:
        return None
    return op if is_per_block(scale_shape, w.shape) else None


def _has_per_channel_scale(w: WeightInfo) -> bool:
    """A float-data shift-scale in a LUT's chain: on the LUT (as coremltools 9 saves
    ``enable_per_channel_scale``) or on its dense output (as its pass first builds it)."""
    return "per_channel_scale_shape" in w.params and "palettized" in w.compression


def _ios18_op(w: WeightInfo) -> str | None:
    """The first iOS18-only op form of ``w``'s chain (an iOS18 LUT has ``cluster_dim``)."""
    for op in w.chain:
        if op in _IOS18_OPS or op == "constexpr_lut_to_dense" and "cluster_dim" in w.params:
            return op
    return None


def _message(severity: Severity, rule: Rule, function: str, op: str, weight: str) -> LintMessage:
    return LintMessage(severity, rule.id, function, op, weight, rule.reason, rule.source)


def lint_package(model: ModelLike, compute_units: Any = "all") -> list[LintMessage]:
    """Every deployment finding for ``model`` run on ``compute_units``.

    Parameters
    ----------
    model : str, os.PathLike or coremltools.models.MLModel
        A ``.mlpackage`` (coremltools is not imported for a path).
    compute_units : str, coremltools.ComputeUnit or None
        ``all`` (Core ML's default, also for None), ``cpu_and_ne``, ``cpu_and_gpu`` or
        ``cpu_only``. The Neural Engine rules apply to ``all`` and ``cpu_and_ne``.

    Returns
    -------
    list of LintMessage
        Errors first, then warnings, then infos; each in program order.

    Raises
    ------
    ValueError
        Unknown compute units.
    coreml_compress.errors.CoreMLCompressError
        A package that cannot be read (as :func:`~coreml_compress.inspect`).

    Example
    -------
    >>> from coreml_compress.lint import lint_package
    >>> for m in lint_package("model.mlpackage", "cpu_and_ne"):
    ...     print(m)
    error: lin1_weight_quantized (constexpr_blockwise_shift_scale, function main): per_block ...
    """
    ane = includes_neural_engine(compute_units)
    path = package_path(model)
    opsets = _native.model_versions(str(path))["opsets"]
    messages: list[LintMessage] = []
    for function, opset in opsets.items():
        version = _opset_version(opset)
        if version is not None and version < IOS18_OPSET_VERSION:
            messages.append(_message(Severity.INFO, OLDER_OPSET, function, f"opset {opset}", ""))
    for w in inspect(path):
        version = _opset_version(opsets.get(w.function, ""))
        ios18_op = _ios18_op(w)
        if ios18_op and version is not None and version < IOS18_OPSET_VERSION:
            messages.append(
                _message(Severity.ERROR, IOS18_OP_IN_OLDER_OPSET, w.function, ios18_op, w.name)
            )
        if not ane:
            continue
        per_block_op = _quantized_per_block(w)
        if per_block_op:
            messages.append(
                _message(Severity.ERROR, PER_BLOCK_ON_ANE, w.function, per_block_op, w.name)
            )
        if _has_per_channel_scale(w):
            messages.append(
                _message(
                    Severity.WARNING,
                    PER_CHANNEL_SCALE_ON_ANE,
                    w.function,
                    "constexpr_blockwise_shift_scale",
                    w.name,
                )
            )
    order = list(Severity)
    return sorted(messages, key=lambda m: order.index(m.severity))


def format_messages(messages: Sequence[LintMessage]) -> str:
    """The messages one per line, then a count by severity."""
    counts = {s: sum(m.severity is s for m in messages) for s in Severity}
    summary = ", ".join(f"{n} {s.value}{'s' if n != 1 else ''}" for s, n in counts.items())
    return "\n".join([*(str(m) for m in messages), summary if messages else "no findings"])
