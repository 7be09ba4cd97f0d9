#!/usr/bin/env python3
"""Generate the LLM-shaped synthetic ML Program used by the benchmarks (cached).

The model matches ``/work/shared/reference/coremltools-llm-timings.md``: a TinyLlama-shaped
program built with the MIL builder (opset iOS18), converted with
``ct.convert(..., minimum_deployment_target=iOS18, compute_precision=FLOAT16,
skip_model_load=True)``:

- input ``ids``: int32 (8,), fed to a ``gather`` from a vocab x hidden embedding;
- per layer: q and o hidden x hidden, k and v kv_dim x hidden, gate and up intermediate x hidden,
  down hidden x intermediate ``linear`` ops, joined with relu/add/mul/reduce_sum so shapes chain
  (not a real transformer);
- ``lm_head``: a vocab x hidden ``linear``.

The full size (22 layers, hidden 2048, kv 256, intermediate 5632, vocab 32000) has 1,099,956,224
parameters stored as fp16 (``weight.bin`` 2,200,002,624 bytes). Weights are N(0, 0.02); the
``linear`` ops get zero-bias consts that ``const_deduplication`` merges into 4 shared vectors.

Memory: building the program with real 1.1B-element arrays costs coremltools ~65 s and 8.5 GB peak
RSS. Here every weight is first a *broadcast view* of one random fp16 row (a few KB each; rows
differ, so const deduplication keeps every weight), the program is converted and saved, and then
each weight blob in ``weight.bin`` is overwritten in place, chunk by chunk, with fp16 values drawn
from ``np.random.default_rng(...).standard_normal(dtype=np.float32) * 0.02``. The graph and the
blob layout are exactly what coremltools writes; only the bytes of the weight data change.

Determinism: each weight's values depend only on ``seed``, the const name and the fixed chunk size
(:data:`CHUNK_ELEMENTS`), not on thread scheduling.

Usage::

    python3 benchmarks/make_llm.py                 # full 1.1B model, cached
    python3 benchmarks/make_llm.py --scale small   # 1 layer, full widths
    python3 benchmarks/make_llm.py --scale 0.25    # round(22 * 0.25) layers
    python3 benchmarks/make_llm.py --scale tiny --out /tmp/tiny.mlpackage --force
    python3 benchmarks/make_llm.py --scale 7b      # 6.74 B parameters, 13.5 GB (~17 GB free
                                                   # disk for it and a compressed copy)

From another benchmark script::

    from make_llm import llm_path, make_llm
    pkg = llm_path("small")          # build once under benchmarks/.cache/, then reuse
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike[str]

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
#: Elements generated per RNG call; part of the data definition (changing it changes weights).
CHUNK_ELEMENTS = 1 << 23
WEIGHT_STD = 0.02
_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_FP16 = 1


@dataclass(frozen=True)
class LLMShape:
    """Shape of the synthetic LLM (the defaults are the full 1.1B TinyLlama-like model)."""

    layers: int = 22
    hidden: int = 2048
    kv_dim: int = 256
    intermediate: int = 5632
    vocab: int = 32000
    seq_len: int = 8

    def weight_shapes(self) -> dict[str, tuple[int, int]]:
        """Const name -> shape of every weight matrix, in program order."""
        h, kv, ff = self.hidden, self.kv_dim, self.intermediate
        shapes: dict[str, tuple[int, int]] = {"embed_tokens_weight": (self.vocab, h)}
        for i in range(self.layers):
            shapes.update(
                {
                    f"layers_{i}_q_proj_weight": (h, h),
                    f"layers_{i}_k_proj_weight": (kv, h),
                    f"layers_{i}_v_proj_weight": (kv, h),
                    f"layers_{i}_o_proj_weight": (h, h),
                    f"layers_{i}_gate_proj_weight": (ff, h),
                    f"layers_{i}_up_proj_weight": (ff, h),
                    f"layers_{i}_down_proj_weight": (h, ff),
                }
            )
        shapes["lm_head_weight"] = (self.vocab, h)
        return shapes

    @property
    def num_params(self) -> int:
        return sum(a * b for a, b in self.weight_shapes().values())

    @property
    def tag(self) -> str:
        full = LLMShape()
        if replace(self, layers=full.layers) == full:
            return f"llm-l{self.layers}"
        return (
            f"llm-l{self.layers}-h{self.hidden}-kv{self.kv_dim}-ff{self.intermediate}"
            f"-v{self.vocab}-s{self.seq_len}"
        )


#: Named sizes for ``--scale``.
SCALES: dict[str, LLMShape] = {
    "full": LLMShape(),  # 1.10 B parameters, 2.2 GB
    "medium": LLMShape(layers=4),  # 0.31 B parameters
    "small": LLMShape(layers=1),  # 0.18 B parameters, every weight shape of the full model
    "tiny": LLMShape(layers=2, hidden=256, kv_dim=32, intermediate=704, vocab=4000),  # 3.4 M
    # Llama-2-7B's shapes (multi-head attention: kv = hidden): 6.74 B parameters, 13.5 GB.
    "7b": LLMShape(layers=32, hidden=4096, kv_dim=4096, intermediate=11008, vocab=32000),
}


def shape_for_scale(scale: str | float) -> LLMShape:
    """A named scale from :data:`SCALES`, or a float fraction of the 22 full-size layers."""
    if isinstance(scale, str) and scale in SCALES:
        return SCALES[scale]
    try:
        frac = float(scale)
    except ValueError:
        raise ValueError(f"unknown scale {scale!r}; use one of {sorted(SCALES)} or a float")
    if not 0 < frac <= 1:
        raise ValueError(f"scale fraction must be in (0, 1], got {frac}")
    return LLMShape(layers=max(1, round(LLMShape().layers * frac)))


def _seed_for(seed: int, name: str, chunk: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(name.encode()), chunk])


def _placeholder(seed: int, name: str, shape: tuple[int, int]) -> np.ndarray:
    """Read-only broadcast of one distinct random fp16 row: ~shape[1] * 2 bytes of memory."""
    rng = np.random.default_rng(_seed_for(seed, name, 1 << 31))
    row = (rng.standard_normal(shape[1], dtype=np.float32) * WEIGHT_STD).astype(np.float16)
    return np.broadcast_to(row, shape)


def _build_and_save(shape: LLMShape, seed: int, dest: Path) -> None:
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    weights = {n: _placeholder(seed, n, s) for n, s in shape.weight_shapes().items()}

    def w(name: str) -> Any:
        return mb.const(val=weights[name], name=name)

    @mb.program(
        input_specs=[mb.TensorSpec((shape.seq_len,), dtype=types.int32)],
        opset_version=ct.target.iOS18,
    )
    def prog(ids: Any) -> Any:
        h = mb.gather(x=w("embed_tokens_weight"), indices=ids, axis=0, name="embed")
        for i in range(shape.layers):
            p = f"layers_{i}_"
            q = mb.linear(x=h, weight=w(p + "q_proj_weight"), name=p + "q_proj")
            k = mb.linear(x=h, weight=w(p + "k_proj_weight"), name=p + "k_proj")
            v = mb.linear(x=h, weight=w(p + "v_proj_weight"), name=p + "v_proj")
            kv = mb.mul(x=k, y=v, name=p + "kv")
            s = mb.reduce_sum(x=kv, axes=[-1], keep_dims=True, name=p + "score")
            a = mb.mul(x=q, y=s, name=p + "attn")
            o = mb.linear(x=a, weight=w(p + "o_proj_weight"), name=p + "o_proj")
            h = mb.add(x=h, y=o, name=p + "res1")
            g = mb.relu(
                x=mb.linear(x=h, weight=w(p + "gate_proj_weight"), name=p + "gate_proj"),
                name=p + "act",
            )
            u = mb.linear(x=h, weight=w(p + "up_proj_weight"), name=p + "up_proj")
            m = mb.mul(x=g, y=u, name=p + "mlp")
            d = mb.linear(x=m, weight=w(p + "down_proj_weight"), name=p + "down_proj")
            h = mb.add(x=h, y=d, name=p + "res2")
        return mb.linear(x=h, weight=w("lm_head_weight"), name="logits")

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )
    model.save(str(dest))


def _weight_blobs(pkg: Path) -> Iterator[tuple[str, tuple[int, ...], int]]:
    """(const name, shape, blob metadata offset) of every fp16 rank-2 const stored in weight.bin."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(pkg))
    for func in spec.mlProgram.functions.values():
        for op in func.block_specializations[func.opset].operations:
            if op.type != "const":
                continue
            val = op.attributes["val"]
            if val.WhichOneof("value") != "blobFileValue":
                continue
            dims = tuple(d.constant.size for d in val.type.tensorType.dimensions)
            if len(dims) == 2:
                yield op.outputs[0].name, dims, val.blobFileValue.offset


def _fill_blob(fd: int, name: str, shape: tuple[int, ...], meta_offset: int, seed: int) -> int:
    meta = os.pread(fd, 64, meta_offset)
    sentinel, dtype, size, data_offset = struct.unpack_from("<IIQQ", meta)
    n = int(np.prod(shape))
    if sentinel != _BLOB_SENTINEL or dtype != _BLOB_FP16 or size != 2 * n:
        raise ValueError(
            f"unexpected blob for {name}: sentinel={sentinel:#x} dtype={dtype} size={size}"
        )
    for chunk, start in enumerate(range(0, n, CHUNK_ELEMENTS)):
        count = min(CHUNK_ELEMENTS, n - start)
        rng = np.random.default_rng(_seed_for(seed, name, chunk))
        x = rng.standard_normal(count, dtype=np.float32)
        x *= WEIGHT_STD
        os.pwrite(fd, x.astype(np.float16).tobytes(), data_offset + 2 * start)
    return n


def make_llm(
    path: PathLike,
    layers: int = 22,
    hidden: int = 2048,
    kv_dim: int = 256,
    intermediate: int = 5632,
    vocab: int = 32000,
    seq_len: int = 8,
    *,
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 2,
    verbose: bool = False,
) -> Path:
    """Build the synthetic LLM package at ``path`` (returned as is if it already exists).

    The package is assembled in a temporary sibling directory and renamed into place, so an
    existing ``path`` is always complete. A ``<path>.json`` sidecar records the shape and seed.
    """
    shape = LLMShape(layers, hidden, kv_dim, intermediate, vocab, seq_len)
    dest = Path(path)
    sidecar = dest.with_name(dest.name + ".json")
    if (dest / "Manifest.json").is_file() and not overwrite:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.stem}-", dir=dest.parent))
    try:
        tmp_pkg = tmp_dir / dest.name
        t0 = time.perf_counter()
        _build_and_save(shape, seed, tmp_pkg)
        t1 = time.perf_counter()
        weight_bin = tmp_pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        blobs = list(_weight_blobs(tmp_pkg))
        expected = shape.weight_shapes()
        found = {name: s for name, s, _ in blobs}
        if found != expected:
            missing = sorted(set(expected) ^ set(found))[:5]
            raise RuntimeError(f"converted program does not hold the expected weights: {missing}")
        fd = os.open(weight_bin, os.O_RDWR)
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                filled = sum(pool.map(lambda b: _fill_blob(fd, b[0], b[1], b[2], seed), blobs))
            os.fsync(fd)
        finally:
            os.close(fd)
        t2 = time.perf_counter()
        if verbose:
            print(f"  convert+save {t1 - t0:.1f} s, fill {filled:,} fp16 values {t2 - t1:.1f} s")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp_pkg, dest)
        info = {**asdict(shape), "seed": seed, "num_params": shape.num_params, "std": WEIGHT_STD}
        sidecar.write_text(json.dumps(info, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest


def llm_path(
    scale: str | float = "full", *, seed: int = 0, cache_dir: PathLike = CACHE_DIR
) -> Path:
    """Path of the cached package for ``scale`` (built on first use)."""
    shape = shape_for_scale(scale)
    suffix = "" if seed == 0 else f"-seed{seed}"
    dest = Path(cache_dir) / f"{shape.tag}{suffix}.mlpackage"
    return make_llm(dest, **asdict(shape), seed=seed)


def package_size(path: PathLike) -> int:
    """Total bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _peak_rss_mb() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024 if sys.platform != "darwin" else ru / 1024 / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale",
        default="full",
        help=f"one of {', '.join(SCALES)} or a fraction of the 22 layers (default: full)",
    )
    parser.add_argument("--layers", type=int, help="override the number of layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output .mlpackage (default: benchmarks/.cache/)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--workers", type=int, default=2, help="threads filling weights")
    args = parser.parse_args(argv)

    shape = shape_for_scale(args.scale)
    if args.layers is not None:
        shape = replace(shape, layers=args.layers)
    suffix = "" if args.seed == 0 else f"-seed{args.seed}"
    dest = args.out or CACHE_DIR / f"{shape.tag}{suffix}.mlpackage"
    cached = (dest / "Manifest.json").is_file() and not args.force
    print(f"{'using cached' if cached else 'building'} {dest}")
    print(f"  {shape}: {shape.num_params:,} parameters")
    t0 = time.perf_counter()
    make_llm(
        dest,
        **asdict(shape),
        seed=args.seed,
        overwrite=args.force,
        workers=args.workers,
        verbose=True,
    )
    elapsed = time.perf_counter() - t0
    size = package_size(dest)
    print(f"  package size {size:,} bytes ({size / 1e9:.3f} GB)")
    print(f"  time {elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
