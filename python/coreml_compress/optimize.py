"""coremltools-compatible compression entry points (``coremltools.optimize.coreml`` names and
signatures), running on the Rust engine.

Each function takes a ``.mlpackage`` path or a coremltools ``MLModel`` and returns an ``MLModel``
when coremltools is installed (the path of the written package otherwise). Keyword-only additions
to coremltools' signatures: ``output_path`` places the result (by default it goes to a temporary
package, as coremltools does); ``progress(done, total)`` is called as weights are processed;
``with_report=True`` returns ``(model, report)``: a :class:`CompressionReport`, one dict per
compressed weight (function, name, shape, bytes_before, bytes_after, snr_db), with the weights
left uncompressed in ``report.skipped``. Weights the config asked for but that were skipped (see
:class:`~coreml_compress.errors.SkippedWeightsWarning`) are also named in one warning per call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import _native
from . import config as _config
from ._interop import ModelLike, package_path, temp_package_path, wrap_output
from .config import (
    OpLinearQuantizerConfig,
    OpMagnitudePrunerConfig,
    OpPalettizerConfig,
    OpThresholdPrunerConfig,
    OptimizationConfig,
)
from .errors import SkippedWeightsWarning

__all__ = [
    "CompressionReport",
    "OpLinearQuantizerConfig",
    "OpMagnitudePrunerConfig",
    "OpPalettizerConfig",
    "OpThresholdPrunerConfig",
    "OptimizationConfig",
    "apply_recipe",
    "decompress_weights",
    "linear_quantize_weights",
    "palettize_weights",
    "prune_weights",
]

Progress = Callable[[int, int], None]


class CompressionReport(list):
    """What one pass (or recipe step) did: one dict per compressed weight (function, name in the
    input model, shape, bytes_before, bytes_after, snr_db; sizes count everything the weight
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


def _warn_skipped(reports: list[CompressionReport], labels: list[str] | None, stacklevel: int) -> None:
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
    config: Any, pass_name: str, accepted: tuple[type, ...]
) -> tuple[str, dict[int, Callable]]:
    """The engine's JSON form of a config, after coremltools' type check for this pass; and the
    user functions (CUSTOM palettization) it refers to, by id."""
    if config is None:
        raise ValueError(f"{pass_name} needs a config (an OptimizationConfig)")
    cfg = _config.as_config(config)
    names = ", ".join(t.__name__ for t in accepted)
    for op_config in [cfg.global_config, *cfg.op_type_configs.values(), *cfg.op_name_configs.values()]:
        if op_config is not None and not isinstance(op_config, accepted):
            raise ValueError(
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
_STEP_PASSES = {"palettize": "palettize_weights", "quantize": "linear_quantize_weights", "prune": "prune_weights"}


def _run(
    kind: str,
    model: ModelLike,
    config: Any,
    joint_compression: bool,
    output_path: str | os.PathLike | None,
    progress: Progress | None,
    with_report: bool,
) -> Any:
    if not isinstance(joint_compression, bool):
        # ValueError, not TypeError: coremltools raises ValueError here.
        raise ValueError(  # noqa: TRY004
            f"joint_compression only supports bool, but got {type(joint_compression)}"
        )
    config_json, functions = _native_config(config, kind, _ACCEPTED[kind])
    result, (records, skipped) = _into_package(
        model,
        output_path,
        lambda src, dst: _native.compress(
            kind, src, dst, config_json, joint_compression, functions or None, progress
        ),
    )
    report = CompressionReport(records, skipped)
    # Reported at the caller of palettize_weights & co., two frames up.
    _warn_skipped([report], None, stacklevel=3)
    return (result, report) if with_report else result


def _into_package(
    model: ModelLike,
    output_path: str | os.PathLike | None,
    write: Callable[[str, str], tuple[str, Any]],
) -> tuple[Any, Any]:
    """Runs ``write(source, dest)`` from the model's package to ``output_path`` (a temporary
    package when None, removed if ``write`` fails); returns the written model, wrapped as the
    input was, and what ``write`` returned besides its path."""
    source = package_path(model)
    dest = Path(output_path) if output_path is not None else temp_package_path(source.stem)
    with _removed_on_failure(dest if output_path is None else None):
        written, extra = write(str(source), str(dest))
    return wrap_output(Path(written), model, temporary=output_path is None), extra


def palettize_weights(
    mlmodel: ModelLike,
    config: Any,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
) -> Any:
    """Palettize weights (k-means, uniform, unique or custom LUTs), as coremltools does."""
    return _run("palettize_weights", mlmodel, config, joint_compression, output_path, progress, with_report)


def linear_quantize_weights(
    mlmodel: ModelLike,
    config: Any,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
) -> Any:
    """Linearly quantize weights to int8/uint8/int4/uint4, bit-identical to coremltools."""
    return _run("linear_quantize_weights", mlmodel, config, joint_compression, output_path, progress, with_report)


def prune_weights(
    mlmodel: ModelLike,
    config: Any,
    joint_compression: bool = False,
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
) -> Any:
    """Prune weights (magnitude, block, n:m or threshold sparsity), as coremltools does."""
    return _run("prune_weights", mlmodel, config, joint_compression, output_path, progress, with_report)


def apply_recipe(
    mlmodel: ModelLike,
    steps: Sequence[tuple[str, Any]],
    *,
    output_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    with_report: bool = False,
) -> Any:
    """Runs several compression steps, e.g. ``[("prune", prune_config), ("palettize",
    palettize_config)]``, each after the first with joint compression, in one pass over the
    weights (nothing intermediate is written). A step is ``palettize``, ``quantize`` or ``prune``
    (or the pass's name) with an ``OptimizationConfig``. The result equals running the passes one
    after the other with ``joint_compression=True`` from the second on. With ``with_report``,
    returns ``(model, reports)``: one :class:`CompressionReport` per step."""
    if not steps:
        raise ValueError("a recipe needs at least one step")
    native_steps = []
    functions: dict[int, Callable] = {}
    for i, (name, config) in enumerate(steps):
        kind = _STEP_PASSES.get(name, name)
        if kind not in _ACCEPTED:
            raise ValueError(f"step {i + 1}: unknown step {name!r}; use one of {sorted(_STEP_PASSES)}")
        config_json, step_functions = _native_config(config, kind, _ACCEPTED[kind])
        native_steps.append((kind, config_json))
        functions.update(step_functions)
    result, step_lists = _into_package(
        mlmodel,
        output_path,
        lambda src, dst: _native.compress_recipe(src, dst, native_steps, functions or None, progress),
    )
    reports = [CompressionReport(records, skipped) for records, skipped in step_lists]
    _warn_skipped(reports, [name for name, _ in steps], stacklevel=2)
    return (result, reports) if with_report else result


def decompress_weights(
    mlmodel: ModelLike, *, output_path: str | os.PathLike | None = None
) -> Any:
    """Materialize every ``constexpr_*`` op into a dense ``const``, bit-identical to coremltools."""
    result, _ = _into_package(
        mlmodel, output_path, lambda src, dst: (_native.decompress(src, dst), None)
    )
    return result
