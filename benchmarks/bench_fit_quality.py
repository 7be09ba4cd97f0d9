"""Quality of ``optimize.fit`` against one global configuration of the same size, on the real
all-MiniLM-L6-v2 (issue 15's proof).

    python benchmarks/bench_fit_quality.py [--out DIR]

The model is loaded with ``transformers``, exported with ``torch.export`` and converted to an
iOS18 fp16 package (``tests/minilm_torch.py``, cached under ``benchmarks/.cache``). Each global
configuration (k-means palettization of every weight: 8 bits per tensor, 4 bits per tensor,
4 bits with groups of 16 channels) gives a package whose weight-file bytes are a budget; ``fit``
then fits the same package to each budget, without and with importance from
``collect_importance`` on calibration sentences disjoint from the test sentences. Every result's
decompressed weights go back into the torch model, and the table shows the mean cosine
similarity of its sentence embeddings to the fp32 model's on the fixed test sentences.

It prints the machine (with the load average at the start and at the end) and the table, as
``benchmarks/RESULTS.md`` records them; each fit row also gives the wall time of its ``fit``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
sys.path.insert(0, str(BENCH_DIR))

import harness
import minilm_torch
from coreml_compress import inspect, optimize
from coreml_compress.torch import collect_importance

CACHE_DIR = BENCH_DIR / ".cache" / "fit_quality"

GLOBAL_CONFIGS = {
    "k-means 8-bit per tensor": optimize.OpPalettizerConfig(nbits=8),
    "k-means 4-bit per tensor": optimize.OpPalettizerConfig(nbits=4),
    "k-means 4-bit g16": optimize.OpPalettizerConfig(
        nbits=4, granularity="per_grouped_channel", group_size=16
    ),
}


def weight_file_bytes(package: Path) -> int:
    """The bytes ``fit``'s ``max_size`` counts: every weight file of the package."""
    weights = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    return sum(f.stat().st_size for f in weights.iterdir() if f.is_file())


def form_mix(package: Path) -> str:
    """How the weights are stored, as counts: ``palettized 4b g16: 30, none: 65``."""

    def form(w: Any) -> str:
        if w.compression == "none":
            return "none"
        parts = [w.compression]
        if "nbits" in w.params:
            parts.append(f"{w.params['nbits']}b")
        # An iOS18 LUT has one entry per group along each axis, then (entries, cluster_dim).
        lut_shape = w.params.get("lut_shape", ())
        parts.extend(
            f"g{dim // groups}" for dim, groups in zip(w.shape, lut_shape[:-2]) if groups > 1
        )
        return " ".join(parts)

    counts = Counter(form(w) for w in inspect(package))
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def cosine_of(package: Path, reference: Any, scratch: Path) -> float:
    encoder = minilm_torch.load_encoder()
    minilm_torch.load_package_weights(encoder, package, scratch)
    return minilm_torch.mean_cosine(reference, minilm_torch.sentence_embeddings(encoder))


def run(out_dir: Path) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fitq_", dir=out_dir))
    t = time.perf_counter()
    package = minilm_torch.build_package(CACHE_DIR)
    print(f"package: {package} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    reference = minilm_torch.sentence_embeddings(minilm_torch.load_encoder())
    rows = [
        {
            "budget": "-",
            "method": "fp16 (converted)",
            "mix": form_mix(package),
            "bytes": weight_file_bytes(package),
            "cosine": cosine_of(package, reference, scratch),
            "seconds": None,
        }
    ]
    importance_path = out_dir / "minilm_importance.safetensors"
    collect_importance(
        minilm_torch.load_encoder(), minilm_torch.calibration_items(), path=importance_path
    )
    for label, op_config in GLOBAL_CONFIGS.items():
        config = optimize.OptimizationConfig(global_config=op_config)
        slug = label.replace(" ", "_")
        global_pkg = optimize.palettize_weights(
            package, config, output_path=out_dir / f"global_{slug}.mlpackage"
        )
        budget = weight_file_bytes(global_pkg)
        rows.append(
            {
                "budget": budget,
                "method": label,
                "mix": form_mix(global_pkg),
                "bytes": budget,
                "cosine": cosine_of(global_pkg, reference, scratch),
                "seconds": None,
            }
        )
        for importance in (None, importance_path):
            fitted = out_dir / f"fit_{slug}{'_imp' if importance else ''}.mlpackage"
            t = time.perf_counter()
            optimize.fit(package, max_size=budget, output_path=fitted, importance=importance)
            seconds = time.perf_counter() - t
            rows.append(
                {
                    "budget": budget,
                    "method": "fit" + (" + importance" if importance else ""),
                    "mix": form_mix(fitted),
                    "bytes": weight_file_bytes(fitted),
                    "cosine": cosine_of(fitted, reference, scratch),
                    "seconds": seconds,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| budget (bytes) | method | form mix | weight files (bytes) | mean cosine | fit wall |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        wall = "" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        lines.append(
            f"| {r['budget']} | {r['method']} | {r['mix']} | {r['bytes']} | {r['cosine']:.5f} "
            f"| {wall} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CACHE_DIR / "runs", help="output directory")
    args = parser.parse_args()
    machine = harness.machine_markdown(harness.machine_info())
    rows = run(args.out)
    end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{machine}- load average (1/5/15 min) at the end: {end}\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
