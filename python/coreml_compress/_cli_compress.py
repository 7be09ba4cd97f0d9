"""The compression subcommands of ``coreml-compress``: palettize, quantize, prune, and compress
(a recipe of several steps; every step after the first uses joint compression).

Each writes a new package, shows a progress bar on stderr and closes with a table: per weight its
bits per weight, size before and after, and signal-to-noise ratio of the compressed weight.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from . import config as cfg
from . import optimize


def _progress(label: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} weights")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_compression_report(report: list[dict[str, Any]]) -> str:
    """Per-weight table (bits per weight, size before/after, SNR) and totals."""
    if not report:
        return "No weight was compressed (none matched the config, or all were skipped)."
    headers = ["name", "shape", "bits/w", "before", "after", "SNR dB"]
    rows = []
    for r in report:
        count = math.prod(r["shape"])
        snr = "-" if math.isnan(r["snr_db"]) else "exact" if math.isinf(r["snr_db"]) else f"{r['snr_db']:.1f}"
        rows.append(
            [
                r["name"],
                "x".join(map(str, r["shape"])),
                f"{8 * r['bytes_after'] / count:.2f}",
                _size(r["bytes_before"]),
                _size(r["bytes_after"]),
                snr,
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    before = sum(r["bytes_before"] for r in report)
    after = sum(r["bytes_after"] for r in report)
    params = sum(math.prod(r["shape"]) for r in report)
    out = [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    out.append(
        f"\n{len(report)} weights, {params:,} parameters: {_size(before)} -> {_size(after)} "
        f"({before / max(after, 1):.2f}x smaller, {8 * after / max(params, 1):.2f} bits per weight)"
    )
    return "\n".join(out)


def _run(
    args: argparse.Namespace,
    label: str,
    op_config: Callable[[argparse.Namespace], Any],
    api: Callable[..., Any],
) -> int:
    config = cfg.OptimizationConfig.from_yaml(args.config) if args.config else cfg.OptimizationConfig(
        global_config=op_config(args)
    )
    result = api(args.input, config, output_path=args.output, progress=_progress(label), with_report=True)
    _, report = result
    print(format_compression_report(report))
    print(f"\nWritten to {args.output}")
    return 0


def _palettizer(a: argparse.Namespace) -> Any:
    return cfg.OpPalettizerConfig(
        mode=a.mode,
        nbits=None if a.mode == "unique" else a.nbits,
        granularity=a.granularity.replace("-", "_"),
        group_size=a.group_size,
        channel_axis=a.channel_axis,
        cluster_dim=a.cluster_dim,
        enable_per_channel_scale=a.per_channel_scale,
        weight_threshold=a.weight_threshold,
    )


def _quantizer(a: argparse.Namespace) -> Any:
    return cfg.OpLinearQuantizerConfig(
        mode=a.mode.replace("-", "_"),
        dtype=a.dtype,
        granularity=a.granularity.replace("-", "_"),
        block_size=a.block_size,
        weight_threshold=a.weight_threshold,
    )


def _pruner(a: argparse.Namespace) -> Any:
    if a.threshold is not None:
        return cfg.OpThresholdPrunerConfig(
            threshold=a.threshold,
            minimum_sparsity_percentile=a.min_sparsity,
            weight_threshold=a.weight_threshold,
        )
    n_m = tuple(int(x) for x in a.n_m.split(":")) if a.n_m else None
    return cfg.OpMagnitudePrunerConfig(
        target_sparsity=a.sparsity,
        n_m_ratio=n_m,
        block_size=a.block_size,
        dim=a.dim,
        weight_threshold=a.weight_threshold,
    )


FORCE_HELP = "replace OUTPUT if it is an existing package (anything else is never replaced)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--config", help="a coremltools OptimizationConfig YAML file (overrides the options)")
    p.add_argument("--weight-threshold", type=int, default=2048, help="compress weights larger than this")


_STEPS = ("palettize", "quantize", "prune")


def load_recipe(path: str) -> list[tuple[str, Any]]:
    """A recipe file: ``steps:``, a list of one-key mappings ``{palettize|quantize|prune: config}``
    where the config is an op config mapping (``config_type: OpPalettizerConfig, nbits: 4``, used
    as the global config) or a whole ``OptimizationConfig`` mapping."""
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f)
    steps = doc.get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{path}: a recipe needs a non-empty 'steps' list")
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in _STEPS:
            raise ValueError(f"{path}: step {i + 1} must be one of {sorted(_STEPS)} with its config")
        kind, body = next(iter(step.items()))
        body = dict(body or {})
        if body.get("config_type", "OptimizationConfig") == "OptimizationConfig":
            body.setdefault("config_type", "OptimizationConfig")
            config = cfg.OptimizationConfig.from_dict(body)
        else:
            config = cfg.OptimizationConfig.from_dict(
                {"config_type": "OptimizationConfig", "global_config": body}
            )
        out.append((kind, config))
    return out


def _compress(args: argparse.Namespace) -> int:
    steps = load_recipe(args.recipe)
    label = " then ".join(kind for kind, _ in steps)
    _, reports = optimize.apply_recipe(
        args.input, steps, output_path=args.output, progress=_progress(label), with_report=True
    )
    for i, ((kind, _), report) in enumerate(zip(steps, reports)):
        print(f"Step {i + 1}: {kind}")
        print(format_compression_report(report) + "\n")
    print(f"Written to {args.output}")
    return 0


def add_commands(sub: Any) -> None:
    """Adds palettize, quantize and prune to the CLI's subparsers."""
    p = sub.add_parser("palettize", help="palettize weights (k-means, uniform or unique LUTs)")
    _common(p)
    p.add_argument("--nbits", type=int, default=4, choices=[1, 2, 3, 4, 6, 8])
    p.add_argument("--mode", default="kmeans", choices=["kmeans", "uniform", "unique"])
    p.add_argument("--granularity", default="per-tensor", choices=["per-tensor", "per-grouped-channel"])
    p.add_argument("--group-size", type=int, default=32)
    p.add_argument("--channel-axis", type=int, default=None)
    p.add_argument("--cluster-dim", type=int, default=1)
    p.add_argument("--per-channel-scale", action="store_true")
    p.set_defaults(run=lambda a: _run(a, "palettize", _palettizer, optimize.palettize_weights))

    p = sub.add_parser("quantize", help="linearly quantize weights to int8/uint8/int4/uint4")
    _common(p)
    p.add_argument("--dtype", default="int8", choices=["int8", "uint8", "int4", "uint4"])
    p.add_argument("--mode", default="linear-symmetric", choices=["linear-symmetric", "linear"])
    p.add_argument("--granularity", default="per-channel", choices=["per-tensor", "per-channel", "per-block"])
    p.add_argument("--block-size", type=int, default=32)
    p.set_defaults(run=lambda a: _run(a, "quantize", _quantizer, optimize.linear_quantize_weights))

    p = sub.add_parser("prune", help="prune weights (magnitude, block, n:m or threshold)")
    _common(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--sparsity", type=float, help="fraction of weights to zero (magnitude pruning)")
    how.add_argument("--n-m", help="n:m structured sparsity, e.g. 2:4")
    how.add_argument("--threshold", type=float, help="zero weights with |w| <= threshold")
    p.add_argument("--block-size", type=int, default=None, help="block sparsity with --sparsity")
    p.add_argument("--dim", type=int, default=None, help="axis of blocks or n:m groups")
    p.add_argument("--min-sparsity", type=float, default=0.5, help="with --threshold: skip sparser-than")
    p.set_defaults(run=lambda a: _run(a, "prune", _pruner, optimize.prune_weights))

    p = sub.add_parser("compress", help="run a recipe of steps, e.g. prune 50% then palettize 4 bits")
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument("--recipe", required=True, help="YAML: steps: [{prune: {...}}, {palettize: {...}}]")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_compress)
