#!/usr/bin/env python3
"""Side-by-side benchmark harness: coremltools vs coreml-compress, one job per fresh process.

A *job* is a function ``fn(out_dir, **kwargs) -> dict`` in a module of ``benchmarks/`` (see
``jobs.py``). The harness runs it in a new Python process (``harness.py --child spec.json``)
under ``/usr/bin/time -v`` (or, where that is missing, a small wrapper process that reads
``getrusage(RUSAGE_CHILDREN)``), so each run's peak RSS belongs to that job alone. Every job is
repeated N times (default 3) and the medians are reported:

- ``wall``: the whole process, from ``exec`` to exit (Python start-up, imports, work, teardown);
- ``op``: measured inside the process around the public API calls only (load, compress, write;
  the job returns it as ``op_s``);
- ``peak RSS``: maximum resident set size of the job process.

A memory guard polls the job's process group and kills it above ``--mem-limit-gb`` (so an
oversized coremltools run cannot take the machine down; it is then reported as killed). The
job's output package is measured (weight.bin bytes, hashes) and deleted after each run.

A :class:`Case` pairs a coremltools job and our job (either may be missing, or replaced by
quoted reference figures) and :func:`markdown_table` prints the medians and the
coremltools / ours ratios.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import importlib.abc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
SCRATCH_DIR = CACHE_DIR / "scratch"
RESULTS_DIR = CACHE_DIR / "results"
TIME_BIN = "/usr/bin/time"
DEFAULT_REPEATS = 3


def _default_mem_limit_gb() -> float:
    total = _meminfo_kb("MemTotal") / 1024**2
    return round(min(18.0, 0.75 * total), 1) if total else 18.0


# --------------------------------------------------------------------------------------------
# data


@dataclass
class Job:
    """One side of a case: ``module.func(out_dir, **kwargs)`` in a fresh process."""

    module: str
    func: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Make ``import coremltools`` fail in the job process (our engine without coremltools).
    block_coremltools: bool = False
    timeout_s: float = 3600.0
    repeats: int | None = None  # None: the harness default
    #: Extra environment variables for the job process.
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Reference:
    """Quoted coremltools figures (not measured in this run)."""

    wall_s: float | None
    rss_bytes: float | None
    weight_bytes: int | None = None
    op_s: float | None = None
    source: str = "reference"


@dataclass
class Run:
    ok: bool
    wall_s: float
    op_s: float | None = None
    rss_bytes: int | None = None
    #: Peak anonymous RSS (heap, not file-backed pages), sampled every 0.2 s by the guard.
    anon_bytes: int | None = None
    user_s: float | None = None
    sys_s: float | None = None
    cpu_percent: float | None = None
    load_1min: float | None = None
    weight_bytes: int | None = None
    package_bytes: int | None = None
    weight_sha: str | None = None
    model_sha: str | None = None
    blob_digest: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class JobResult:
    runs: list[Run]

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def ok(self) -> bool:
        return bool(self.runs) and len(self.good) == len(self.runs)

    def median(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.good if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    @property
    def last(self) -> Run | None:
        return self.good[-1] if self.good else None

    @property
    def error(self) -> str | None:
        bad = [r for r in self.runs if not r.ok]
        return bad[0].error if bad else None


@dataclass
class Case:
    name: str
    ct: Job | None = None
    ours: Job | None = None
    ct_reference: Reference | None = None
    note: str = ""
    #: Compare the weight.bin / model.mlmodel bytes of the two outputs.
    compare_outputs: bool = True
    ct_result: JobResult | None = None
    ours_result: JobResult | None = None


# --------------------------------------------------------------------------------------------
# machine info


def _meminfo_kb(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": nproc,
        "cpu": cpu_model(),
        "ram_gb": round(_meminfo_kb("MemTotal") / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "coremltools": _version("coremltools"),
        "coreml_compress": _version("coreml-compress"),
        "numpy": _version("numpy"),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def machine_markdown(info: dict[str, Any]) -> str:
    la = ", ".join(f"{x:.2f}" for x in info["load_avg"])
    return (
        f"- date: {info['date']}\n"
        f"- CPU: {info['cpu']}, nproc {info['nproc']}; RAM {info['ram_gb']} GB; "
        f"Linux {info['kernel']}\n"
        f"- Python {info['python']}, coremltools {info['coremltools']}, "
        f"coreml-compress {info['coreml_compress']}, numpy {info['numpy']}\n"
        f"- load average (1/5/15 min) at start: {la}\n"
    )


# --------------------------------------------------------------------------------------------
# running jobs


def _pgroup_rss_bytes(pgid: int) -> tuple[int, int]:
    """(RSS, anonymous RSS) summed over the processes of group ``pgid``."""
    total = anon = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # pgrp
                continue
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss (pages)
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total, anon


class _MemoryGuard(threading.Thread):
    def __init__(self, pgid: int, limit_bytes: float):
        super().__init__(daemon=True)
        self.pgid, self.limit = pgid, limit_bytes
        self.stop = threading.Event()
        self.killed_at: int | None = None
        self.peak_anon = 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            rss, anon = _pgroup_rss_bytes(self.pgid)
            self.peak_anon = max(self.peak_anon, anon)
            if rss > self.limit:
                self.killed_at = rss
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                return


def _parse_time_v(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, val = line.strip().rpartition(": ")
        if key == "Maximum resident set size (kbytes)":
            out["rss_bytes"] = int(val) * 1024
        elif key == "User time (seconds)":
            out["user_s"] = float(val)
        elif key == "System time (seconds)":
            out["sys_s"] = float(val)
        elif key == "Percent of CPU this job got":
            with contextlib.suppress(ValueError):
                out["cpu_percent"] = float(val.rstrip("%"))
        elif key == "Exit status":
            out["exit_status"] = int(val)
    return out


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _describe_output(out: Path, hashes: bool) -> dict[str, Any]:
    desc: dict[str, Any] = {}
    if not out.is_dir():
        return desc
    desc["package_bytes"] = _tree_bytes(out)
    weights = sorted(out.rglob("weights/*.bin"))
    if weights:
        desc["weight_bytes"] = sum(w.stat().st_size for w in weights)
    if hashes:
        if weights:
            desc["weight_sha"] = _sha256(weights[0]) if len(weights) == 1 else "multi"
        models = sorted(out.rglob("*.mlmodel"))
        if models:
            desc["model_sha"] = _sha256(models[0])
        with contextlib.suppress(Exception):
            desc["blob_digest"] = _blob_digest(out)
    return desc


def _blob_digest(pkg: Path) -> str:
    """sha256 over (function, const name, blob bytes) of every blob-backed const, sorted by
    name: equal when two packages hold the same weights under the same names, whatever the blob
    order in weight.bin or the rest of the graph."""
    import struct

    from coremltools.proto import Model_pb2  # imported in the harness process only

    model = next(pkg.rglob("*.mlmodel"))
    spec = Model_pb2.Model()
    spec.ParseFromString(model.read_bytes())
    entries = []
    handles: dict[str, Any] = {}
    try:
        for fname, func in spec.mlProgram.functions.items():
            for op in func.block_specializations[func.opset].operations:
                for val in op.attributes.values():
                    if val.WhichOneof("value") != "blobFileValue":
                        continue
                    rel = val.blobFileValue.fileName.replace("@model_path/", "")
                    f = handles.get(rel)
                    if f is None:
                        f = handles[rel] = open(model.parent / rel, "rb")  # noqa: SIM115
                    f.seek(val.blobFileValue.offset)
                    _, _, size, data_offset = struct.unpack("<IIQQ", f.read(24))
                    f.seek(data_offset)
                    h = hashlib.sha256(f.read(size)).hexdigest()
                    entries.append(f"{fname}/{op.outputs[0].name}:{h}")
    finally:
        for f in handles.values():
            f.close()
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def run_once(job: Job, *, mem_limit_gb: float, hashes: bool = False, log: Any = sys.stderr) -> Run:
    """Run ``job`` once in a fresh process and measure it."""
    SCRATCH_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="job-", dir=SCRATCH_DIR))
    spec = {
        "module": job.module,
        "func": job.func,
        "kwargs": job.kwargs,
        "out_dir": str(work / "out"),
        "result": str(work / "result.json"),
        "block_coremltools": job.block_coremltools,
    }
    (work / "out").mkdir()
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    child = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    time_file = work / "time.txt"
    if os.access(TIME_BIN, os.X_OK):
        cmd = [TIME_BIN, "-v", "-o", str(time_file), *child]
    else:  # fallback: a wrapper process reporting getrusage(RUSAGE_CHILDREN)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--wrap", str(time_file), *child]
    load = os.getloadavg()[0]
    stdout_f = open(work / "stdout.txt", "wb")  # noqa: SIM115
    stderr_f = open(work / "stderr.txt", "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=stdout_f,
        stderr=stderr_f,
        start_new_session=True,
        cwd=str(work),
        env={**os.environ, **job.env},
    )
    guard = _MemoryGuard(proc.pid, mem_limit_gb * 1024**3)
    guard.start()
    timed_out = False
    try:
        proc.wait(timeout=job.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = time.perf_counter() - t0
    guard.stop.set()
    guard.join()
    stdout_f.close()
    stderr_f.close()
    tv = _parse_time_v(time_file.read_text()) if time_file.exists() else {}
    run = Run(
        ok=False,
        wall_s=wall,
        rss_bytes=tv.get("rss_bytes"),
        anon_bytes=guard.peak_anon or None,
        user_s=tv.get("user_s"),
        sys_s=tv.get("sys_s"),
        cpu_percent=tv.get("cpu_percent"),
        load_1min=round(load, 2),
    )
    result_path = Path(spec["result"])
    if timed_out:
        run.error = f"timeout after {job.timeout_s:.0f} s"
    elif guard.killed_at is not None:
        run.error = (
            f"killed by the memory guard at {guard.killed_at / 1e9:.1f} GB RSS "
            f"(limit {mem_limit_gb} GB) after {wall:.0f} s"
        )
    elif proc.returncode != 0 or not result_path.exists():
        tail = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()[-6:]
        run.error = f"exit {proc.returncode}: " + " | ".join(tail)
    else:
        res = json.loads(result_path.read_text())
        run.ok = True
        run.op_s = res.pop("op_s", None)
        output = res.pop("output", None)
        run.extra = res
        if output:
            d = _describe_output(Path(output), hashes)
            run.weight_bytes = d.get("weight_bytes")
            run.package_bytes = d.get("package_bytes")
            run.weight_sha = d.get("weight_sha")
            run.model_sha = d.get("model_sha")
            run.blob_digest = d.get("blob_digest")
    shutil.rmtree(work, ignore_errors=True)
    msg = (
        f"    {job.func}: wall {run.wall_s:.2f} s"
        + (f", op {run.op_s:.2f} s" if run.op_s is not None else "")
        + (f", peak RSS {run.rss_bytes / 1e6:.0f} MB" if run.rss_bytes else "")
        + f", load {load:.1f}"
        + ("" if run.ok else f"  FAILED: {run.error}")
    )
    print(msg, file=log, flush=True)
    return run


def run_job(
    job: Job, repeats: int, *, mem_limit_gb: float, hashes: bool, log: Any = sys.stderr
) -> JobResult:
    n = job.repeats or repeats
    runs: list[Run] = []
    for i in range(n):
        run = run_once(job, mem_limit_gb=mem_limit_gb, hashes=hashes and i == n - 1, log=log)
        runs.append(run)
        if not run.ok:  # don't repeat a failure (timeouts and memory kills are expensive)
            break
    return JobResult(runs)


def run_cases(
    cases: list[Case],
    repeats: int = DEFAULT_REPEATS,
    *,
    mem_limit_gb: float | None = None,
    log: Any = sys.stderr,
) -> list[Case]:
    """Run every case, one job at a time (never two heavy jobs at once)."""
    limit = mem_limit_gb or _default_mem_limit_gb()
    for case in cases:
        print(f"  {case.name}", file=log, flush=True)
        for side in ("ct", "ours"):
            job = getattr(case, side)
            if job is not None:
                res = run_job(
                    job, repeats, mem_limit_gb=limit, hashes=case.compare_outputs, log=log
                )
                setattr(case, f"{side}_result", res)
    return cases


# --------------------------------------------------------------------------------------------
# reporting


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 10:
        return f"{x:.1f} s"
    return f"{x:.2f} s"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e9:
        return f"{x / 1e9:.2f} GB"
    if x >= 1e6:
        return f"{x / 1e6:.0f} MB" if x >= 100e6 else f"{x / 1e6:.1f} MB"
    return f"{x / 1e3:.0f} kB"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "—"
    r = a / b
    return f"**{r:.0f}×**" if r >= 10 else f"**{r:.1f}×**" if r >= 1 else f"{r:.2f}×"


def _side(case: Case, side: str) -> dict[str, Any]:
    """Medians of one side, or the reference figures; 'mark' flags quoted numbers."""
    if side == "ct" and case.ct_result is None and case.ct_reference is not None:
        ref = case.ct_reference
        return {
            "wall": ref.wall_s,
            "op": ref.op_s,
            "rss": ref.rss_bytes,
            "anon": None,
            "wbytes": ref.weight_bytes,
            "mark": "†",
            "err": None,
        }
    res: JobResult | None = getattr(case, f"{side}_result")
    if res is None:
        return {
            "wall": None,
            "op": None,
            "rss": None,
            "anon": None,
            "wbytes": None,
            "mark": "",
            "err": None,
        }
    last = res.last
    return {
        "wall": res.median("wall_s"),
        "op": res.median("op_s"),
        "rss": res.median("rss_bytes"),
        "anon": res.median("anon_bytes"),
        "wbytes": last.weight_bytes if last else None,
        "mark": "",
        "err": res.error,
        "n": len(res.good),
    }


def _same(case: Case) -> str:
    if not case.compare_outputs or case.ct_result is None or case.ours_result is None:
        return "—"
    a, b = case.ct_result.last, case.ours_result.last
    if a is None or b is None or a.weight_sha is None or b.weight_sha is None:
        return "—"
    if a.weight_sha == b.weight_sha:
        m = a.model_sha is not None and a.model_sha == b.model_sha
        return "weight.bin + model" if m else "weight.bin"
    if a.blob_digest is not None and a.blob_digest == b.blob_digest:
        return "weights by name"
    return "no"


def markdown_table(cases: list[Case], *, same_column: bool = True) -> str:
    head = [
        "case",
        "coremltools op",
        "ours op",
        "op ×",
        "coremltools wall",
        "ours wall",
        "wall ×",
        "coremltools peak RSS",
        "ours peak RSS",
        "RSS ×",
        "anon RSS coremltools / ours",
        "weight.bin coremltools / ours",
    ]
    if same_column:
        head.append("same bytes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for case in cases:
        ct, ours = _side(case, "ct"), _side(case, "ours")
        m = ct["mark"]

        def cell(v: Any, fmt: Any, side: dict[str, Any], mark: str = "") -> str:
            if side.get("err") and v is None:
                return "failed"
            return fmt(v) + (mark if v is not None else "")

        row = [
            case.name,
            cell(ct["op"], fmt_s, ct, m),
            cell(ours["op"], fmt_s, ours),
            fmt_ratio(ct["op"], ours["op"]),
            cell(ct["wall"], fmt_s, ct, m),
            cell(ours["wall"], fmt_s, ours),
            fmt_ratio(ct["wall"], ours["wall"]),
            cell(ct["rss"], fmt_bytes, ct, m),
            cell(ours["rss"], fmt_bytes, ours),
            fmt_ratio(ct["rss"], ours["rss"]),
            f"{fmt_bytes(ct['anon'])} / {fmt_bytes(ours['anon'])}",
            f"{fmt_bytes(ct['wbytes'])}{m if ct['wbytes'] else ''} / {fmt_bytes(ours['wbytes'])}",
        ]
        if same_column:
            row.append(_same(case))
        lines.append("| " + " | ".join(row) + " |")
        for side_name, side in (("coremltools", ct), ("ours", ours)):
            if side.get("err"):
                notes.append(f"- {case.name}, {side_name}: {side['err']}")
        if case.note:
            notes.append(f"- {case.name}: {case.note}")
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    loads = [
        r.load_1min
        for c in cases
        for res in (c.ct_result, c.ours_result)
        if res is not None
        for r in res.runs
        if r.load_1min is not None
    ]
    reps = sorted(
        {len(res.runs) for c in cases for res in (c.ct_result, c.ours_result) if res is not None}
    )
    if loads:
        text += (
            f"\nRepeats per job: {', '.join(map(str, reps))} (medians shown). "
            f"1-min load average at job starts: {min(loads):.1f}–{max(loads):.1f} "
            f"(nproc {os.cpu_count()}).\n"
        )
    return text


def save_results(name: str, cases: list[Case], markdown: str, extra: dict | None = None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": machine_info(),
        "cases": [
            {
                "name": c.name,
                "note": c.note,
                "ct_reference": asdict(c.ct_reference) if c.ct_reference else None,
                "ct": [asdict(r) for r in c.ct_result.runs] if c.ct_result else None,
                "ours": [asdict(r) for r in c.ours_result.runs] if c.ours_result else None,
            }
            for c in cases
        ],
        "extra": extra or {},
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(markdown)
    return path


def common_args(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true", help="small inputs, 1 repeat (smoke run)")
    parser.add_argument("--repeats", type=int, help=f"runs per job (default {DEFAULT_REPEATS})")
    parser.add_argument("--mem-limit-gb", type=float, help="memory guard per job")
    parser.add_argument("--md-out", type=Path, help="also write the markdown section here")


def repeats_for(args: Any) -> int:
    return args.repeats or (1 if args.quick else DEFAULT_REPEATS)


# --------------------------------------------------------------------------------------------
# child side


class _BlockCoremltools(importlib.abc.MetaPathFinder):
    """Makes ``import coremltools`` raise ImportError, as if it were not installed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "coremltools" or fullname.startswith("coremltools."):
            raise ImportError(f"{fullname} is blocked in this benchmark job")
        return None


def _child(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("block_coremltools"):
        sys.meta_path.insert(0, _BlockCoremltools())
    sys.path.insert(0, str(BENCH_DIR))
    fn = getattr(importlib.import_module(spec["module"]), spec["func"])
    res = fn(spec["out_dir"], **spec["kwargs"]) or {}
    Path(spec["result"]).write_text(json.dumps(res, default=str))
    return 0


def _wrap(time_file: str, cmd: list[str]) -> int:
    import resource

    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: kB on Linux, bytes on macOS
    Path(time_file).write_text(
        f"Maximum resident set size (kbytes): {ru.ru_maxrss * scale // 1024}\n"
        f"User time (seconds): {ru.ru_utime:.2f}\n"
        f"System time (seconds): {ru.ru_stime:.2f}\n"
        f"Percent of CPU this job got: {100 * (ru.ru_utime + ru.ru_stime) / max(wall, 1e-9):.0f}%\n"
        f"Exit status: {rc}\n"
    )
    return rc


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--child":
        return _child(argv[1])
    if len(argv) >= 3 and argv[0] == "--wrap":
        return _wrap(argv[1], argv[2:])
    if argv and argv[0] == "--machine":
        print(machine_markdown(machine_info()))
        return 0
    print(__doc__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
