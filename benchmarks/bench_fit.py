#!/usr/bin/env python3
"""``coreml-compress fit`` at an average number of bits per weight: wall time and peak memory
(``/usr/bin/time -v``), the written weight file against the budget, and the report's summary.

Target (issue 15): on the synthetic 1.1B package (``make_llm.py``), 4.5 bits per weight with the
default ladder in under 5 minutes on 2 cores, peak memory below the package size.

    python3 benchmarks/bench_fit.py                       # the 1.1B package, 4.5 bits/weight
    python3 benchmarks/bench_fit.py --scale tiny          # a small variant (smoke run)
    python3 benchmarks/bench_fit.py --package P.mlpackage --bits 4 --compute-units all
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from make_llm import llm_path, package_size

WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"


def parameters(package: Path) -> int:
    from coreml_compress.inspect import inspect

    return sum(w.size for w in inspect(package))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="a package (default: make_llm's --scale)")
    parser.add_argument("--scale", default="full", help="make_llm scale when no --package")
    parser.add_argument("--bits", type=float, default=4.5, help="average bits per weight")
    parser.add_argument("--compute-units", default=None)
    args = parser.parse_args(argv)
    package = args.package or llm_path(args.scale)
    params = parameters(package)
    max_size = int(params * args.bits / 8)
    with tempfile.TemporaryDirectory(prefix="bench_fit_") as tmp:
        out, report = Path(tmp) / "fit.mlpackage", Path(tmp) / "report.html"
        command = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "coreml_compress.cli",
            "fit",
            str(package),
            str(out),
            "--max-size",
            str(max_size),
            "--report",
            str(report),
        ]
        if args.compute_units:
            command += ["--compute-units", args.compute_units]
        t0 = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            return 1
        rss = (
            int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
            * 1024
        )
        written = (out / WEIGHTS).stat().st_size
        summary = run.stdout.split("\n\n")[0]
    machine = harness.machine_markdown(harness.machine_info())
    print(machine)
    print(f"### fit at {args.bits} bits/weight: {package.name} ({params:,} parameters)\n")
    print("| package | max_size | written | wall | peak RSS | package size |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {package.name} | {max_size:,} | {written:,} | {wall:.1f} s | {rss / 1e9:.2f} GB "
        f"| {package_size(package) / 1e9:.2f} GB |"
    )
    print("\n```\n" + summary + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
