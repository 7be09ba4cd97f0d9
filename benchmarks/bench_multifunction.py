#!/usr/bin/env python3
"""Multifunction merge benchmark: 2 and 4 LLM-shaped functions of ~1 GB each that share base
weights and differ in adapter layers, merged by ``coremltools.utils.save_multifunction`` and by
``coreml_compress.save_multifunction`` (same descriptor semantics).

Inputs (cached under ``benchmarks/.cache/mf/``): the base is ``make_llm`` with 9 of the 22
layers (527 M parameters, ~1.05 GB fp16). Variant *i* is a copy of the base whose ``q_proj`` and
``v_proj`` weights in every layer (a merged LoRA-style adapter, ~85 MB) are overwritten in place
in weight.bin with different random data; every other blob is byte-identical to the base. Each
function comes from its own package (``main`` -> ``f0``..``f3``), default ``f0``.

    python3 benchmarks/bench_multifunction.py            # 3 repeats
    python3 benchmarks/bench_multifunction.py --quick    # tiny model, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import CACHE_DIR, Case, Job
from make_llm import package_size, shape_for_scale

MF_DIR = CACHE_DIR / "mf"
ADAPTER_WEIGHTS = ("q_proj_weight", "v_proj_weight")
TARGET_SPEEDUP = 20.0
TARGET_RSS = 300e6


def _write_variant(base: Path, dest: Path, seed: int) -> None:
    """Copy ``base`` to ``dest`` and overwrite the adapter weights with data from ``seed``."""
    import make_llm

    tmp = dest.with_name(".tmp-" + dest.name)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    weight_bin = tmp / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    fd = os.open(weight_bin, os.O_RDWR)
    changed = 0
    try:
        for name, shape, offset in make_llm._weight_blobs(tmp):
            if name.endswith(ADAPTER_WEIGHTS):
                changed += 2 * make_llm._fill_blob(fd, name, shape, offset, seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    (tmp.parent / (dest.name + ".json")).write_text(
        json.dumps({"base": base.name, "seed": seed, "adapter_bytes": changed}) + "\n"
    )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def ensure_inputs(scale: str, count: int) -> tuple[list[Path], int]:
    """The base package and ``count - 1`` variants; returns (paths, adapter bytes per variant)."""
    shape = shape_for_scale(scale)
    base = CACHE_DIR / f"{shape.tag}.mlpackage"
    if not (base / "Manifest.json").is_file():
        print(f"building {base}", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("make_llm.py")), "--scale", scale],
            check=True,
        )
    MF_DIR.mkdir(parents=True, exist_ok=True)
    paths = [base]
    for i in range(1, count):
        dest = MF_DIR / f"{shape.tag}-adapter{i}.mlpackage"
        if not (dest / "Manifest.json").is_file():
            print(f"writing variant {dest}", file=sys.stderr)
            subprocess.run(
                [sys.executable, __file__, "--make-variant", str(base), str(dest), str(1000 + i)],
                check=True,
            )
        paths.append(dest)
    adapter = 0
    if count > 1:
        info = json.loads((MF_DIR / f"{paths[1].name}.json").read_text())
        adapter = int(info["adapter_bytes"])
    return paths, adapter


def merge_case(paths: list[Path], adapter: int) -> Case:
    functions = [[str(p), "main", f"f{i}"] for i, p in enumerate(paths)]
    args = {"functions": functions, "default": "f0"}
    n = len(paths)
    base_bytes = package_size(paths[0])
    return Case(
        f"{n} functions ({n} × {harness.fmt_bytes(base_bytes)})",
        ct=Job("jobs", "ct_merge", args, timeout_s=1800),
        ours=Job("jobs", "ours_merge", args, block_coremltools=True, timeout_s=1800),
        note=f"inputs {harness.fmt_bytes(n * base_bytes)} in total; ideal weight.bin = base + "
        f"{n - 1} × {harness.fmt_bytes(adapter)} of adapters ≈ "
        f"{harness.fmt_bytes(base_bytes + (n - 1) * adapter)}",
    )


def check_targets(cases: list[Case]) -> None:
    for case in cases:
        a, b = case.ct_result, case.ours_result
        if b is None or b.median("op_s") is None:
            continue
        parts = []
        rss = b.median("rss_bytes")
        if rss is not None:
            ok = rss < TARGET_RSS
            parts.append(f"ours peak RSS < 300 MB: {'met' if ok else 'NOT met'}")
        if a is not None and a.median("op_s"):
            for what, key in (("op", "op_s"), ("wall", "wall_s")):
                r = a.median(key) / b.median(key)
                parts.append(
                    f"≥{TARGET_SPEEDUP:.0f}× faster ({what}): "
                    f"{'met' if r >= TARGET_SPEEDUP else 'NOT met'} ({r:.0f}×)"
                )
        case.note += "; " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.common_args(parser)
    parser.add_argument("--scale", help="make_llm scale of each function (default 9/22 layers)")
    parser.add_argument("--counts", default="2,4", help="function counts (default 2,4)")
    parser.add_argument("--make-variant", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_variant:
        base, dest, seed = args.make_variant
        _write_variant(Path(base), Path(dest), int(seed))
        return 0
    scale = args.scale or ("tiny" if args.quick else str(9 / 22))
    counts = [int(c) for c in args.counts.split(",")]
    paths, adapter = ensure_inputs(scale, max(counts))
    shape = shape_for_scale(scale)
    cases = [merge_case(paths[:n], adapter) for n in counts]
    print(f"bench_multifunction: {shape.tag} ({shape.num_params:,} params each)", file=sys.stderr)
    harness.run_cases(cases, harness.repeats_for(args), mem_limit_gb=args.mem_limit_gb)
    check_targets(cases)
    md = (
        f"### Multifunction merge: functions of {shape.num_params / 1e6:.0f} M parameters "
        f"({shape.layers} layers, {harness.fmt_bytes(package_size(paths[0]))} each) sharing "
        "base weights, differing in the q_proj/v_proj weights of every layer\n\n"
        "coremltools: `ct.utils.MultiFunctionDescriptor()` + `add_function(path, 'main', 'fN')` "
        "+ `save_multifunction`; ours: `coreml_compress.MultiFunctionDescriptor` + "
        '`save_multifunction` with the same arguments. "weights by name": every function\'s '
        "consts hold the same bytes in both outputs (blob order in weight.bin differs).\n\n"
        + harness.markdown_table(cases)
    )
    harness.save_results(f"bench_multifunction{'-quick' if args.quick else ''}", cases, md)
    if args.md_out:
        args.md_out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
