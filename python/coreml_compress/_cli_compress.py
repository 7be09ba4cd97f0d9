"""The compression subcommands of ``coreml-compress``: palettize, quantize, prune, and compress
(a recipe of several steps; every step after the first uses joint compression).

Each writes a new package, shows a progress bar on stderr and closes with a table: per weight its
bits per weight, size before and after, and signal-to-noise ratio of the compressed weight; then
each weight the config asked for but that was left as it was, with the reason. The exit status is
1, with the reasons, when no weight at all was compressed.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import config as cfg
from . import optimize
from .errors import SkippedWeightsWarning
from .inspect import format_size


class UsageError(Exception):
    """Options that do not make a valid config together; the CLI reports it as a usage error."""


def _parsed(accepted: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: ``parse(text)``, or an error naming the ``accepted`` form (argparse
    prefixes the option: "argument --n-m: expected N:M such as 2:4, got '2-4'")."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    return convert


def _in_range(cast: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = cast(text)
        return value if low <= value <= high else None

    return parse


def _n_m(text: str) -> tuple[int, int] | None:
    n, sep, m = text.partition(":")
    pair = (int(n), int(m)) if sep else None
    return pair if pair is not None and 0 <= pair[0] <= pair[1] and pair[1] > 0 else None


_POSITIVE_INT = _parsed("a positive integer such as 32", _in_range(int, 1, math.inf))
_COUNT = _parsed("an integer >= 0 such as 2048", _in_range(int, 0, math.inf))
_FRACTION = _parsed("a fraction in [0, 1] such as 0.5", _in_range(float, 0.0, 1.0))
_MAGNITUDE = _parsed("a number >= 0 such as 1e-3", _in_range(float, 0.0, math.inf))
_N_M = _parsed("N:M such as 2:4 (N <= M)", _n_m)
_AXIS = _parsed("an integer axis such as 0", int)


def _progress(label: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        sys.stderr.write(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} weights"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def _skipped_lines(report: list[dict[str, Any]]) -> list[str]:
    """The weights a :class:`~coreml_compress.optimize.CompressionReport` left as they were: one
    line each, and one line counting those not larger than weight_threshold."""
    skipped = getattr(report, "skipped", [])
    below = getattr(report, "below_threshold", 0)
    out = []
    if skipped:
        out.append(f"{len(skipped)} weight(s) not compressed:")
        out.extend(f"  {optimize.describe_skip(s)}" for s in skipped)
    if below:
        out.append(f"{below} weight(s) not larger than weight_threshold left as they were.")
    return out


def format_compression_report(report: list[dict[str, Any]]) -> str:
    """Per-weight table (bits per weight, size before/after, SNR) and totals, then the weights
    left as they were."""
    if not report:
        skipped = _skipped_lines(report)
        return "\n".join(
            ["No weight was compressed.", *skipped]
            if skipped
            else ["No weight was compressed: none matched the config."]
        )
    headers = ["name", "shape", "bits/w", "before", "after", "SNR dB"]
    rows = []
    for r in report:
        count = math.prod(r["shape"])
        snr = (
            "-"
            if math.isnan(r["snr_db"])
            else "exact"
            if math.isinf(r["snr_db"])
            else f"{r['snr_db']:.1f}"
        )
        rows.append(
            [
                r["name"],
                "x".join(map(str, r["shape"])),
                f"{8 * r['bytes_after'] / count:.2f}",
                format_size(r["bytes_before"]),
                format_size(r["bytes_after"]),
                snr,
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    before = sum(r["bytes_before"] for r in report)
    after = sum(r["bytes_after"] for r in report)
    params = sum(math.prod(r["shape"]) for r in report)
    out = [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    out.append(
        f"\n{len(report)} weights, {params:,} parameters: "
        f"{format_size(before)} -> {format_size(after)} "
        f"({before / max(after, 1):.2f}x smaller, {8 * after / max(params, 1):.2f} bits per weight)"
    )
    skipped = _skipped_lines(report)
    if skipped:
        out.extend(["", *skipped])
    return "\n".join(out)


def _run(
    args: argparse.Namespace,
    label: str,
    op_config: Callable[[argparse.Namespace], Any],
    api: Callable[..., Any],
) -> int:
    config = (
        cfg.OptimizationConfig.from_yaml(args.config)
        if args.config
        else _options_config(args, op_config)
    )
    with warnings.catch_warnings():
        # The report below lists the skipped weights; the warning would repeat it.
        warnings.simplefilter("ignore", SkippedWeightsWarning)
        _, report = api(
            args.input, config, output_path=args.output, progress=_progress(label), with_report=True
        )
    if not report:
        print(format_compression_report(report), file=sys.stderr)
        print(f"\n{args.output} was written with every weight as it was.", file=sys.stderr)
        return 1
    print(format_compression_report(report))
    print(f"\nWritten to {args.output}")
    return 0


# Config fields as the options that set them, for usage errors.
_OPTION_OF_FIELD = {
    "target_sparsity": "--sparsity",
    "n_m_ratio": "--n-m",
    "block_size": "--block-size",
    "dim": "--dim",
    "threshold": "--threshold",
    "minimum_sparsity_percentile": "--min-sparsity",
    "nbits": "--nbits",
    "group_size": "--group-size",
    "channel_axis": "--channel-axis",
    "cluster_dim": "--cluster-dim",
    "enable_per_channel_scale": "--per-channel-scale",
    "granularity": "--granularity",
    "mode": "--mode",
    "dtype": "--dtype",
    "weight_threshold": "--weight-threshold",
}


def _options_config(
    args: argparse.Namespace, op_config: Callable[[argparse.Namespace], Any]
) -> cfg.OptimizationConfig:
    """The config the options describe; options that contradict each other are a usage error
    that names the options."""
    try:
        return cfg.OptimizationConfig(global_config=op_config(args))
    except ValueError as e:
        message = str(e)
        for field, option in _OPTION_OF_FIELD.items():
            message = message.replace(f'"{field}"', option)
        raise UsageError(message) from e


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
    return cfg.OpMagnitudePrunerConfig(
        target_sparsity=a.sparsity,
        n_m_ratio=a.n_m,
        block_size=a.block_size,
        dim=a.dim,
        weight_threshold=a.weight_threshold,
    )


FORCE_HELP = "replace OUTPUT if it is an existing package (anything else is never replaced)"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument(
        "--config",
        metavar="YAML",
        help="a coremltools OptimizationConfig YAML file (overrides the options)",
    )
    p.add_argument(
        "--weight-threshold",
        type=_COUNT,
        default=2048,
        metavar="N",
        help="compress weights larger than N elements",
    )


def _compress(args: argparse.Namespace) -> int:
    steps = optimize.load_recipe(args.recipe)
    label = " then ".join(kind for kind, _ in steps)
    with warnings.catch_warnings():
        # The step reports below list the skipped weights; the warning would repeat them.
        warnings.simplefilter("ignore", SkippedWeightsWarning)
        _, reports = optimize.apply_recipe(
            args.input, steps, output_path=args.output, progress=_progress(label), with_report=True
        )
    out = sys.stdout if any(reports) else sys.stderr
    for i, ((kind, _), report) in enumerate(zip(steps, reports)):
        print(f"Step {i + 1}: {kind}", file=out)
        print(format_compression_report(report) + "\n", file=out)
    if not any(reports):
        print(f"{args.output} was written with every weight as it was.", file=sys.stderr)
        return 1
    print(f"Written to {args.output}")
    return 0


def add_commands(sub: Any) -> None:
    """Adds palettize, quantize and prune to the CLI's subparsers."""
    p = sub.add_parser("palettize", help="palettize weights (k-means, uniform or unique LUTs)")
    _common(p)
    p.add_argument("--nbits", type=int, default=4, choices=[1, 2, 3, 4, 6, 8])
    p.add_argument("--mode", default="kmeans", choices=["kmeans", "uniform", "unique"])
    p.add_argument(
        "--granularity", default="per-tensor", choices=["per-tensor", "per-grouped-channel"]
    )
    p.add_argument("--group-size", type=_POSITIVE_INT, default=32, metavar="N")
    p.add_argument("--channel-axis", type=_AXIS, default=None, metavar="AXIS")
    p.add_argument("--cluster-dim", type=_POSITIVE_INT, default=1, metavar="N")
    p.add_argument("--per-channel-scale", action="store_true")
    p.set_defaults(run=lambda a: _run(a, "palettize", _palettizer, optimize.palettize_weights))

    p = sub.add_parser("quantize", help="linearly quantize weights to int8/uint8/int4/uint4")
    _common(p)
    p.add_argument("--dtype", default="int8", choices=["int8", "uint8", "int4", "uint4"])
    p.add_argument("--mode", default="linear-symmetric", choices=["linear-symmetric", "linear"])
    p.add_argument(
        "--granularity", default="per-channel", choices=["per-tensor", "per-channel", "per-block"]
    )
    p.add_argument("--block-size", type=_POSITIVE_INT, default=32, metavar="N")
    p.set_defaults(run=lambda a: _run(a, "quantize", _quantizer, optimize.linear_quantize_weights))

    p = sub.add_parser("prune", help="prune weights (magnitude, block, n:m or threshold)")
    _common(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--sparsity",
        type=_FRACTION,
        metavar="FRACTION",
        help="fraction of weights to zero (magnitude pruning)",
    )
    how.add_argument("--n-m", type=_N_M, metavar="N:M", help="n:m structured sparsity, e.g. 2:4")
    how.add_argument("--threshold", type=_MAGNITUDE, metavar="T", help="zero weights with |w| <= T")
    p.add_argument(
        "--block-size",
        type=_POSITIVE_INT,
        default=None,
        metavar="N",
        help="block sparsity with --sparsity",
    )
    p.add_argument(
        "--dim", type=int, default=None, choices=[0, 1], help="axis of blocks or n:m groups"
    )
    p.add_argument(
        "--min-sparsity",
        type=_FRACTION,
        default=0.5,
        metavar="FRACTION",
        help="with --threshold: compress only weights at least this sparse",
    )
    p.set_defaults(run=lambda a: _run(a, "prune", _pruner, optimize.prune_weights))

    p = sub.add_parser(
        "compress", help="run a recipe of steps, e.g. prune 50%% then palettize 4 bits"
    )
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument(
        "--recipe",
        required=True,
        metavar="YAML",
        help="YAML: steps: [{prune: {...}}, {palettize: {...}}]",
    )
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_compress)
