"""Type stubs for the Rust engine (``src/python/*.rs``). Paths are returned as ``pathlib.Path``.

Errors are raised as the classes of ``coreml_compress.errors``. Writers refuse an output that is
an input, lies inside one or contains one, or an existing output that is not a package
(``OutputPathError``). A ``progress(done, total)`` callback's exceptions are printed and the work
goes on, except KeyboardInterrupt/SystemExit (also noticed without a callback), which stop it.
"""

from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_Path: TypeAlias = str | PathLike[str]
_Progress: TypeAlias = Callable[[int, int], object] | None

# --- packages (src/python/mod.rs) ----------------------------------------------------------------

def build_info() -> dict[str, str | bool]:
    """``version``, ``portable`` (built with the ``portable`` feature), ``target`` (arch-os) and
    ``half_lanes``: the fp16 conversions the kernels run on this CPU (``f16c``, ``half`` or
    ``software``; ``COREML_COMPRESS_HALF_LANES`` picks one for measurement)."""

def _panic_for_test(on_pool: bool) -> None:
    """Panics inside an engine call (on the pool's worker when ``on_pool``); tests use it to
    check that a panic is raised as ``InternalError``."""

def save_unchanged(input: _Path, output: _Path) -> Path: ...
def decompress(input: _Path, output: _Path, progress: _Progress = None) -> Path: ...
def compress(
    kind: str,
    input: _Path,
    output: _Path,
    config_json: str,
    joint_compression: bool,
    lut_functions: dict[int, Callable[[bytes, str, list[int]], tuple[bytes, bytes]]] | None,
    progress: _Progress = None,
) -> tuple[Path, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Runs ``kind`` (palettize_weights, linear_quantize_weights, prune_weights); returns the
    written path and ``(records, skipped)``: one record per compressed weight (function, name in
    the input model, dense shape, bytes_before, bytes_after — everything the weight stores, as
    ``inspect`` counts it — snr_db, and per_block: quantized with scales in blocks along an
    axis, which the Neural Engine does not run), and one dict per candidate weight left as it was
    (function, name, shape, reason: below_threshold, non_finite, channel_axes, mode,
    unsupported or out_of_range; message: the reason in words)."""

def compress_recipe(
    input: _Path,
    output: _Path,
    steps: list[tuple[str, str]],
    lut_functions: dict[int, Callable[[bytes, str, list[int]], tuple[bytes, bytes]]] | None,
    progress: _Progress = None,
) -> tuple[Path, list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]]:
    """Runs ``steps`` (pass name, config JSON), each after the first with joint compression, in
    one pass over the weights; returns the written path and, per step, ``(records, skipped)`` as
    ``compress`` does (names are those of the weights in the input model)."""

def fit_evaluate(
    input: _Path,
    forms: list[tuple[list[tuple[str, str]], bool]],
    importance: dict[str, list[float]],
    progress: _Progress = None,
) -> dict[str, Any]:
    """Measures each form (recipe steps as ``compress_recipe`` takes them, and whether it is
    iOS18-only) on every weight some form selects, writing nothing. Returns ``ios18``,
    ``weights`` (function, name, output, shape, consumer_types, dense_bytes, signal, and per
    form either ``unavailable`` or blob_bytes, inline_bytes, sse, weighted_sse) and ``blobs``
    (file_name, offset, data_bytes, weights, other_readers), every blob the input uses."""

def write_example(output: _Path) -> Path: ...

# --- inspect (src/python/inspect.rs) ----------------------------------------------------------------

def inspect(path: _Path) -> list[dict[str, Any]]:
    """One dict per weight: name, var, function, consumers, block_output, shape, dtype,
    bytes_on_disk, counted_bytes (less blobs an earlier weight holds), shared_with (other functions
    reading its blobs), compression, chain, params, distinct."""

def model_versions(path: _Path) -> dict[str, Any]:
    """``{"specification_version": int, "opsets": {function: opset name}}``."""

# --- kernels on numpy arrays (src/python/kernels.rs) -------------------------------------------

def palettize_array(
    array: npt.NDArray[np.floating[Any]],
    mode: str,
    nbits: int | None,
    channel_axis: int,
    group_size: int,
    cluster_dim: int,
    per_channel_scale: bool,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8], npt.NDArray[Any] | None, int, int | None] | str:
    """``(lut, indices, per_channel_scale, nbits, vector_axis)``, or the reason it is skipped."""

def lut_to_dense_array(
    indices: npt.NDArray[np.uint8], lut: npt.NDArray[Any], vector_axis: int | None = None
) -> npt.NDArray[Any]: ...
def quantize_array(
    array: npt.NDArray[np.floating[Any]],
    block_sizes: list[int],
    nbits: int,
    signed: bool,
    symmetric: bool,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any] | None] | str:
    """``(codes, scale, offset)``, or the reason the weight is skipped."""

def dequantize_array(
    data: npt.NDArray[Any], scale: npt.NDArray[Any], offset: npt.NDArray[Any] | None = None
) -> npt.NDArray[Any]: ...
def prune_array(
    array: npt.NDArray[np.floating[Any]],
    kind: str,
    target_sparsity: float = 0.0,
    block_size: int | None = None,
    n: int = 0,
    m: int = 0,
    dim: int = 0,
    threshold: float = 0.0,
    minimum_sparsity_percentile: float = 0.0,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[Any], npt.NDArray[Any]] | str:
    """``(mask, nonzero_data, dense)``, or the reason the weight is skipped."""

# --- multifunction packages (src/python/multifunction.rs) -------------------------------------

def function_names(path: _Path) -> list[str]:
    """``description.functions`` of a multifunction package, ``["main"]`` otherwise."""

def merge(
    functions: list[tuple[_Path, str, str]],
    default_function: str,
    output: _Path,
    progress: _Progress = None,
) -> dict[str, Any]:
    """Merges ``(package, source function, target name)`` triples. Returns path, functions,
    blob_references, blobs_written, weight_file_bytes, separate_bytes, saved_bytes."""

def extract_function(input: _Path, function: str, output: _Path) -> dict[str, Any]:
    """One function as a single-function package; returns the same keys as :func:`merge`."""

# --- calibration kernels for coreml_compress.torch (src/python/torch_kernels.rs) ---------------

def hessian_accumulate(
    h: npt.NDArray[np.float32], x: npt.NDArray[np.float32], seen: float, samples: float
) -> float:
    """``H ← H·seen/(seen+samples) + 2/(seen+samples)·XᵀX`` in place (C-contiguous float32);
    returns ``seen + samples``."""

def gptq(
    weight: npt.NDArray[np.float32],
    hessian: npt.NDArray[np.float32],
    n_bits: int,
    symmetric: bool = True,
    per_channel: bool = True,
    normal_float: bool = False,
    block_size: int | None = None,
    act_order: bool = False,
    damp: float = 0.01,
    group: int = 128,
) -> dict[str, Any]:
    """GPTQ of ``weight [rows, cols]``: ``weight``, ``scale`` and ``zero_point``
    (``[rows, n_blocks]``, unsigned grid), ``loss``."""

def sparsegpt(
    weight: npt.NDArray[np.float32],
    hessian: npt.NDArray[np.float32],
    target_sparsity: float = 0.5,
    n_m: tuple[int, int] | None = None,
    n_bits: int | None = None,
    symmetric: bool = True,
    per_channel: bool = True,
    normal_float: bool = False,
    damp: float = 0.01,
    group: int = 128,
) -> dict[str, Any]:
    """SparseGPT of ``weight [rows, cols]`` (same keys as :func:`gptq`)."""

def weighted_palettize(
    values: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    n_groups: int,
    k: int,
    max_exact: int = 4194304,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float]:
    """Exact weighted 1-D k-means per contiguous group: ``(dense, luts [n_groups, k], sse)``."""
