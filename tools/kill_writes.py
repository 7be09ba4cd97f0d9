#!/usr/bin/env python3
"""kill -9 at random points during package writes: the destination must always hold the old
package or the complete new one, and one more write must leave nothing else beside it.

Not part of the test suite (it needs a large package and minutes). Each of ``--writes`` rounds
starts a write in a child process (``save_unchanged`` or int8 quantization of the same input,
whichever differs from the package there), kills it with SIGKILL after a random delay drawn
from [0, 1.2 x the write's measured duration] (from the end of the child's imports to the return
of the engine's call; interpreter exit excluded), and compares the destination, file by file
(SHA-256), with the package before the round and with the reference output of that write.
After the last round, one complete write must leave exactly the destination in its directory.

Usage (the package is the 1-layer LLM of benchmarks/make_llm.py, ~350 MB; the recorded run is in
docs/DECISIONS.md)::

    python3 benchmarks/make_llm.py --scale small --out /tmp/kill/llm.mlpackage
    python3 tools/kill_writes.py /tmp/kill/llm.mlpackage --work /tmp/kill/out --writes 20
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The child's write: argv = kind, source, destination.
CHILD = """
import sys
import coremltools.optimize.coreml as cto
from coreml_compress import _native, optimize

kind, src, dest = sys.argv[1:]
# The engine's calls themselves: coremltools' MLModel, which optimize wraps the output in,
# rewrites Manifest.json after the commit.
config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(dtype="int8"))
config_json, _ = optimize._native_config(
    config, "linear_quantize_weights", optimize._ACCEPTED["linear_quantize_weights"]
)
print("ready", flush=True)
if kind == "roundtrip":
    _native.save_unchanged(src, dest)
else:
    _native.compress("linear_quantize_weights", src, dest, config_json, False, None)
print("done", flush=True)
"""
KINDS = ("roundtrip", "quantize")


def fingerprint(path: Path) -> dict[str, str] | None:
    """SHA-256 of every file under ``path`` by relative path; None when nothing is there."""
    if not path.exists():
        return None
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            out[str(p.relative_to(path))] = h.hexdigest()
    return out


def start(kind: str, src: Path, dest: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(src), str(dest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def started(kind: str, src: Path, dest: Path) -> subprocess.Popen:
    """A child past its imports, about to write."""
    child = start(kind, src, dest)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the input .mlpackage (>= 300 MB for the proof)")
    parser.add_argument(
        "--work", type=Path, required=True, help="a directory for the outputs (emptied)"
    )
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    refs = args.work / "reference"
    out = args.work / "out"
    refs.mkdir(parents=True)
    out.mkdir()
    dest = out / "model.mlpackage"
    size = sum(p.stat().st_size for p in args.package.rglob("*") if p.is_file())
    print(f"input {args.package}: {size / 1e6:.0f} MB")

    reference: dict[str, dict[str, str] | None] = {}
    duration: dict[str, float] = {}
    for kind in KINDS:
        child = started(kind, args.package, refs / f"{kind}.mlpackage")
        t = time.perf_counter()
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        duration[kind] = time.perf_counter() - t
        _, err = child.communicate()
        if child.returncode != 0:
            sys.exit(f"reference {kind} failed: {err.decode()}")
        reference[kind] = fingerprint(refs / f"{kind}.mlpackage")
        print(f"reference {kind}: {duration[kind]:.2f} s")
    assert reference["roundtrip"] != reference["quantize"]

    failures = 0
    state = fingerprint(dest)
    outcomes = {"old": 0, "new": 0}
    for i in range(args.writes):
        # The write whose output differs from what is there, so old and new are told apart.
        kind = KINDS[1] if state == reference[KINDS[0]] else KINDS[0]
        delay = rng.uniform(0, 1.2 * duration[kind])
        child = started(kind, args.package, dest)
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            child.send_signal(signal.SIGKILL)
        child.wait()
        now = fingerprint(dest)
        leftovers = sorted(set(os.listdir(out)) - {dest.name})
        if now == reference[kind]:
            verdict = "new"
        elif now == state:
            verdict = "old"
        else:
            verdict = "CORRUPT"
            failures += 1
            for name, then in (("old", state), ("new", reference[kind])):
                then, got = then or {}, now or {}
                differ = sorted(f for f in then.keys() | got.keys() if then.get(f) != got.get(f))
                print(f"  files that differ from the {name} package: {differ}")
        outcomes[verdict] = outcomes.get(verdict, 0) + 1
        print(
            f"write {i + 1:2d} {kind:9s} kill at {delay:5.2f} s "
            f"{'(killed)' if killed else '(finished)':10s} -> {verdict}; beside it: {leftovers}"
        )
        state = now

    child = started("roundtrip", args.package, dest)
    child.communicate()
    left = sorted(os.listdir(out))
    clean = (
        child.returncode == 0
        and left == [dest.name]
        and fingerprint(dest) == reference["roundtrip"]
    )
    print(f"one more write: exit {child.returncode}, directory holds {left}")
    print(f"outcomes: {outcomes}; clean after one more write: {clean}")
    return 0 if failures == 0 and clean else 1


if __name__ == "__main__":
    sys.exit(main())
