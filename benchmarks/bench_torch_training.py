"""Training-time palettization, coremltools' DKMPalettizer vs this engine, side by side on CPU.

    python benchmarks/bench_torch_training.py [--steps N] [--layers L] [--large]

The same script runs once per implementation, each in a fresh process: the all-MiniLM-L6-v2
encoder (real weights; its first ``--layers`` layers, default all 6) with every Linear palettized to 4 bits (``DKMPalettizerConfig`` with
``module_type_configs={"Linear": {"n_bits": 4}}``), Adam at 1e-4, a distillation loss (MSE to
the dense model's outputs on random token batches of 8×64). Coremltools' run is its own
``DKMPalettizer``; ours is the same script after ``patch_coremltools(torch=True)``. Reported:
median wall time per training step (forward, backward, optimizer step, ``palettizer.step()``;
after one warm-up step), peak resident memory of the process and its increase over the model
with its optimizer before ``prepare()``, and the loss after the last step.

``--large`` also runs ours on a generated stack of 8 Linear(4096, 4096) layers (134 M palettized
weights), a size at which DKM's per-forward attention (N × 16 floats per k-means iteration for
each weight, kept for backward) needs far more than 8 GB; coremltools is not run there (it would
exhaust this machine's memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(impl: str, model_name: str, steps: int, layers: int) -> dict:
    import logging

    logging.disable(logging.WARNING)
    import torch
    from torch import nn

    torch.manual_seed(0)
    if model_name == "minilm":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from test_torch_compress import MiniLM

        model = MiniLM(layers=layers).eval()

        def batch(g):
            return torch.randint(1000, 20000, (8, 64), generator=g)
    elif model_name == "ffn":  # one MiniLM feed-forward block
        model = nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384)).eval()

        def batch(g):
            return torch.randn(8, 64, 384, generator=g)
    else:
        model = nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(8)]).eval()

        def batch(g):
            return torch.randn(8, 64, 4096, generator=g)

    if impl == "ours":
        import coreml_compress

        coreml_compress.patch_coremltools(torch=True)
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    config = DKMPalettizerConfig.from_dict({"module_type_configs": {"Linear": {"n_bits": 4}}})
    g = torch.Generator().manual_seed(1)
    batches = [batch(g) for _ in range(steps + 1)]
    with torch.no_grad():
        targets = [model(b) for b in batches]
    base = _current_rss_mb()
    palettizer = DKMPalettizer(model, config)
    prepared = palettizer.prepare()
    prepared.train()
    opt = torch.optim.Adam(prepared.parameters(), 1e-4)
    times, loss = [], float("nan")
    for b, y in zip(batches, targets):
        t = time.perf_counter()
        out = prepared(b)
        loss_t = nn.functional.mse_loss(out, y)
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        palettizer.step()
        times.append(time.perf_counter() - t)
        loss = float(loss_t.detach())
    return {
        "step_s": statistics.median(times[1:]),
        "peak_mb": _rss_mb(),
        "base_mb": base,
        "loss": loss,
        "threads": torch.get_num_threads(),
    }


def run(impl: str, model_name: str, steps: int, layers: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl, "--model", model_name, "--steps", str(steps),
         "--layers", str(layers)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="training steps per run (first is warm-up)")
    p.add_argument("--layers", type=int, default=6, help="MiniLM layers (1-6)")
    p.add_argument("--ffn", action="store_true", help="one MiniLM feed-forward block instead")
    p.add_argument("--large", action="store_true", help="also the 8×4096² model (ours only)")
    p.add_argument("--child", choices=("coremltools", "ours"), help=argparse.SUPPRESS)
    p.add_argument("--model", default="minilm", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.steps, args.layers)))
        return
    label = f"MiniLM ({args.layers} layers), all Linear 4-bit"
    if args.ffn:
        label = "MiniLM feed-forward block (384→1536→384), 4-bit"
    runs = [(label, "ffn" if args.ffn else "minilm", impl) for impl in ("coremltools", "ours")]
    if args.large:
        runs.append(("8× Linear(4096, 4096) 4-bit", "large", "ours"))
    print("| model | implementation | s/step | peak RSS (MB) | over model+data (MB) | loss |")
    print("|---|---|---:|---:|---:|---:|")
    for label, model_name, impl in runs:
        r = run(impl, model_name, args.steps, args.layers)
        if "error" in r:
            print(f"| {label} | {impl} | failed: {r['error']} | | | |")
            continue
        print(
            f"| {label} | {impl} | {r['step_s']:.2f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] - r['base_mb']:.0f} | {r['loss']:.4g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
