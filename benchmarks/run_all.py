#!/usr/bin/env python3
"""Run every benchmark, one after the other, and regenerate ``benchmarks/RESULTS.md``.

    python3 benchmarks/run_all.py             # full run (~30 min on 2 cores), writes RESULTS.md
    python3 benchmarks/run_all.py --quick     # smoke run, writes .cache/results/RESULTS-quick.md

Scripts: bench_layer.py, bench_llm.py, bench_multifunction.py, bench_cli.py, and bench_torch.py when present
(its stdout markdown is pasted as is). Each runs as a subprocess; each of their jobs runs in
its own process (see harness.py), never two at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_layer.py", "bench_llm.py", "bench_multifunction.py", "bench_cli.py"]
TORCH_SCRIPT = "bench_torch.py"

INTRO = """\
coremltools 9.0 and coreml-compress run side by side on the same saved packages, in one run.
Every job is a fresh Python process under `/usr/bin/time -v`, one at a time; each is repeated
and the **median** is shown. Columns:

- **op**: seconds inside the process spent in the public API calls, from loading the package
  to the written output. coremltools: `ct.models.MLModel(path, skip_model_load=True)`, the
  `coremltools.optimize.coreml` / `coremltools.utils` call, `.save(out)`. Ours:
  `coreml_compress.optimize.*(path, config, output_path=out)` (or `save_multifunction`,
  `_native.save_unchanged`).
- **wall**: the whole process (interpreter start-up, imports, work, exit). `import coremltools`
  pulls in torch and costs ~5–7 s and ~800 MB RSS on this machine (see the import row), which
  dominates coremltools' wall time on small inputs.
- **peak RSS**: maximum resident set size of the job process (memory-mapped input pages that
  were touched count too).
- **×**: coremltools / ours (higher is better for ours).
- **weight.bin**: output weight file size; **same bytes**: `weight.bin (+ model)` = identical
  files in both outputs; `weights by name` = every const holds identical bytes under the same
  name, but the files differ (blob order, or graph changes made by coremltools' pipeline).
  model.mlmodel never matches after a compression pass: coremltools drops the program's
  `buildInfo` attribute when it re-exports, ours keeps it (checked on the int8 case: the
  only difference in the protobuf).

Our jobs run with `import coremltools` blocked and use `coreml_compress.config`'s classes (same
fields as coremltools'); the engine needs only numpy, PyYAML and attrs. Paths go in and paths
come out, and coremltools is not imported for them even where it is installed.
Inputs are read from the page cache (warm) for both sides.
"""


def run_script(script: str, quick: bool, repeats: int | None) -> str:
    with tempfile.NamedTemporaryFile("r", suffix=".md", delete=False) as tmp:
        md_path = Path(tmp.name)
    cmd = [sys.executable, str(HERE / script), "--md-out", str(md_path)]
    if quick:
        cmd.append("--quick")
    if repeats:
        cmd += ["--repeats", str(repeats)]
    print(f"== {script}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    text = md_path.read_text() if md_path.exists() else ""
    md_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not text:
        text += f"\n**{script} failed (exit {proc.returncode}); see its stderr.**\n"
    return text + _footer(script, elapsed)


def _engine_build() -> str:
    """Which engine build ran: the mtime of the installed extension (others rebuild it)."""
    import importlib.util

    spec = importlib.util.find_spec("coreml_compress")
    if spec is None or not spec.submodule_search_locations:
        return "engine not found"
    sos = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_native*.so"))
    if not sos:
        return "engine not found"
    return "engine built " + time.strftime("%Y-%m-%d %H:%M", time.localtime(sos[0].stat().st_mtime))


def _footer(script: str, elapsed: float) -> str:
    end = time.strftime("%Y-%m-%d %H:%M")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"\n({script}: {elapsed / 60:.1f} min, finished {end}, load average {load}; "
        f"{_engine_build()})\n"
    )


def _section_path(script: str, quick: bool) -> Path:
    return harness.RESULTS_DIR / f"section-{Path(script).stem}{'-quick' if quick else ''}.md"


def run_torch(quick: bool) -> str:
    script = HERE / TORCH_SCRIPT
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    print(f"== {TORCH_SCRIPT}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    text = proc.stdout.strip() + "\n"
    if proc.returncode != 0:
        text += f"\n**{TORCH_SCRIPT} failed (exit {proc.returncode}); see its stderr.**\n"
    return text + _footer(TORCH_SCRIPT, elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every script")
    parser.add_argument("--repeats", type=int, help="runs per job (default 3; 1 with --quick)")
    parser.add_argument(
        "--only",
        nargs="*",
        help="run only these scripts (file names); the other sections are reused from their "
        "last run (benchmarks/.cache/results/section-*.md) where present",
    )
    parser.add_argument("--out", type=Path, help="output markdown file")
    args = parser.parse_args(argv)
    out = args.out or (
        harness.RESULTS_DIR / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md"
    )
    scripts = list(SCRIPTS)
    if (HERE / TORCH_SCRIPT).is_file():
        scripts.append(TORCH_SCRIPT)

    start_info = harness.machine_info()
    t0 = time.perf_counter()
    sections = []
    harness.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for script in scripts:
        saved = _section_path(script, args.quick)
        if args.only and script not in args.only:
            if saved.is_file():
                print(f"== {script}: reusing {saved}", file=sys.stderr)
                sections.append(saved.read_text() + "(section reused from that earlier run)\n")
            continue
        if script == TORCH_SCRIPT:
            text = run_torch(args.quick)
        else:
            text = run_script(script, args.quick, args.repeats)
        saved.write_text(text)
        sections.append(text)
    total = time.perf_counter() - t0
    end_load = [round(x, 2) for x in os.getloadavg()]

    busy = start_info["load_avg"][0] > 0.75 * start_info["nproc"]
    lines = [
        "# Benchmarks: coremltools 9.0 vs coreml-compress"
        + (" (quick smoke run)" if args.quick else ""),
        "",
        (
            "Regenerate with `python3 benchmarks/run_all.py` (each script also runs alone; "
            "`--quick` for a smoke run)."
        ),
        "",
        "## Machine",
        "",
        harness.machine_markdown(start_info).rstrip(),
        (
            f"- load average (1/5/15 min) at the end: {', '.join(map(str, end_load))}; "
            f"total benchmark time {total / 60:.1f} min"
        ),
    ]
    if busy or end_load[0] > 0.75 * start_info["nproc"]:
        lines.append(
            "- **the machine was busy during this run** (other processes: load average above "
            "the core count at times; see the per-table load ranges), so absolute times, "
            "especially our multi-threaded ones, are pessimistic"
        )
    lines += ["", "## What is measured", "", INTRO, "## Results", ""]
    text = "\n".join(lines) + "\n" + "\n".join(s.rstrip() + "\n" for s in sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
