"""coremltools-compatible compression entry points (``coremltools.optimize.coreml`` names and
signatures), running on the Rust engine.

Each function takes a ``.mlpackage`` path or a coremltools ``MLModel`` and returns what it was
given: the written package's path for a path (coremltools is not imported), an ``MLModel`` for an
``MLModel``; ``return_mlmodel=True`` asks for an ``MLModel`` from a path. Keyword-only additions
to coremltools' signatures: ``output_path`` places the result (by default it goes to a temporary
package, as coremltools does); ``progress(done, total)`` is called as weights are processed;
``with_report=True`` returns ``(model, report)``: a :class:`CompressionReport`, one dict per
compressed weight (function, name, shape, bytes_before, bytes_after, snr_db, per_block), with the weights
left uncompressed in ``report.skipped``. Weights the config asked for but that were skipped (see
:class:`~coreml_compress.errors.SkippedWeightsWarning`) are also named in one warning per call,
and so are weights quantized per_block, which the Neural Engine does not run
(:class:`~coreml_compress.errors.DeploymentWarning`; these calls do not know the compute units).
:func:`fit` (from :mod:`coreml_compress.fitting`) chooses a form per weight for a byte budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from . import _native
from . import config as _config
from ._interop import ModelLike, ModelResult, package_path, temp_package_path, wrap_output
from .config import (
    ConfigLike,
    OpLinearQuantizerConfig,
    OpMagnitudePrunerConfig,
    OpPalettizerConfig,
    OpThresholdPrunerConfig,
    OptimizationConfig,
)
from .errors import ConfigError, ConfigTypeError, SkippedWeightsWarning
from .fitting import BudgetError, FitResult, Form, fit
from .lint import per_block_warning

__all__ = [
    "BudgetError",
    "CompressionReport",
    "FitResult",
    "Form",
    "OpLinearQuantizerConfig",
    "OpMagnitudePrunerConfig",
    "OpPalettizerConfig",
    "OpThresholdPrunerConfig",
    "OptimizationConfig",
    "apply_recipe",
    "decompress_weights",
    "fit",
    "linear_quantize_weights",
    "load_recipe",
    "palettize_weights",
    "prune_weights",
]

Progress = Callable[[int, int], None]
# A recipe: (step, config) pairs, or a YAML file of them (see load_recipe).
Recipe = Union[Sequence[tuple[str, ConfigLike]], str, "os.PathLike[str]"]


class CompressionReport(list):
    """What one pass (or recipe step) did: one dict per compressed weight (function, name in the
    input model, shape, bytes_before, bytes_after, snr_db, per_block; sizes count everything the weight
    stores, as ``inspect`` does), in program order.

    ``skipped`` lists the weights the config asked to compress that were left as they were, one
    dict each (function, name, shape, reason, message); ``below_threshold`` counts the weights
    left alone because they are not larger than ``weight_threshold``.
    """

    def __init__(self, records: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
        super().__init__(records)
        self.skipped = [s for s in skipped if s["reason"] != "below_threshold"]
        self.below_threshold = len(skipped) - len(self.skipped)


def describe_skip(skip: dict[str, Any]) -> str:
    """One line naming a skipped weight, its shape and the reason."""
    shape = "x".join(map(str, skip["shape"]))
    step = f"step {skip['step']}: " if "step" in skip else ""
    return f"{step}{skip['name']} ({shape}, function {skip['function']}): {skip['message']}"


def _warn_skipped(
    reports: list[CompressionReport], labels: list[str] | None, stacklevel: int
) -> None:
    """One :class:`SkippedWeightsWarning` naming every weight the reports skipped against the
    config (``labels`` name the recipe's steps)."""
    skipped = []
    for i, report in enumerate(reports):
        for s in report.skipped:
            skipped.append({**s, "step": f"{i + 1} ({labels[i]})"} if labels else s)
    if not skipped:
        return
    lines = [f"{len(skipped)} weight(s) the config asked to compress were left as they were:"]
    lines.extend(f"  {describe_skip(s)}" for s in skipped)
    below = sum(r.below_threshold for r in reports)
    if below:
        lines.append(f"  ({below} weight(s) not larger than weight_threshold were left as well.)")
    warnings.warn(SkippedWeightsWarning("\n".join(lines), skipped), stacklevel=stacklevel + 1)


def _warn_per_block(
    reports: list[CompressionReport], labels: list[str] | None, stacklevel: int
) -> None:
    """One :class:`DeploymentWarning` naming every weight the reports quantized per block: these
    calls do not know the compute units, and the Neural Engine does not run that form."""
    weights = [
        {
            "function": r["function"],
            "name": r["name"],
            **({"step": f"{i + 1} ({labels[i]})"} if labels else {}),
        }
        for i, report in enumerate(reports)
        for r in report
        if r["per_block"]
    ]
    if weights:
        warnings.warn(per_block_warning(weights), stacklevel=stacklevel + 1)


@contextlib.contextmanager
def _removed_on_failure(temporary: Path | None) -> Iterator[None]:
    """Removes the temporary directory made for an output when writing it fails."""
    try:
        yield
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary.parent, ignore_errors=True)
        raise


def _engine_lut_function(fn: Callable) -> Callable[[bytes, str, list[int]], tuple[bytes, bytes]]:
    """Adapts a user's CUSTOM ``lut_function(group) -> (lut, indices)`` to the engine, which
    passes a group as raw bytes and takes the LUT as float64 and the indices as uint8 bytes."""

    def call(raw: bytes, dtype: str, shape: list[int]) -> tuple[bytes, bytes]:
        import numpy as np  # only CUSTOM mode needs numpy; path-based passes never import it

        group = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        lut, indices = fn(group)
        lut_bytes = np.asarray(lut, dtype=np.float64).ravel().tobytes()
        return lut_bytes, np.asarray(indices).astype(np.uint8).ravel().tobytes()

    return call


def _native_config(
    config: ConfigLike | None, pass_name: str, accepted: tuple[type, ...]
) -> tuple[str, dict[int, Callable]]:
    """The engine's JSON form of a config, after coremltools' type check for this pass; and the
    user functions (CUSTOM palettization) it refers to, by id."""
    if config is None:
        raise ConfigError(f"{pass_name} needs a config (an OptimizationConfig)")
    cfg = _config.as_config(config)
    names = ", ".join(t.__name__ for t in accepted)
    for op_config in [
        cfg.global_config,
        *cfg.op_type_configs.values(),
        *cfg.op_name_configs.values(),
    ]:
        if op_config is not None and not isinstance(op_config, accepted):
            raise ConfigError(
                f"{pass_name} only accept {names} type config. Got {type(op_config).__name__}."
            )
    resolved = _config.resolve(cfg)
    functions: dict[int, Callable] = {}

    def strip(native: dict | None) -> dict | None:
        if native is None:
            return None
        native = dict(native)
        fn = native.pop("lut_function", None)
        if fn is not None:
            functions[id(fn)] = _engine_lut_function(fn)
            native["lut_function_id"] = id(fn)
        return native

    resolved = {
        "global": strip(resolved["global"]),
        "op_type": {k: strip(v) for k, v in resolved["op_type"].items()},
        "op_name": {k: strip(v) for k, v in resolved["op_name"].items()},
    }
    return json.dumps(resolved), functions


_ACCEPTED: dict[str, tuple[type, ...]] = {
    "palettize_weights": (OpPalettizerConfig,),
    "linear_quantize_weights": (OpLinearQuantizerConfig,),
    "prune_weights": (OpMagnitudePrunerConfig, OpThresholdPrunerConfig),
}
# Recipe step names (the CLI's subcommands) and the passes they run.
_STEP_PASSES = {
    "palettize": "palettize_weights",
    "quantize": "linear_quantize_weights",
    "prune": "prune_weights",
}


def _run(
    kind: str,
    model: ModelLike,
    config: ConfigLike,
    joint_compression: bool,
    output_path: str | os.PathLike | None,
    progress: Progress | None,
    with_report: bool,
    return_mlmodel: bool,
) -> ModelResult | tuple[ModelResult, CompressionReport]:
    if not isinstance(joint_compression, bool):
        # ValueError, not TypeError: coremltools raises ValueError here.
        raise ValueError(  # noqa: TRY004
            f"joint_compression only supports bool, but got {type(joint_compression)}"
        )
    config_json, functions = _native_config(config, kind, _ACCEPTED[kind])
    result, (records, skipped) = _into_package(
        model,
        output_path,
        return_mlmodel,
        lambda src, dst: _native.compress(
            kind, src, dst, config_json, joint_compression, functions or None, progress
        ),
    )
    report = CompressionReport(records, skipped)
    # Reported at the caller of palettize_weights & co., two frames up.
    _warn_skipped([report], None, stacklevel=3)
    _warn_per_block([report], None, stacklevel=3)
    return (result, report) if with_report else result


def _into_package(
    model: ModelLike,
    output_path: str | os.PathLike | None,
    return_mlmodel: bool,
    write: Callable[[str, str], tuple[str, Any]],
) -> tuple[ModelResult, Any]:
    """Runs ``write(source, dest)`` from the model's package to ``output_path`` (a temporary
    package when None, removed with its directory if ``write`` fails or is interrupted);
    returns the written model, of the input's kind (see ``_interop.wrap_output``), and what
    ``write`` returned besides its path."""
    source = package_path(model)
    dest = Path(output_path) if output_path is not None else temp_package_path(source.stem)
    temporary = output_path is None
    with _removed_on_failure(dest if temporary else None):
        written, extra = write(str(source), str(dest))
        result = wrap_output(Path(written), model, temporary, return_mlmodel)
    return result, extra


_COMMON_PARAMETERS = """    mlmodel : str, os.PathLike or coremltools.models.MLModel
        The model: a ``.mlpackage`` path, or an MLModel of an ML Program. It is never modified.
    config : OptimizationConfig, op config, coremltools config, dict or YAML path
        What to compress and how (see ``coreml_compress.config.as_config``); an op config
        applies to every op. Dict and YAML input take the ``OptimizationConfig.from_dict`` form.
    joint_compression : bool
        Compress weights that are already compressed further (e.g. quantize a pruned model's
        nonzero values), as coremltools does.
    output_path : str or os.PathLike, optional
        Where to write the package. Default: a new temporary package (an MLModel over it is
        removed at exit, as coremltools does with its own).
    progress : callable(done, total), optional
        Called as weights are processed.
    with_report : bool
        Also return the per-weight report.
    return_mlmodel : bool
        Return a coremltools MLModel even when ``mlmodel`` is a path (imports coremltools).

    Returns
    -------
    pathlib.Path or coremltools.models.MLModel
        The written package, of the input's kind: its path for a path, an MLModel for an
        MLModel (or with ``return_mlmodel=True``). With ``with_report=True``, the tuple
        ``(model, report)``: one dict per compressed weight with ``function``, ``name``,
        ``shape``, ``bytes_before``, ``bytes_after``, ``snr_db`` and ``per_block`` (quantized
        in blocks along an axis: not run by the Neural Engine).

    Raises
    ------
    coreml_compress.errors.ConfigError
        A mistake in a dict or YAML config (also a ValueError or TypeError, as coremltools).
    ValueError
        A config of the wrong kind for this pass, or invalid for this model
        (``CompressionConfigError``).
    coreml_compress.errors.CoreMLCompressError
        A malformed or unsupported package (``MalformedPackageError``,
        ``UnsupportedModelError``), or a file that cannot be read or written
        (``PackageIOError``, an OSError).
"""


def _documented(summary: str, example: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Gives a pass its numpy-style docstring: its summary, the shared parameters, its example."""

    def document(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__doc__ = f"{summary}\n\n    Parameters\n    ----------\n{_COMMON_PARAMETERS}\n    Example\n    -------\n{example}"
        return fn

    return document


@_documented(
    "Palettize weights (k-means, uniform, unique or custom look-up tables), as coremltools'\n"
    "    ``palettize_weights`` does, on the engine.",
    """    >>> from coreml_compress import optimize
    >>> config = optimize.OpPalettizerConfig(nbits=4, granularity="per_grouped_channel",
    ...                                      group_size=16)
    >>> path, report = optimize.palettize_weights(
    ...     "model.mlpackage", config, output_path="model.4bit.mlpackage", with_report=True)
""",
)
def palettize_weights(
    mlmodel: ModelLike,
    config: ConfigLike,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
    return_mlmodel: bool = False,
) -> ModelResult | tuple[ModelResult, CompressionReport]:
    return _run(
        "palettize_weights",
        mlmodel,
        config,
        joint_compression,
        output_path,
        progress,
        with_report,
        return_mlmodel,
    )


@_documented(
    "Linearly quantize weights to int8/uint8/int4/uint4, bit-identical to coremltools'\n"
    "    ``linear_quantize_weights``.",
    """    >>> from coreml_compress import optimize
    >>> config = optimize.OpLinearQuantizerConfig(dtype="int4", granularity="per_block",
    ...                                           block_size=32)
    >>> optimize.linear_quantize_weights("model.mlpackage", config,
    ...                                  output_path="model.int4.mlpackage")
    PosixPath('model.int4.mlpackage')
""",
)
def linear_quantize_weights(
    mlmodel: ModelLike,
    config: ConfigLike,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
    return_mlmodel: bool = False,
) -> ModelResult | tuple[ModelResult, CompressionReport]:
    return _run(
        "linear_quantize_weights",
        mlmodel,
        config,
        joint_compression,
        output_path,
        progress,
        with_report,
        return_mlmodel,
    )


@_documented(
    "Prune weights (magnitude, block, n:m or threshold sparsity), as coremltools'\n"
    "    ``prune_weights`` does, on the engine.",
    """    >>> from coreml_compress import optimize
    >>> optimize.prune_weights("model.mlpackage",
    ...                        optimize.OpMagnitudePrunerConfig(n_m_ratio=(2, 4)),
    ...                        output_path="model.2of4.mlpackage")
    PosixPath('model.2of4.mlpackage')
""",
)
def prune_weights(
    mlmodel: ModelLike,
    config: ConfigLike,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
    return_mlmodel: bool = False,
) -> ModelResult | tuple[ModelResult, CompressionReport]:
    return _run(
        "prune_weights",
        mlmodel,
        config,
        joint_compression,
        output_path,
        progress,
        with_report,
        return_mlmodel,
    )


def load_recipe(path: str | os.PathLike[str]) -> list[tuple[str, OptimizationConfig]]:
    """Read a recipe file.

    Parameters
    ----------
    path : str or os.PathLike
        A YAML file: ``steps:``, a list of one-key mappings ``{palettize|quantize|prune: config}``
        where the config is an op config mapping (``config_type: OpPalettizerConfig, nbits: 4``,
        used as the global config) or a whole ``OptimizationConfig`` mapping.

    Returns
    -------
    list of (str, OptimizationConfig)
        The steps, as :func:`apply_recipe` takes them.

    Raises
    ------
    coreml_compress.errors.ConfigError
        Any mistake, naming the file (``FILE:LINE`` for YAML syntax), the step and the key.

    Example
    -------
    >>> steps = load_recipe("recipe.yaml")   # steps: [{prune: {...}}, {palettize: {...}}]
    >>> [name for name, _ in steps]
    ['prune', 'palettize']
    """
    return _config.load_yaml(path, _recipe_steps)


def _recipe_steps(document: Any) -> list[tuple[str, OptimizationConfig]]:
    steps = document.get("steps") if isinstance(document, Mapping) else None
    if not isinstance(steps, list) or not steps:
        raise ConfigError("a recipe needs a non-empty 'steps' list")
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or len(step) != 1:
            raise ConfigError(
                f"step {i + 1} must be one mapping {{STEP: config}}, STEP one of {sorted(_STEP_PASSES)}"
            )
        name, body = next(iter(step.items()))
        if name not in _STEP_PASSES:
            raise ConfigError(
                f"step {i + 1}: unknown step {name!r}{_config.did_you_mean(str(name), _STEP_PASSES)}"
            )
        out.append((name, _step_config(f"step {i + 1} ({name})", body or {})))
    return out


def _step_config(where: str, body: Any) -> OptimizationConfig:
    """A recipe file step's config: an op config mapping (the global config) or a whole
    OptimizationConfig mapping; errors located at ``where``."""
    try:
        if not isinstance(body, Mapping):
            raise ConfigTypeError(
                f"expected the step's config as a mapping, got {type(body).__name__}"
            )
        config_type = body.get("config_type", "OptimizationConfig")
        if config_type == "OptimizationConfig":
            return OptimizationConfig.from_dict({**body, "config_type": config_type})
        return OptimizationConfig.from_dict({"config_type": config_type, "global_config": body})
    except ConfigError as e:
        raise e.located(where)


def apply_recipe(
    mlmodel: ModelLike,
    steps: Recipe,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
    return_mlmodel: bool = False,
) -> ModelResult | tuple[ModelResult, list[CompressionReport]]:
    """Run several compression steps in one pass over the weights, each after the first with
    joint compression (nothing intermediate is written).

    The result equals running the passes one after the other with ``joint_compression=True``
    from the second on.

    Parameters
    ----------
    mlmodel : str, os.PathLike or coremltools.models.MLModel
        The model: a ``.mlpackage`` path, or an MLModel of an ML Program. It is never modified.
    steps : sequence of (str, config), or a YAML path
        ``[("prune", prune_config), ("palettize", palettize_config)]``: a step is
        ``palettize``, ``quantize`` or ``prune`` (or the pass's name) with anything the pass
        takes as its config; or a recipe file, as the CLI's ``compress --recipe`` takes it
        (see :func:`load_recipe`).
    output_path : str or os.PathLike, optional
        Where to write the package. Default: a new temporary package.
    progress : callable(done, total), optional
        Called as weights are processed.
    with_report : bool
        Also return the reports: one list of per-weight dicts per step.
    return_mlmodel : bool
        Return a coremltools MLModel even when ``mlmodel`` is a path (imports coremltools).

    Returns
    -------
    pathlib.Path or coremltools.models.MLModel
        The written package, of the input's kind; with ``with_report=True`` the tuple
        ``(model, reports)``.

    Raises
    ------
    coreml_compress.errors.ConfigError
        A mistake in the recipe, naming the file, the step and the key.
    coreml_compress.errors.CoreMLCompressError
        As the single passes (see :func:`palettize_weights`).

    Example
    -------
    >>> from coreml_compress import optimize
    >>> optimize.apply_recipe("model.mlpackage", "recipe.yaml", output_path="small.mlpackage")
    PosixPath('small.mlpackage')
    """
    if isinstance(steps, (str, os.PathLike)):
        steps = load_recipe(steps)
    if not steps:
        raise ConfigError("a recipe needs at least one step")
    native_steps = []
    functions: dict[int, Callable] = {}
    for i, (name, config) in enumerate(steps):
        kind = _STEP_PASSES.get(name, name)
        where = f"step {i + 1} ({name})"
        if kind not in _ACCEPTED:
            raise ConfigError(
                f"unknown step {name!r}{_config.did_you_mean(str(name), _STEP_PASSES)}"
            ).located(f"step {i + 1}")
        try:
            config_json, step_functions = _native_config(config, kind, _ACCEPTED[kind])
        except ConfigError as e:
            raise e.located(where)
        native_steps.append((kind, config_json))
        functions.update(step_functions)
    result, step_lists = _into_package(
        mlmodel,
        output_path,
        return_mlmodel,
        lambda src, dst: _native.compress_recipe(
            src, dst, native_steps, functions or None, progress
        ),
    )
    reports = [CompressionReport(records, skipped) for records, skipped in step_lists]
    _warn_skipped(reports, [name for name, _ in steps], stacklevel=2)
    _warn_per_block(reports, [name for name, _ in steps], stacklevel=2)
    return (result, reports) if with_report else result


def decompress_weights(
    mlmodel: ModelLike,
    *,
    output_path: str | os.PathLike | None = None,
    return_mlmodel: bool = False,
) -> ModelResult:
    """Materialize every ``constexpr_*`` op into a dense ``const``, bit-identical to
    coremltools' ``decompress_weights``.

    Parameters
    ----------
    mlmodel : str, os.PathLike or coremltools.models.MLModel
        The model: a ``.mlpackage`` path, or an MLModel of an ML Program. It is never modified.
    output_path : str or os.PathLike, optional
        Where to write the package. Default: a new temporary package.
    return_mlmodel : bool
        Return a coremltools MLModel even when ``mlmodel`` is a path (imports coremltools).

    Returns
    -------
    pathlib.Path or coremltools.models.MLModel
        The written package, of the input's kind.

    Raises
    ------
    coreml_compress.errors.CoreMLCompressError
        A malformed or unsupported package, or a file that cannot be read or written.

    Example
    -------
    >>> from coreml_compress import optimize
    >>> optimize.decompress_weights("model.4bit.mlpackage", output_path="dense.mlpackage")
    PosixPath('dense.mlpackage')
    """
    result, _ = _into_package(
        mlmodel, output_path, return_mlmodel, lambda src, dst: (_native.decompress(src, dst), None)
    )
    return result
