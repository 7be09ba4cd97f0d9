#!/usr/bin/env python3
"""Per-layer benchmark: one 4096x4096 fp16 ``linear`` (iOS18), coremltools 9.0 vs ours.

The package is built once with coremltools' MIL builder (``ct.convert(...,
minimum_deployment_target=iOS18, compute_precision=FLOAT16)``) into ``benchmarks/.cache/``;
weights are N(0, 0.02). Each case runs the public API of both projects on that saved package
in fresh processes (see ``harness.py``, ``jobs.py``).

    python3 benchmarks/bench_layer.py            # 3 repeats, prints a markdown table
    python3 benchmarks/bench_layer.py --quick    # 1024x1024 layer, 1 repeat (smoke run)
    python3 benchmarks/bench_layer.py --half-lanes   # ours only, per fp16 lane conversion
    python3 benchmarks/bench_layer.py --grouped-kmeans --repeats 1   # k-means per bits/group

``--half-lanes`` runs every case of ours three times over, with this project's F16C lanes, the
`half` crate's dispatched conversions (what portable builds and aarch64 run) and pure software
(the `half` crate's const functions), chosen with ``COREML_COMPRESS_HALF_LANES``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import CACHE_DIR, Case, Job

# Targets from the issue: (case name, minimum coremltools/ours op-time ratio).
TARGETS = {
    "palettize kmeans 4-bit per_tensor": 100.0,
    "palettize kmeans 4-bit per_grouped_channel g16": 100.0,
    "linear_quantize int4 per_block 32": 20.0,
    "linear_quantize int8 per_channel": 20.0,
    "prune magnitude 50%": 20.0,
    "prune 2:4": 20.0,
}


def layer_path(n: int) -> Path:
    return CACHE_DIR / f"linear{n}-fp16-ios18.mlpackage"


def int4_path(n: int) -> Path:
    return CACHE_DIR / f"linear{n}-fp16-ios18-int4pb32.mlpackage"


def _build_layer(n: int, dest: Path) -> None:
    import logging

    import numpy as np

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    w = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) * 0.02

    @mb.program(input_specs=[mb.TensorSpec((1, n))], opset_version=ct.target.iOS18)
    def prog(x: Any) -> Any:
        return mb.linear(x=x, weight=w, name="linear")

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )
    tmp = dest.with_name(".tmp-" + dest.name)
    model.save(str(tmp))
    tmp.rename(dest)


def _build_int4(n: int) -> None:
    from coreml_compress import optimize
    from coreml_compress.config import OpLinearQuantizerConfig, OptimizationConfig

    cfg = OptimizationConfig(
        global_config=OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=32)
    )
    dest = int4_path(n)
    optimize.linear_quantize_weights(layer_path(n), cfg, output_path=dest)


def ensure_inputs(n: int) -> tuple[Path, Path]:
    """Build (in a subprocess, once) the fp16 layer and its int4 per_block 32 version."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if not (layer_path(n) / "Manifest.json").is_file():
        print(f"building {layer_path(n)}", file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--build", str(n)], check=True)
    if not (int4_path(n) / "Manifest.json").is_file():
        subprocess.run([sys.executable, __file__, "--build-int4", str(n)], check=True)
    return layer_path(n), int4_path(n)


def pair(name: str, src: Path, kind: str, op: dict[str, Any] | None = None, **kw: Any) -> Case:
    args = {"src": str(src), "kind": kind, "op": op}
    return Case(
        name,
        ct=Job("jobs", "ct_run", args),
        ours=Job("jobs", "ours_run", args, block_coremltools=True),
        **kw,
    )


def cases_for(n: int) -> list[Case]:
    src, int4 = ensure_inputs(n)
    pal = "palettize_weights"
    lq = "linear_quantize_weights"
    prune = "prune_weights"
    return [
        Case(
            "Python start-up + import only",
            ct=Job("jobs", "import_coremltools"),
            ours=Job("jobs", "import_ours", block_coremltools=True),
            compare_outputs=False,
            note="`import coremltools.optimize.coreml` vs `import coreml_compress.optimize`; "
            "a fixed cost inside every wall time below",
        ),
        pair("palettize kmeans 4-bit per_tensor", src, pal, {"mode": "kmeans", "nbits": 4}),
        pair(
            "palettize kmeans 4-bit per_grouped_channel g16",
            src,
            pal,
            {"mode": "kmeans", "nbits": 4, "granularity": "per_grouped_channel", "group_size": 16},
        ),
        pair("palettize uniform 4-bit per_tensor", src, pal, {"mode": "uniform", "nbits": 4}),
        pair(
            "linear_quantize int4 per_block 32",
            src,
            lq,
            {"dtype": "int4", "granularity": "per_block", "block_size": 32},
        ),
        pair("linear_quantize int8 per_channel", src, lq, {"dtype": "int8"}),
        pair("prune magnitude 50%", src, prune, {"target_sparsity": 0.5}),
        pair("prune 2:4", src, prune, {"n_m_ratio": [2, 4]}),
        pair(
            "round trip (no compression)",
            src,
            "roundtrip",
            note="coremltools: `linear_quantize_weights(model, OptimizationConfig())` + "
            "`.save()` (full milproto→pymil→mlprogram path, nothing compressed); ours: "
            "`_native.save_unchanged(src, dst)`",
        ),
        pair("decompress the int4 per_block 32 result", int4, "decompress_weights"),
    ]


# Grouped k-means cases of issue 14: (nbits, group_size, minimum op-time ratio).
GROUPED_KMEANS = [
    (4, 16, 50.0),
    (4, 8, 20.0),
    (4, 32, 20.0),
    (2, 16, 20.0),
    (3, 16, 20.0),
    (6, 16, 20.0),
    (8, 16, 20.0),
]


def grouped_kmeans_cases(n: int) -> list[Case]:
    src, _ = ensure_inputs(n)
    return [
        pair(
            f"palettize kmeans {nbits}-bit per_grouped_channel g{group}",
            src,
            "palettize_weights",
            {
                "mode": "kmeans",
                "nbits": nbits,
                "granularity": "per_grouped_channel",
                "group_size": group,
            },
        )
        for nbits, group, _ in GROUPED_KMEANS
    ]


def ratio_table(cases: list[Case]) -> str:
    """One row per grouped k-means case: op times, the ratio and its target."""
    goals = {f"palettize kmeans {b}-bit per_grouped_channel g{g}": t for b, g, t in GROUPED_KMEANS}
    lines = [
        "| case | coremltools op | ours op | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        a = case.ct_result.median("op_s") if case.ct_result else None
        b = case.ours_result.median("op_s") if case.ours_result else None
        ratio = a / b if a and b else None
        goal = goals[case.name]
        verdict = "—" if ratio is None else ("met" if ratio >= goal else "NOT met")
        lines.append(
            f"| {case.name} | {harness.fmt_s(a)} | {harness.fmt_s(b)} | "
            f"{'—' if ratio is None else f'**{ratio:.0f}×**'} | ≥{goal:.0f}× | {verdict} |"
        )
    return "\n".join(lines) + "\n"


HALF_LANES = ("f16c", "half", "software")


def half_lanes_table(cases: list[Case], repeats: int, mem_limit_gb: float | None) -> str:
    """Op time of each of our cases per lane conversion, and the ratios to the F16C lanes."""
    head = ["case", *(f"{v} op" for v in HALF_LANES), "half / f16c", "software / f16c"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        if case.ours is None or case.ours.kwargs.get("kind") is None:
            continue
        ops = []
        for lanes in HALF_LANES:
            job = Job(**{**asdict(case.ours), "env": {"COREML_COMPRESS_HALF_LANES": lanes}})
            print(f"  {case.name} [{lanes}]", file=sys.stderr, flush=True)
            limit = mem_limit_gb or harness._default_mem_limit_gb()
            ops.append(
                harness.run_job(job, repeats, mem_limit_gb=limit, hashes=False).median("op_s")
            )
        lines.append(
            "| "
            + " | ".join(
                [
                    case.name,
                    *map(harness.fmt_s, ops),
                    *(f"{op / ops[0]:.2f}×" if op and ops[0] else "—" for op in ops[1:]),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def check_targets(cases: list[Case]) -> None:
    for case in cases:
        goal = TARGETS.get(case.name)
        if goal is None or case.ct_result is None or case.ours_result is None:
            continue
        a, b = case.ct_result.median("op_s"), case.ours_result.median("op_s")
        if a and b:
            verdict = "met" if a / b >= goal else "NOT met"
            case.note = (case.note + "; " if case.note else "") + (
                f"target ≥{goal:.0f}× op time: {verdict} ({a / b:.0f}×)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.common_args(parser)
    parser.add_argument("--size", type=int, help="layer is size x size (default 4096)")
    parser.add_argument(
        "--half-lanes", action="store_true", help="ours only, per fp16 lane conversion"
    )
    parser.add_argument(
        "--grouped-kmeans",
        action="store_true",
        help="k-means per nbits and group size: ratio table",
    )
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--build-int4", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        _build_layer(args.build, layer_path(args.build))
        return 0
    if args.build_int4:
        _build_int4(args.build_int4)
        return 0
    n = args.size or (1024 if args.quick else 4096)
    print(f"bench_layer: {n}x{n} fp16 linear", file=sys.stderr)
    if args.half_lanes:
        md = (
            f"### fp16 lane conversions, one {n}×{n} fp16 linear: op time (median)\n\n"
            + half_lanes_table(cases_for(n), harness.repeats_for(args), args.mem_limit_gb)
        )
        if args.md_out:
            args.md_out.write_text(md)
        print(md)
        return 0
    if args.grouped_kmeans:
        cases = harness.run_cases(
            grouped_kmeans_cases(n), harness.repeats_for(args), mem_limit_gb=args.mem_limit_gb
        )
        md = f"### Grouped k-means, one {n}×{n} fp16 linear: op time (median)\n\n" + ratio_table(
            cases
        )
        harness.save_results(f"bench_layer-grouped{'-quick' if args.quick else ''}", cases, md)
        if args.md_out:
            args.md_out.write_text(md)
        print(md)
        return 0
    cases = harness.run_cases(
        cases_for(n), harness.repeats_for(args), mem_limit_gb=args.mem_limit_gb
    )
    check_targets(cases)
    md = (
        f"### One {n}×{n} fp16 linear (iOS18), {n * n / 1e6:.1f} M parameters, "
        f"{harness.fmt_bytes(2 * n * n)} weight.bin\n\n" + harness.markdown_table(cases)
    )
    harness.save_results(f"bench_layer{'-quick' if args.quick else ''}", cases, md)
    if args.md_out:
        args.md_out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
