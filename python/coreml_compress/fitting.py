"""Fit a model to a size (``optimize.fit``, ``coreml-compress fit``): every form of a ladder is
measured on every weight in memory (exact stored bytes and error, see ``src/compress/fit.rs``),
one form per weight is chosen for the least total error within the byte budget
(:mod:`coreml_compress.knapsack`), and the choice is written in one pass as a recipe.

Bytes here are weight-file bytes as written: each blob's 64-byte record header and its data,
blobs starting at 64-byte boundaries, after the file's 64-byte header."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _native, knapsack
from ._interop import ModelLike, package_path
from .config import (
    CompressionGranularity,
    OpCompressorConfig,
    OpLinearQuantizerConfig,
    OpMagnitudePrunerConfig,
    OpPalettizerConfig,
    OptimizationConfig,
)
from .errors import ConfigError, CoreMLCompressError, DeploymentWarning

__all__ = [
    "BudgetError",
    "FitResult",
    "Form",
    "default_ladder",
    "fit",
    "load_importance",
    "parse_size",
]

Progress = Callable[[int, int], object]

COMPUTE_UNITS = ("cpu_only", "cpu_and_gpu", "cpu_and_ne", "all")
# Compute units that include the Neural Engine, which runs no per_block linear quantization
# (compiler: "ANE only support per-cout/per-tensor quantization"; coremltools issue 2510).
NEURAL_ENGINE_UNITS = ("cpu_and_ne", "all")

_HEADER = 64  # weight-file header; also each blob's record header and the blob alignment
CURVE_POINTS = 32


class BudgetError(CoreMLCompressError, ValueError):
    """The model cannot be made as small as asked with the forms allowed."""


# ------------------------------------------------------------------------------------------
# Sizes


_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(size: float | str) -> int:
    """Bytes from a number of bytes or a string with a unit: ``"2GB"`` (10⁹), ``"1.5 GiB"``
    (2³⁰), ``"500MB"``, ``"123456"``."""
    if isinstance(size, bool):
        raise ConfigError(f"a size is a number of bytes or a string such as '2GB', got {size!r}")
    if isinstance(size, (int, float)):
        value, unit = float(size), "b"
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", size)
        if m is None:
            raise ConfigError(f"cannot read the size {size!r}: expected e.g. 2GB, 1.5GiB, 500MB")
        value, unit = float(m.group(1)), (m.group(2) or "b").lower()
        if unit not in _UNITS:
            raise ConfigError(
                f"unknown size unit {m.group(2)!r} in {size!r}: use B, kB, MB, GB, TB "
                "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
            )
    else:
        raise ConfigError(f"a size is a number of bytes or a string such as '2GB', got {size!r}")
    n = value * _UNITS[unit]
    if not math.isfinite(n) or n <= 0:
        raise ConfigError(f"a size must be positive, got {size!r}")
    return int(n)


def _record(data_bytes: int) -> int:
    """Weight-file bytes of one blob, its record header and alignment gap included."""
    return _HEADER + -(-data_bytes // _HEADER) * _HEADER


def _file_bytes(blob_data: Sequence[int]) -> int:
    """The exact size of a weight file holding blobs of these data sizes, in this order (the file
    ends at the last blob's data)."""
    position = _HEADER
    for n in blob_data:
        position = -(-position // _HEADER) * _HEADER + _HEADER + n
    return position


# ------------------------------------------------------------------------------------------
# The ladder


@dataclass(frozen=True)
class Form:
    """One way to store a weight: recipe steps (a joint form has two) and a short label."""

    label: str
    steps: tuple[tuple[str, OpCompressorConfig], ...]
    ios18_only: bool = False

    @property
    def per_block(self) -> bool:
        return any(
            isinstance(c, OpLinearQuantizerConfig)
            and c.granularity is CompressionGranularity.PER_BLOCK
            for _, c in self.steps
        )


def default_ladder(compute_units: str | None = None) -> list[Form]:
    """k-means palettization at 8/6/4/3/2 bits per tensor and per grouped channel (groups of 16
    and 32), int8 per channel, int4 per block of 32 (not when ``compute_units`` includes the
    Neural Engine), and 50 % magnitude pruning joint with 4-bit k-means. Forms marked
    ``ios18_only`` (3 bits, grouped LUTs, per-block, joint) are chosen only on iOS18 opsets."""
    forms = []
    for nbits in (8, 6, 4, 3, 2):
        # 3-bit LUTs exist since iOS18 only.
        cfg = OpPalettizerConfig(nbits=nbits)
        forms.append(Form(f"kmeans {nbits}b", (("palettize", cfg),), ios18_only=nbits == 3))
    for group in (16, 32):
        for nbits in (8, 6, 4, 3, 2):
            cfg = OpPalettizerConfig(
                nbits=nbits, granularity="per_grouped_channel", group_size=group
            )
            forms.append(Form(f"kmeans {nbits}b g{group}", (("palettize", cfg),), ios18_only=True))
    forms.append(Form("int8 per channel", (("quantize", OpLinearQuantizerConfig(dtype="int8")),)))
    block = OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32)
    forms.append(Form("int4 block32", (("quantize", block),), ios18_only=True))
    forms.append(
        Form(
            "prune50% + kmeans 4b",
            (
                ("prune", OpMagnitudePrunerConfig(target_sparsity=0.5)),
                ("palettize", OpPalettizerConfig(nbits=4)),
            ),
            ios18_only=True,
        )
    )
    return _allowed(forms, compute_units)


def _allowed(forms: Sequence[Form], compute_units: str | None) -> list[Form]:
    if compute_units is not None and compute_units not in COMPUTE_UNITS:
        raise ConfigError(
            f"unknown compute_units {compute_units!r}; one of {', '.join(COMPUTE_UNITS)}"
        )
    if compute_units in NEURAL_ENGINE_UNITS:
        return [f for f in forms if not f.per_block]
    return list(forms)


def _native_steps(form: Form) -> list[tuple[str, str]]:
    from .optimize import _ACCEPTED, _STEP_PASSES, _native_config

    out = []
    for name, cfg in form.steps:
        kind = _STEP_PASSES[name]
        config_json, _ = _native_config(
            OptimizationConfig(global_config=cfg), kind, _ACCEPTED[kind]
        )
        out.append((kind, config_json))
    return out


# ------------------------------------------------------------------------------------------
# Importance


def load_importance(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-module input-channel importance: a safetensors file (as
    ``coreml_compress.torch.collect_importance`` writes) or a mapping, module name → float32
    vector (the mean squared input activation of each input channel)."""
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32).ravel() for k, v in source.items()}
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the importance file: {e}") from e
    try:
        (header_len,) = struct.unpack_from("<Q", raw, 0)
        header = json.loads(raw[8 : 8 + header_len])
    except (struct.error, ValueError) as e:
        raise ConfigError(f"{path}: not a safetensors file ({e})") from e
    out = {}
    base = 8 + header_len
    types = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = types.get(info.get("dtype"))
        start, end = info["data_offsets"]
        if dtype is None:
            raise ConfigError(f"{path}: tensor {name} has dtype {info.get('dtype')}; use F32")
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=dtype).astype(np.float32)
    return out


def _normalized(const_name: str) -> str:
    name = re.sub(r"_to_fp(16|32)$", "", const_name)
    name = re.sub(r"[._]weight$", "", name)
    return name.replace(".", "_")


def match_importance(
    const_names: Sequence[str], importance: Mapping[str, np.ndarray]
) -> tuple[dict[str, str], list[str]]:
    """Which module each const is named after (coremltools names a weight const after its
    module path: ``p_m_encoder_layer_0_attention_self_query_weight_to_fp16`` or
    ``encoder.layer.0.attention.self.query.weight``; the longest matching module wins), and the
    modules no const matched."""
    keys = {m.replace(".", "_"): m for m in importance}
    matched: dict[str, str] = {}
    for const in const_names:
        norm = _normalized(const)
        hits = [k for k in keys if norm == k or norm.endswith("_" + k)]
        if hits:
            matched[const] = keys[max(hits, key=len)]
    used = set(matched.values())
    return matched, sorted(m for m in importance if m not in used)


def _relative(importance: np.ndarray, module: str) -> np.ndarray:
    """A module's importance scaled to mean 1 (all zero: ones), so a weighted error is in the
    weight's own units like a plain SSE: importance says which input channels of a weight
    matter, not how one weight's error compares with another's. Raw mean squared activations
    differ between layers by orders of magnitude that are no measure of their effect on the
    output (a residual stream and its LayerNorms lie between), and would also weigh every
    matched weight against the unmatched ones (embeddings, folded constants) by the arbitrary
    scale of the activations; on all-MiniLM-L6-v2 raw weighting lost 0.056 mean cosine at the
    size of 4-bit k-means, the relative one gained 0.0014 over plain SSE (benchmarks/RESULTS.md)."""
    values = importance.astype(np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(f"importance of {module}: entries must be finite and non-negative")
    mean = values.mean() if values.size else 0.0
    return (values / mean if mean > 0 else np.ones_like(values)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Results


@dataclass
class WeightChoice:
    """The form chosen for one weight and what it stores."""

    function: str
    name: str
    shape: list[int]
    op_type: str
    form: str
    bytes: int
    dense_bytes: int
    sse: float
    error: float
    snr_db: float
    importance: str | None
    # What ``info`` counts for it: data of its blobs and values kept inline.
    stored_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8 * max(0, self.bytes - _HEADER) / max(1, math.prod(self.shape))


@dataclass
class FitResult:
    """What ``fit`` chose and wrote. ``weight_file_bytes`` is the written weight file's size
    (``max_size`` bounds it); ``curve`` is the size → total error frontier, ``chosen`` on it."""

    path: Any
    max_size: int
    weight_file_bytes: int
    predicted_bytes: int
    model_file_bytes: int
    dense_bytes: int
    error: float
    optimal: bool
    # No choice within max_size has a smaller error (the LP relaxation's).
    lower_bound: float
    weights: list[WeightChoice]
    fixed_bytes: int
    curve: list[tuple[int, float]]
    recipe: list[tuple[str, OptimizationConfig]]
    weighted: bool
    compute_units: str | None
    ios18: bool
    ios18_note: str | None
    unmatched_weights: list[str] = field(default_factory=list)
    unmatched_modules: list[str] = field(default_factory=list)
    excluded_forms: list[str] = field(default_factory=list)
    lint: list[Any] = field(default_factory=list)

    def bytes_by(self, key: Callable[[WeightChoice], str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.weights:
            out[key(w)] = out.get(key(w), 0) + w.bytes
        return out

    def recipe_dict(self) -> dict[str, Any]:
        """The recipe as ``compress --recipe`` reads it."""
        steps = []
        for name, cfg in self.recipe:
            by_name = {
                k: {"config_type": type(v).__name__, **_plain_config(v)}
                for k, v in cfg.op_name_configs.items()
                if v is not None
            }
            steps.append({name: {"config_type": "OptimizationConfig", "op_name_configs": by_name}})
        return {"steps": steps}

    def save_recipe(self, path: str | os.PathLike[str]) -> Path:
        import yaml

        out = Path(path)
        header = (
            f"# coreml-compress fit: {self.weight_file_bytes} weight-file bytes "
            f"(max_size {self.max_size}); re-run with `coreml-compress compress IN OUT --recipe {out.name}`\n"
        )
        out.write_text(header + yaml.safe_dump(self.recipe_dict(), sort_keys=False))
        return out

    def table(self) -> str:
        from .fit_report import terminal_table

        return terminal_table(self)

    def __str__(self) -> str:
        return self.table()


def _plain_config(cfg: OpCompressorConfig) -> dict[str, Any]:
    """The fields of an op config that differ from the defaults, as YAML scalars (enums by
    their lower-case names, as config dicts take them)."""
    import attrs

    out = {}
    for a in attrs.fields(type(cfg)):
        value = getattr(cfg, a.name)
        if a.default is not attrs.NOTHING and value == a.default:
            continue
        if isinstance(value, enum.Enum):
            value = value.name.lower()
        elif isinstance(value, str):
            value = value.lower()
        elif isinstance(value, tuple):
            value = list(value)
        if a.default is not attrs.NOTHING and value == a.default:
            continue
        out[a.name] = value
    return out


# ------------------------------------------------------------------------------------------
# Choosing


@dataclass
class _Weight:
    """A fitted weight's options: index 0 keeps it as it is."""

    info: dict[str, Any]
    forms: list[int]  # form index of each option (-1: as it is)
    bytes: list[int]  # record bytes of each option
    errors: list[float]
    sses: list[float]
    blobs: list[list[int]]  # data sizes of the blobs each option writes
    stored: list[int]  # bytes as ``info`` counts them (blob data and inline values)
    importance: str | None


def _options(
    evaluation: dict[str, Any],
    allowed: Callable[[int], bool],
    matched: Mapping[str, str],
    min_snr_db: float | None,
) -> list[_Weight]:
    out = []
    for w, kept in zip(evaluation["weights"], _kept_bytes(evaluation)):
        module = matched.get(w["name"])
        dense = w["dense_bytes"]
        item = _Weight(w, [-1], [kept], [0.0], [0.0], [[]], [dense], None)
        for k, r in enumerate(w["forms"]):
            if "unavailable" in r or not allowed(k):
                continue
            sse = r["sse"]
            if min_snr_db is not None and _snr(w["signal"], sse) < min_snr_db:
                continue
            weighted = r["weighted_sse"]
            if module is not None and weighted is not None:
                item.importance = module
            item.forms.append(k)
            item.bytes.append(sum(_record(b) for b in r["blob_bytes"]))
            item.errors.append(weighted if module is not None and weighted is not None else sse)
            item.sses.append(sse)
            item.blobs.append(list(r["blob_bytes"]))
            item.stored.append(sum(r["blob_bytes"]) + r["inline_bytes"])
        out.append(item)
    return out


def _kept_bytes(evaluation: dict[str, Any]) -> list[int]:
    """The weight-file bytes keeping each fitted weight as it is adds: its blob's record, split
    among the fitted weights that read the blob (consts deduplicated onto one blob), so that
    kept by all of them it counts once; nothing for a blob another op reads (the fixed part
    counts it) or a value kept inline."""
    out = [0] * len(evaluation["weights"])
    for b in evaluation["blobs"]:
        if b["other_readers"] or not b["weights"]:
            continue
        share, rest = divmod(_record(b["data_bytes"]), len(b["weights"]))
        for k, i in enumerate(b["weights"]):
            out[i] += share + (rest if k == 0 else 0)
    return out


def _snr(signal: float, sse: float) -> float:
    if sse == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / sse)


def _fixed_blobs(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in evaluation["blobs"] if b["other_readers"] or not b["weights"]]


def _exact_file_bytes(
    evaluation: dict[str, Any], items: list[_Weight], picks: Sequence[int]
) -> int:
    """The size of the weight file the recipe of ``picks`` writes: new blobs in program order,
    then every input blob still read, in (file, offset) order."""
    new = [n for item, k in zip(items, picks) for n in item.blobs[k]]
    kept_weights = {i for i, k in enumerate(picks) if items[i].forms[k] == -1}
    kept = [
        b["data_bytes"]
        for b in evaluation["blobs"]
        if b["other_readers"] or not b["weights"] or any(i in kept_weights for i in b["weights"])
    ]
    return _file_bytes(new + kept)


@dataclass
class _Groups:
    """The knapsack's items: one per fitted weight, except that the fitted weights reading one
    blob (consts deduplicated onto it) are one item, so that the blob counts once. Keeping it for
    one of them keeps it for all at no cost, so such an item's options are "all as they are" and
    every combination of compressed forms (the sums no other sum beats)."""

    members: list[list[int]]
    options: list[list[knapsack.Option]]
    # Per item and option: the option index of each member.
    picks: list[list[tuple[int, ...]]]

    def item_picks(self, group_picks: Sequence[int]) -> list[int]:
        out = [0] * sum(len(m) for m in self.members)
        for members, picks, k in zip(self.members, self.picks, group_picks):
            for i, pick in zip(members, picks[k]):
                out[i] = pick
        return out


def _groups(evaluation: dict[str, Any], items: list[_Weight]) -> _Groups:
    group = list(range(len(items)))
    for b in evaluation["blobs"]:
        if not b["other_readers"] and len(b["weights"]) > 1:
            first = group[b["weights"][0]]
            for i in b["weights"]:
                old = group[i]
                group = [first if g == old else g for g in group]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    out = _Groups([], [], [])
    for m in members.values():
        out.members.append(m)
        if len(m) == 1:
            out.options.append(list(zip(items[m[0]].bytes, items[m[0]].errors)))
            out.picks.append([(k,) for k in range(len(items[m[0]].bytes))])
            continue
        sums, picks = knapsack.combined(
            [list(zip(items[i].bytes[1:], items[i].errors[1:])) for i in m]
        )
        out.options.append([(sum(items[i].bytes[0] for i in m), 0.0), *sums])
        out.picks.append([(0,) * len(m), *(tuple(k + 1 for k in p) for p in picks)])
    return out


def _solve(
    evaluation: dict[str, Any], items: list[_Weight], max_size: int, node_limit: int
) -> knapsack.Choice | None:
    """The least-error choice whose written weight file is at most ``max_size`` bytes: blob by
    blob, the fixed blobs once, each option's blobs with their records (:func:`_groups`)."""
    budget = max_size - _HEADER - sum(_record(b["data_bytes"]) for b in _fixed_blobs(evaluation))
    if budget < 0:
        return None
    groups = _groups(evaluation, items)
    choice = knapsack.solve(groups.options, budget, node_limit=node_limit)
    if choice is None:
        return None
    return dataclasses.replace(choice, picks=tuple(groups.item_picks(choice.picks)))


def _smallest(evaluation: dict[str, Any], items: list[_Weight]) -> int:
    groups = _groups(evaluation, items)
    picks = [min(range(len(o)), key=lambda k: (o[k][0], o[k][1])) for o in groups.options]
    return _exact_file_bytes(evaluation, items, groups.item_picks(picks))


def _largest(evaluation: dict[str, Any], items: list[_Weight]) -> int:
    groups = _groups(evaluation, items)
    picks = [max(range(len(o)), key=lambda k: (o[k][0], -o[k][1])) for o in groups.options]
    return _exact_file_bytes(evaluation, items, groups.item_picks(picks))


def _curve(evaluation: dict[str, Any], items: list[_Weight]) -> list[tuple[int, float]]:
    lo, hi = _smallest(evaluation, items), _largest(evaluation, items)
    points = {}
    for budget in np.linspace(lo, hi, CURVE_POINTS):
        choice = _solve(evaluation, items, round(budget), node_limit=20_000)
        if choice is not None:
            size = _exact_file_bytes(evaluation, items, choice.picks)
            points[size] = min(points.get(size, math.inf), choice.error)
    return sorted(points.items())


def _recipe(
    forms: Sequence[Form], items: list[_Weight], picks: Sequence[int]
) -> list[tuple[str, OptimizationConfig]]:
    """The choice as recipe steps (prune, palettize, quantize; each with op_name configs). The
    second step of a joint form names the chain the first made (``<const>_sparsified``), as a
    joint pass resolves configs along the chain."""
    by_step: dict[str, dict[str, OpCompressorConfig]] = {
        "prune": {},
        "palettize": {},
        "quantize": {},
    }
    for item, k in zip(items, picks):
        f = item.forms[k]
        if f == -1:
            continue
        name = item.info["name"]
        for j, (step, cfg) in enumerate(forms[f].steps):
            by_step[step][name if j == 0 else f"{name}_sparsified"] = cfg
    return [
        (step, OptimizationConfig(op_name_configs=dict(configs)))
        for step, configs in by_step.items()
        if configs
    ]


def _weight_file_bytes(package: Path) -> int:
    weights = package / "Data" / "com.apple.CoreML" / "weights"
    return sum(p.stat().st_size for p in weights.iterdir()) if weights.is_dir() else 0


def _model_file_bytes(package: Path) -> int:
    return sum(p.stat().st_size for p in (package / "Data" / "com.apple.CoreML").glob("*.mlmodel"))


def _lint(path: Path, compute_units: str | None) -> list[Any]:
    """Deployment lint messages for the written package, when the lint module is there."""
    try:
        from . import lint  # type: ignore[attr-defined]
    except ImportError:
        return []
    return list(lint.lint_package(path, compute_units))


def fit(
    model: ModelLike,
    max_size: float | str,
    *,
    output_path: str | os.PathLike[str] | None = None,
    compute_units: str | None = None,
    candidates: Sequence[Form] | None = None,
    min_snr_db: float | None = None,
    importance: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    report: str | os.PathLike[str] | None = None,
    save_recipe: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Compress each weight with the form that, together with the others, gives the least total
    error within ``max_size`` bytes of weight files; write the package in one pass.

    Parameters
    ----------
    model : str, os.PathLike or coremltools.models.MLModel
        The model (an ML Program package); never modified.
    max_size : int, float or str
        The budget for the written weight files (every blob with its header): bytes, or a
        string with a unit (``"2GB"`` = 2·10⁹, ``"1.5GiB"`` = 1.5·2³⁰).
    output_path : str or os.PathLike, optional
        Where to write the package. Default: a new temporary package.
    compute_units : str, optional
        ``cpu_only``, ``cpu_and_gpu``, ``cpu_and_ne`` or ``all``. With the Neural Engine
        (``cpu_and_ne``, ``all``) per_block linear quantization is not a candidate.
    candidates : sequence of Form, optional
        The ladder (default: :func:`default_ladder`). iOS18-only forms are measured on an older
        model too, for the report's "what iOS18 would save", but never chosen there.
    min_snr_db : float, optional
        Per-weight floor: a form whose SNR is below it is not a candidate for that weight.
    importance : path or mapping, optional
        Per-module input-channel importance (safetensors file or mapping, see
        :func:`load_importance`); a matched weight's error is Σ_j imp_j ‖ΔW[:, j]‖² with its
        module's vector scaled to mean 1 (it weighs the input channels within the weight, the
        weight's units stay those of plain SSE).
    report : path, optional
        Write a self-contained HTML report there (needs matplotlib: the ``report`` extra).
    save_recipe : path, optional
        Save the choice as a recipe YAML that ``compress --recipe`` re-runs to the same bytes.
    progress : callable(done, total), optional
        Called as weights are measured.

    Raises
    ------
    BudgetError
        ``max_size`` cannot be met: says by how much and the smallest reachable size.
    coreml_compress.errors.ConfigError
        A bad size, compute_units or importance file.
    """
    from .optimize import apply_recipe

    limit = parse_size(max_size)
    if report is not None:
        from .fit_report import require_matplotlib

        require_matplotlib()
    asked = default_ladder() if candidates is None else list(candidates)
    ladder = _allowed(asked, compute_units)
    excluded = [f.label for f in asked if f not in ladder]
    source = package_path(model)
    imp = load_importance(importance) if importance is not None else {}
    names = [r["name"] for r in _native.inspect(str(source))]
    matched, unmatched_modules = match_importance(names, imp)
    native_importance = {c: _relative(imp[m], m).tolist() for c, m in matched.items()}
    evaluation = _native.fit_evaluate(
        str(source),
        [(_native_steps(f), f.ios18_only) for f in ladder],
        native_importance,
        progress,
    )
    ios18 = evaluation["ios18"]
    usable = [ios18 or not f.ios18_only for f in ladder]
    items = _options(evaluation, lambda k: usable[k], matched, min_snr_db)
    choice = _solve(evaluation, items, limit, node_limit=1_000_000)
    if choice is None:
        smallest = _smallest(evaluation, items)
        raise BudgetError(
            f"cannot fit the weights into {limit} bytes: the smallest reachable size with the "
            f"allowed forms{' and min_snr_db' if min_snr_db is not None else ''} is {smallest} "
            f"bytes, {smallest - limit} bytes over"
        )
    predicted = _exact_file_bytes(evaluation, items, choice.picks)
    recipe = _recipe(ladder, items, choice.picks)
    if recipe:
        with warnings.catch_warnings():
            if compute_units is not None and compute_units not in NEURAL_ENGINE_UNITS:
                # The compute units are known and exclude the Neural Engine: per_block is fine.
                warnings.simplefilter("ignore", DeploymentWarning)
            written = apply_recipe(model, recipe, output_path=output_path)
    else:
        from .optimize import _into_package

        written, _ = _into_package(
            model, output_path, False, lambda s, d: (_native.save_unchanged(s, d), None)
        )
    out_path = package_path(written)
    actual = _weight_file_bytes(out_path)
    if actual != predicted:
        warnings.warn(
            f"fit predicted {predicted} weight-file bytes but wrote {actual}",
            RuntimeWarning,
            stacklevel=2,
        )
    weights = []
    for item, k in zip(items, choice.picks):
        f = item.forms[k]
        weights.append(
            WeightChoice(
                function=item.info["function"],
                name=item.info["name"],
                shape=list(item.info["shape"]),
                op_type=(item.info["consumer_types"] or ["?"])[0],
                form="as is" if f == -1 else ladder[f].label,
                bytes=item.bytes[k],
                dense_bytes=_record(item.info["dense_bytes"]),
                sse=item.sses[k],
                error=item.errors[k],
                snr_db=_snr(item.info["signal"], item.sses[k]),
                importance=item.importance,
                stored_bytes=item.stored[k],
            )
        )
    result = FitResult(
        path=written,
        max_size=limit,
        weight_file_bytes=actual,
        predicted_bytes=predicted,
        model_file_bytes=_model_file_bytes(out_path),
        dense_bytes=_file_bytes([b["data_bytes"] for b in evaluation["blobs"]]),
        error=choice.error,
        optimal=choice.optimal,
        lower_bound=choice.lower_bound,
        weights=weights,
        fixed_bytes=sum(_record(b["data_bytes"]) for b in _fixed_blobs(evaluation)),
        curve=sorted({**dict(_curve(evaluation, items)), predicted: choice.error}.items()),
        recipe=recipe,
        weighted=bool(matched),
        compute_units=compute_units,
        ios18=ios18,
        ios18_note=None
        if ios18
        else _ios18_note(evaluation, ladder, matched, min_snr_db, limit, choice.error),
        unmatched_weights=sorted(w.name for w in weights if imp and w.importance is None),
        unmatched_modules=unmatched_modules,
        excluded_forms=excluded,
    )
    result.lint = _lint(out_path, compute_units)
    if save_recipe is not None:
        result.save_recipe(save_recipe)
    if report is not None:
        from .fit_report import write_html

        write_html(result, report)
    return result


def _ios18_note(
    evaluation: dict[str, Any],
    ladder: Sequence[Form],
    matched: Mapping[str, str],
    min_snr_db: float | None,
    limit: int,
    error: float,
) -> str | None:
    """What the iOS18-only forms would give this model, converted for iOS18."""
    if not any(f.ios18_only for f in ladder):
        return None
    items = _options(evaluation, lambda k: True, matched, min_snr_db)
    choice = _solve(evaluation, items, limit, node_limit=20_000)
    if choice is None:
        return None
    lo, hi = _smallest(evaluation, items), limit
    while hi - lo > max(1, limit // 1000):
        mid = (lo + hi) // 2
        c = _solve(evaluation, items, mid, node_limit=2_000)
        if c is not None and c.error <= error:
            hi = mid
        else:
            lo = mid
    return (
        f"the model's opset is older than iOS18, so grouped LUTs, per-block quantization and "
        f"joint forms were not used; converted with minimum_deployment_target=iOS18 it would "
        f"reach the same error at about {hi} bytes ({limit - hi} fewer), or an error of "
        f"{choice.error:.6g} instead of {error:.6g} at this budget"
    )
