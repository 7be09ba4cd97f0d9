"""Mutation fuzzer for coreml-compress: broken and hostile packages through the public calls.

Seeds are the test suite's small models (tests/models.py) and int4-quantized, palettized,
pruned and joint-compressed copies the engine writes. Each mutant changes one or more of a package's
three files:

* model.mlmodel, structure-aware (decoded with coremltools' bundled protobuf modules): tensor
  shapes set to 0, huge or overflowing sizes, ranks that disagree, data types swapped, blob
  offsets moved, the specification version or a function's opset changed, ops dropped or
  renamed; and raw bit flips and truncation;
* weight.bin, structure-aware for the storage header and each blob's 64-byte metadata (sentinel,
  data type code, size, data offset, padding set to boundary values); plus bit flips and cuts;
* Manifest.json: fileFormatVersion, item paths and the root identifier edited; bit flips, cuts.

Every call (inspect, decompress, palettize, quantize, prune, joint) runs in a child process with
an address-space limit (RLIMIT_AS) and a time limit. Outcomes:

  ok          returned, and the output (if any) passes our own ``inspect``
  error       raised a ``CoreMLCompressError`` subclass other than InternalError
  bad-output  returned, but ``inspect`` rejects what it wrote
  internal    raised InternalError (a panic reached the binding boundary)
  panic       raised pyo3's PanicException
  exception   raised anything else (TypeError, KeyError, ...)
  crash       the child died from a signal or exited without a verdict (abort, segfault)
  memory      the child ran out of its address space (MemoryError, "memory allocation ... failed")
  timeout     the call did not finish within the time limit
  modified    the input package changed

Only ``ok`` and ``error`` are good. Usage (from the repository root, extension built)::

    python fuzz/fuzz_packages.py --seconds 1800 --seed 1 --out /tmp/fuzz-findings

Bad mutants are copied under ``--out`` with the call that failed; the summary is printed as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

MODEL_REL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS_REL = Path("Data/com.apple.CoreML/weights/weight.bin")
GOOD = {"ok", "error"}
BOUNDARY = [
    0,
    1,
    2,
    3,
    7,
    8,
    63,
    64,
    65,
    255,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**62,
    2**63 - 1,
    2**63,
    2**63 + 1024,
    2**63 + 32768,
    2**64 - 64,
    2**64 - 1,
]

# ----------------------------------------------------------------------------------------------
# The calls, run in a child process: one JSON line per call on stdout.

CALLS = [
    "inspect",
    "decompress",
    "palettize",
    "palettize_grouped",
    "quantize",
    "quantize_int4",
    "prune",
    "prune_nm",
    "joint_palettize",
    "joint_prune",
    "joint_quantize",
]

_CHILD = r"""
import json, os, sys
from pathlib import Path
src, out, calls = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
# Without coremltools the calls return paths: importing it would cost seconds per child.
sys.modules["coremltools"] = None
from coreml_compress import CoreMLCompressError, InternalError, inspect, optimize
from coreml_compress import config as C
def cfg(op):
    return C.OptimizationConfig(global_config=op)
pal = lambda **k: cfg(C.OpPalettizerConfig(**k))
run = {
    "abort": lambda o: os.abort(),  # the classifier's self-test (tests/test_fuzz.py)
    "inspect": lambda o: inspect(src),
    "decompress": lambda o: optimize.decompress_weights(src, output_path=o),
    "palettize": lambda o: optimize.palettize_weights(src, pal(mode="kmeans", nbits=4), output_path=o),
    "palettize_grouped": lambda o: optimize.palettize_weights(src, pal(mode="kmeans", nbits=2,
        granularity="per_grouped_channel", group_size=4), output_path=o),
    "quantize": lambda o: optimize.linear_quantize_weights(src,
        cfg(C.OpLinearQuantizerConfig(dtype="int8")), output_path=o),
    "quantize_int4": lambda o: optimize.linear_quantize_weights(src,
        cfg(C.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=16)), output_path=o),
    "prune": lambda o: optimize.prune_weights(src,
        cfg(C.OpMagnitudePrunerConfig(target_sparsity=0.5)), output_path=o),
    "prune_nm": lambda o: optimize.prune_weights(src,
        cfg(C.OpMagnitudePrunerConfig(n_m_ratio=(2, 4))), output_path=o),
    "joint_palettize": lambda o: optimize.palettize_weights(src, pal(mode="uniform", nbits=8),
        joint_compression=True, output_path=o),
    "joint_prune": lambda o: optimize.prune_weights(src,
        cfg(C.OpMagnitudePrunerConfig(target_sparsity=0.5)), joint_compression=True, output_path=o),
    "joint_quantize": lambda o: optimize.linear_quantize_weights(src,
        cfg(C.OpLinearQuantizerConfig(dtype="int8")), joint_compression=True, output_path=o),
}
for i, name in enumerate(calls):
    print(json.dumps({"call": name, "start": True}), flush=True)
    o = out / f"{i}.mlpackage"
    try:
        run[name](o)
        verdict, detail = "ok", ""
        if o.exists():
            try:
                inspect(str(o))
            except CoreMLCompressError as e:
                verdict, detail = "bad-output", str(e)[:300]
    except InternalError as e:
        verdict, detail = "internal", str(e)[:500]
    except CoreMLCompressError as e:
        verdict, detail = "error", type(e).__name__
    except MemoryError:
        verdict, detail = "memory", "MemoryError"
    except BaseException as e:
        kind = "panic" if type(e).__name__ == "PanicException" else "exception"
        verdict, detail = kind, f"{type(e).__name__}: {e}"[:500]
    print(json.dumps({"call": name, "verdict": verdict, "detail": detail}), flush=True)
"""


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_calls(
    pkg: Path, calls: list[str], work: Path, timeout: float, memory: int
) -> list[dict[str, Any]]:
    """Runs ``calls`` on ``pkg`` in one child; a call that kills the child or hangs ends it, and
    the remaining calls run in a fresh child."""
    results: list[dict[str, Any]] = []
    pending = list(calls)
    while pending:
        out = Path(tempfile.mkdtemp(dir=work))
        env = dict(os.environ, RAYON_NUM_THREADS="2", RUST_BACKTRACE="0")
        started: str | None = None
        done: list[dict[str, Any]] = []
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(pkg), str(out), ",".join(pending)],
                capture_output=True,
                text=True,
                timeout=timeout * len(pending) + 10,
                env=env,
                preexec_fn=lambda: _limit_memory(memory),
                check=False,
            )
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr, code = "", None
        for line in stdout.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("start"):
                started = rec["call"]
            else:
                done.append(rec)
                started = None
        results.extend(done)
        pending = pending[len(done) :]
        if pending:
            # The child stopped inside `started` (or before any call).
            failed = started or pending[0]
            if code is None:
                verdict = "timeout"
            elif "memory allocation" in stderr or "MemoryError" in stderr:
                verdict = "memory"
            else:
                verdict = "crash"
            results.append(
                {"call": failed, "verdict": verdict, "detail": f"exit {code}: {stderr[-500:]}"}
            )
            pending = pending[pending.index(failed) + 1 :] if failed in pending else pending[1:]
        shutil.rmtree(out, ignore_errors=True)
    return results


# ----------------------------------------------------------------------------------------------
# Seeds


def make_seeds(dest: Path) -> list[Path]:
    """Small models of the test suite (linear layers at iOS18 and iOS16, convolutions) and
    compressed copies made by the engine (LUT, int4, sparse, sparse + LUT)."""
    import coremltools as ct

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import models
    from coreml_compress import config as C
    from coreml_compress import optimize

    base = models.build_linear(dest, ct.target.iOS18, ct.precision.FLOAT16)
    seeds = [
        base,
        models.build_linear(dest, ct.target.iOS16, ct.precision.FLOAT16),
        models.build_conv(dest, ct.target.iOS18, ct.precision.FLOAT32),
    ]
    cfg = lambda op: C.OptimizationConfig(global_config=op)
    for name, call in {
        "lut4": lambda o: optimize.palettize_weights(
            str(base), cfg(C.OpPalettizerConfig(mode="kmeans", nbits=4)), output_path=o
        ),
        "int4": lambda o: optimize.linear_quantize_weights(
            str(base),
            cfg(C.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=16)),
            output_path=o,
        ),
        "sparse": lambda o: optimize.prune_weights(
            str(base), cfg(C.OpMagnitudePrunerConfig(target_sparsity=0.5)), output_path=o
        ),
    }.items():
        out = dest / f"{name}.mlpackage"
        call(out)
        seeds.append(out)
    joint = dest / "sparse-lut.mlpackage"
    optimize.palettize_weights(
        str(dest / "sparse.mlpackage"),
        cfg(C.OpPalettizerConfig(mode="uniform", nbits=4)),
        joint_compression=True,
        output_path=joint,
    )
    seeds.append(joint)
    for seed in seeds:
        _fix_identifiers(seed)
    return seeds


def _fix_identifiers(package: Path) -> None:
    """Replaces the random item identifiers coremltools writes into Manifest.json with ones
    derived from the item paths, so that a fuzz seed number gives the same mutants everywhere."""
    manifest = package / "Manifest.json"
    doc = json.loads(manifest.read_text())
    entries = doc["itemInfoEntries"]
    ids = {
        old: str(uuid.uuid5(uuid.NAMESPACE_URL, entries[old]["path"])).upper()
        for old in sorted(entries, key=lambda k: entries[k]["path"])
    }
    doc["itemInfoEntries"] = {ids[old]: entries[old] for old in ids}
    doc["rootModelIdentifier"] = ids[doc["rootModelIdentifier"]]
    manifest.write_text(json.dumps(doc, indent=4))


# ----------------------------------------------------------------------------------------------
# Mutators


def _tensor_types(spec: Any) -> list[Any]:
    found: list[Any] = []

    def walk(block: Any) -> None:
        for v in block.inputs:
            found.append(v.type)
        for op in block.operations:
            found.extend(o.type for o in op.outputs)
            for a in op.attributes.values():
                found.append(a.type)
            for arg in op.inputs.values():
                found.extend(b.value.type for b in arg.arguments if b.HasField("value"))
            for inner in op.blocks:
                walk(inner)

    for fn in spec.mlProgram.functions.values():
        for v in fn.inputs:
            found.append(v.type)
        for block in fn.block_specializations.values():
            walk(block)
    return [t for t in found if t.WhichOneof("type") == "tensorType"]


def _blob_values(spec: Any) -> list[Any]:
    found = []

    def walk(block: Any) -> None:
        for op in block.operations:
            vals = list(op.attributes.values())
            for arg in op.inputs.values():
                vals.extend(b.value for b in arg.arguments if b.HasField("value"))
            found.extend(v.blobFileValue for v in vals if v.WhichOneof("value") == "blobFileValue")
            for inner in op.blocks:
                walk(inner)

    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    return found


def _ops(spec: Any) -> list[tuple[Any, Any]]:
    return [
        (block, op)
        for fn in spec.mlProgram.functions.values()
        for block in fn.block_specializations.values()
        for op in block.operations
    ]


def mutate_model(rng: random.Random, data: bytes) -> bytes:
    from coremltools.proto import Model_pb2
    from google.protobuf.message import DecodeError

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(data)
    except DecodeError:
        return bit_flip(rng, data)
    choice = rng.randrange(8)
    types = _tensor_types(spec)
    if choice <= 2 and types:
        t = rng.choice(types)
        dims = [d.constant.size for d in t.tensorType.dimensions] or [1]
        i = rng.randrange(len(dims))
        if choice == 0 and rng.random() < 0.5:
            # A product that wraps (mod 2^64) back to the real element count.
            count = 1
            for d in dims:
                count *= d
            dims = [2, 2**63 + count // 2] if rng.random() < 0.5 else [2**63 + count // 2, 2]
        elif choice == 0:
            dims[i] = rng.choice(BOUNDARY)
        elif choice == 1:
            dims[i] = max(0, dims[i] + rng.choice([-1, 1, dims[i]]))
        else:
            dims.append(rng.choice([1, 2, 2**63]))
        del t.tensorType.dimensions[:]
        for d in dims:
            t.tensorType.dimensions.add().constant.size = d % 2**64
        t.tensorType.rank = len(dims) if rng.random() < 0.9 else rng.choice([0, 7, -1])
    elif choice == 3 and types:
        rng.choice(types).tensorType.dataType = rng.choice(
            [1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 99]
        )
    elif choice == 4 and (blobs := _blob_values(spec)):
        b = rng.choice(blobs)
        b.offset = (
            rng.choice([*BOUNDARY, b.offset + 64, b.offset - 64, rng.choice(blobs).offset]) % 2**64
        )
    elif choice == 5:
        if rng.random() < 0.5:
            spec.specificationVersion = rng.choice([1, 6, 7, 8, 9, 10, 11, 2**31 - 1])
        else:
            for fn in spec.mlProgram.functions.values():
                old = fn.opset
                new = rng.choice(["CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9", "Foo"])
                fn.opset = new
                if old in fn.block_specializations and rng.random() < 0.7:
                    fn.block_specializations[new].CopyFrom(fn.block_specializations[old])
                    del fn.block_specializations[old]
    elif choice == 6 and (ops := _ops(spec)):
        block, op = rng.choice(ops)
        if rng.random() < 0.5:
            block.operations.remove(op)
        elif op.outputs:
            op.outputs[0].name = rng.choice(ops)[1].outputs[0].name if ops[0][1].outputs else "x"
    else:
        return bit_flip(rng, data) if rng.random() < 0.5 else truncate(rng, data)
    return spec.SerializeToString(deterministic=True)


def mutate_weights(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    metas = [
        at
        for at in range(64, len(raw) - 63, 64)
        if struct.unpack_from("<I", raw, at)[0] == 0xDEADBEEF
    ]
    choice = rng.randrange(4)
    if choice == 0 and len(raw) >= 64:
        field = rng.choice([0, 4])
        struct.pack_into("<I", raw, field, rng.choice(BOUNDARY) % 2**32)
    elif choice == 1 and metas:
        at = rng.choice(metas)
        field, fmt = rng.choice([(0, "<I"), (4, "<I"), (8, "<Q"), (16, "<Q"), (24, "<Q")])
        limit = 2**32 if fmt == "<I" else 2**64
        size = struct.unpack_from("<Q", raw, at + 8)[0]
        value = rng.choice([*BOUNDARY, size // 2, size + 1, size - 1, rng.randrange(16)])
        struct.pack_into(fmt, raw, at + field, value % limit)
    elif choice == 2:
        return bit_flip(rng, data)
    else:
        return truncate(rng, data)
    return bytes(raw)


def mutate_manifest(rng: random.Random, data: bytes) -> bytes:
    try:
        doc = json.loads(data)
    except ValueError:
        return bit_flip(rng, data)
    choice = rng.randrange(5)
    if choice == 0:
        doc["fileFormatVersion"] = rng.choice(
            ["1", "1.0", "1.0.0.0.0", "2.0.0", "1.0.x", "", 1, None]
        )
    elif choice == 1 and doc.get("itemInfoEntries"):
        item = rng.choice(list(doc["itemInfoEntries"].values()))
        item["path"] = rng.choice(
            [
                "../x",
                "/etc/passwd",
                "",
                "com.apple.CoreML",
                "a" * 300,
                "com.apple.CoreML/weights/weight.bin",
            ]
        )
    elif choice == 2:
        doc["rootModelIdentifier"] = rng.choice(["", "nope", 7])
    else:
        return bit_flip(rng, data) if choice == 3 else truncate(rng, data)
    return json.dumps(doc).encode()


def bit_flip(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return bytes(raw)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


MUTATORS = {
    "Manifest.json": mutate_manifest,
    str(MODEL_REL): mutate_model,
    str(WEIGHTS_REL): mutate_weights,
}


def make_mutant(rng: random.Random, seed: Path, dest: Path) -> list[str]:
    shutil.copytree(seed, dest)
    edits = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        rel = rng.choice([r for r in MUTATORS if (dest / r).exists()])
        path = dest / rel
        path.write_bytes(MUTATORS[rel](rng, path.read_bytes()))
        edits.append(rel)
    return edits


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------


def fuzz(
    seconds: float,
    seed: int,
    out: Path | None,
    timeout: float = 20.0,
    memory: int = 4 << 30,
    max_mutants: int | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    bad: list[dict[str, Any]] = []
    mutants = calls = 0
    with tempfile.TemporaryDirectory(prefix="cc-fuzz-") as tmp:
        work = Path(tmp)
        (work / "seeds").mkdir()
        seeds = make_seeds(work / "seeds")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (max_mutants is None or mutants < max_mutants):
            pkg = work / f"m{mutants}.mlpackage"
            edits = make_mutant(rng, rng.choice(seeds), pkg)
            before = tree_digest(pkg)
            chosen = rng.sample(CALLS, k=rng.randint(2, 4))
            results = run_calls(pkg, chosen, work, timeout, memory)
            if tree_digest(pkg) != before:
                results.append({"call": "*", "verdict": "modified", "detail": ""})
            mutants += 1
            calls += len(chosen)
            for r in results:
                outcomes[r["verdict"]] += 1
                if r["verdict"] not in GOOD:
                    finding = {"mutant": mutants - 1, "edits": edits, **r}
                    bad.append(finding)
                    if out is not None:
                        keep = out / f"m{mutants - 1}-{r['call']}-{r['verdict']}.mlpackage"
                        shutil.copytree(pkg, keep, dirs_exist_ok=True, symlinks=True)
                        (keep.parent / (keep.name + ".json")).write_text(
                            json.dumps(finding, indent=1)
                        )
            shutil.rmtree(pkg, ignore_errors=True)
    return {
        "seed": seed,
        "seconds": seconds,
        "mutants": mutants,
        "calls": calls,
        "outcomes": dict(outcomes),
        "bad": bad,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per call")
    ap.add_argument("--memory-gib", type=float, default=4.0, help="address-space limit per child")
    ap.add_argument("--out", type=Path, help="directory to keep bad mutants in")
    args = ap.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    summary = fuzz(
        args.seconds, args.seed, args.out, args.timeout, int(args.memory_gib * (1 << 30))
    )
    print(json.dumps(summary, indent=1))
    sys.exit(1 if summary["bad"] else 0)


if __name__ == "__main__":
    main()
