#!/usr/bin/env python3
"""Start-up of the command line on a small package: ``coreml-compress palettize`` (4 bits) on the
``coreml-compress demo`` example (6 weights, 1.8 M parameters), each run a fresh process.

Rows: the CLI as it is (paths in, paths out: coremltools is never imported), and the same command
with ``import coremltools`` first, which is what every CLI run paid while results were wrapped in
an MLModel whenever coremltools was importable.

    python3 benchmarks/bench_cli.py [--repeats N] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

RUN_CLI = "import sys; from coreml_compress.cli import main; sys.exit(main(sys.argv[1:]))"
ROWS = [
    ("coreml-compress palettize (path in, path out)", RUN_CLI),
    ("the same after `import coremltools` (the CLI before)", "import coremltools; " + RUN_CLI),
]


def wall_times(code: str, args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="fresh processes per row")
    parser.add_argument("--quick", action="store_true", help="2 runs per row")
    parser.add_argument("--md-out", type=Path, help="write the markdown section here")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    machine = harness.machine_info()
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
        subprocess.run(
            [sys.executable, "-m", "coreml_compress.cli", "demo", "--out", tmp],
            check=True,
            capture_output=True,
        )
        example = str(Path(tmp) / "example.mlpackage")
        out = str(Path(tmp) / "out.mlpackage")
        lines = [
            "### Command-line start-up: palettize the demo package (1.8 M parameters), paths",
            "",
            (
                f"Fresh process per run, {repeats} runs per row; wall time of "
                "`coreml-compress palettize example.mlpackage out.mlpackage --nbits 4`."
            ),
            "",
            "| | median | min | max |",
            "|---|---|---|---|",
        ]
        for label, code in ROWS:
            # --force: every run after the first replaces the previous output.
            times = wall_times(
                code, ["palettize", example, out, "--nbits", "4", "--force"], repeats
            )
            lines.append(
                f"| {label} | {statistics.median(times):.2f} s | {min(times):.2f} s "
                f"| {max(times):.2f} s |"
            )
    end_load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines += [
        "",
        harness.machine_markdown(machine).rstrip(),
        f"- load average (1/5/15 min) at the end: {end_load}",
        "",
    ]
    text = "\n".join(lines)
    if args.md_out:
        args.md_out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
