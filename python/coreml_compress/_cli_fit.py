"""``coreml-compress fit IN OUT --max-size 2GB``: per-weight compression chosen for the least
error within a byte budget (see :mod:`coreml_compress.fitting`). Prints the report as a table;
exit status 1 when the budget cannot be met (with the smallest reachable size)."""

from __future__ import annotations

import argparse
from typing import Any

from . import fitting
from ._cli_compress import FORCE_HELP, _parsed, _progress
from .errors import ConfigError


def _size(text: str) -> int | None:
    try:
        return fitting.parse_size(text)
    except ConfigError:
        return None


_SIZE = _parsed("a size such as 2GB (10^9 bytes), 1.5GiB (2^30) or 123456 (bytes)", _size)


def _fit(args: argparse.Namespace) -> int:
    result = fitting.fit(
        args.input,
        args.max_size,
        output_path=args.output,
        compute_units=args.compute_units,
        min_snr_db=args.min_snr,
        importance=args.importance,
        report=args.report,
        save_recipe=args.save_recipe,
        progress=_progress("measure"),
    )
    print(result.table())
    print(f"\nWritten to {args.output}")
    if args.save_recipe:
        print(f"Recipe saved to {args.save_recipe} (coreml-compress compress IN OUT --recipe FILE)")
    if args.report:
        print(f"Report written to {args.report}")
    return 0


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "fit",
        help="compress each weight with the form that gives the least error within a size",
        description="Measure every form of the ladder (k-means 8/6/4/3/2 bits per tensor and in "
        "groups of 16 and 32 channels, int8 per channel, int4 per block of 32, 50%% pruning with "
        "4-bit k-means) on every weight, choose one per weight for the least total error within "
        "--max-size bytes of weight files, and write the package.",
    )
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument(
        "--max-size", type=_SIZE, required=True, metavar="SIZE", help="e.g. 2GB, 1.5GiB, 500MB"
    )
    p.add_argument(
        "--compute-units",
        choices=fitting.COMPUTE_UNITS,
        default=None,
        help="with the Neural Engine (cpu_and_ne, all) per_block quantization is not a candidate",
    )
    p.add_argument(
        "--min-snr", type=float, default=None, metavar="DB", help="per-weight SNR floor in dB"
    )
    p.add_argument(
        "--importance", metavar="FILE", help="safetensors of per-module input-channel importance"
    )
    p.add_argument(
        "--report", metavar="HTML", help="write a self-contained HTML report (needs matplotlib)"
    )
    p.add_argument(
        "--save-recipe", metavar="YAML", help="save the choice as a recipe for compress --recipe"
    )
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_fit)
