"""The ``coreml-compress`` command line.

    coreml-compress info MODEL.mlpackage        the weights of a package, as a table
    coreml-compress demo [--out DIR]            write the built-in example package and show it
    coreml-compress decompress IN OUT           every constexpr_* chain back to a dense const

Errors of coreml-compress (bad paths, malformed packages, …) print one line on stderr and exit
with status 2. coremltools is not needed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from . import _native
from .errors import CoreMLCompressError
from .inspect import WeightInfo, WeightReport, inspect

__all__ = ["main"]

EXIT_ERROR = 2


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _params(w: WeightInfo) -> str:
    keys = ("nbits", "cluster_dim", "data_dtype", "scale_shape", "has_offset", "sparsity")
    parts = []
    for k in keys:
        if k in w.params:
            v = w.params[k]
            if isinstance(v, float):
                v = f"{v:.2f}"
            elif isinstance(v, tuple):
                v = "x".join(map(str, v))
            parts.append(f"{k}={v}")
    return " ".join(parts)


def format_report(report: WeightReport) -> str:
    """The report as an aligned text table followed by the totals."""
    multi = len({w.function for w in report}) > 1
    headers = [
        "name",
        "shape",
        "dtype",
        "compression",
        "on disk",
        "bits/w",
        "distinct",
        "consumers",
        "params",
    ]
    if multi:
        headers.insert(0, "function")
    rows = []
    for w in report:
        consumers = ", ".join(f"{c.op_type}:{c.param}" for c in w.consumers)
        if w.block_output:
            consumers = ", ".join(filter(None, [consumers, "<output>"]))
        row = [
            w.name,
            "x".join(map(str, w.shape)) or "()",
            w.dtype,
            w.compression,
            _size(w.bytes_on_disk),
            f"{w.bits_per_weight:.2f}",
            str(w.distinct),
            consumers,
            _params(w),
        ]
        if multi:
            row.insert(0, w.function)
        rows.append(row)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(wd) for c, wd in zip(cells, widths)).rstrip()

    out = [line(headers), line(["-" * wd for wd in widths])]
    out.extend(line(r) for r in rows)
    t = report.totals
    kinds = ", ".join(f"{k}: {n}" for k, n in t["by_compression"].items()) or "-"
    out.append("")
    out.append(
        f"{t['weights']} weights ({kinds}), {t['parameters']:,} parameters; "
        f"{_size(t['bytes_on_disk'])} on disk, {_size(t['dense_bytes'])} dense "
        f"({t['compression_ratio']:.2f}x, {t['bits_per_weight']:.2f} bits/weight)"
    )
    return "\n".join(out)


def _info(args: argparse.Namespace) -> int:
    print(format_report(inspect(args.path)))
    return 0


# What `demo` does to the example package before showing it: (label, transform(src, dest) -> path)
# or None to show the example as written. Palettization slots in here as a one-line change, e.g.
# ("palettized to 4 bits", lambda src, dest: optimize.palettize_weights(src, cfg, output_path=dest)).
DEMO_STEP: tuple[str, Callable[[Path, Path], object]] | None = None


def _demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="coreml_compress_demo_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    example = Path(_native.write_example(str(out_dir / "example.mlpackage")))
    print(f"Example package written to {example}\n")
    print(format_report(inspect(example)))
    if DEMO_STEP is not None:
        label, step = DEMO_STEP
        result = out_dir / f"example.{label.split()[0]}.mlpackage"
        step(example, result)
        print(f"\n{label.capitalize()}: {result}\n")
        print(format_report(inspect(result)))
    return 0


def _decompress(args: argparse.Namespace) -> int:
    written = _native.decompress(str(args.input), str(args.output))
    print(f"Decompressed package written to {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coreml-compress",
        description="Inspect and compress Core ML ML Program (.mlpackage) weights.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list the weights of a package and how they are stored")
    p.add_argument("path", help="a .mlpackage directory")
    p.set_defaults(run=_info)
    p = sub.add_parser("demo", help="write the built-in example package and show its weights")
    p.add_argument("--out", help="directory for the demo packages (default: a new temp dir)")
    p.set_defaults(run=_demo)
    p = sub.add_parser("decompress", help="materialize every compressed weight into a dense const")
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.set_defaults(run=_decompress)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CoreMLCompressError as e:
        print(f"coreml-compress: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
