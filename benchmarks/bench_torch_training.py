"""Training-time palettization, coremltools' DKMPalettizer vs this engine, side by side on CPU.

    python benchmarks/bench_torch_training.py [--steps N] [--model minilm|ffn|large]
        [--width D --depth L] [--mem-limit-gb G]

One user script (:func:`train`), run once per implementation, each in a fresh process under the
harness (``harness.run_once``: peak RSS from ``/usr/bin/time -v``, a memory guard that kills the
job above ``--mem-limit-gb``). Coremltools' run is its own ``DKMPalettizer``; ours is the same
script after ``patch_coremltools(torch=True)``. Every Linear is palettized to 4 bits
(``DKMPalettizerConfig`` with ``module_type_configs={"Linear": {"n_bits": 4}}``), Adam at 1e-4.

Models and task losses:

- ``minilm``: all-MiniLM-L6-v2 (real weights, ``transformers``, ``tests/minilm_torch.py``; its 36
  Linears, 10.6 M palettized weights). The loss is the MSE between the model's sentence
  embeddings (mean pooling) and the dense fp32 model's, on the 16 fixed sentences of
  ``minilm_torch.SENTENCES`` (every step); the held-out loss is the same on
  ``CALIBRATION_SENTENCES``.
- ``large``: a generated stack of ``--depth`` Linear(``--width``, ``--width``) + GELU (random
  weights, seed 0), MSE to the dense model's outputs on random 8×64 token batches; held out: a
  batch never trained on.
- ``ffn``: one MiniLM-sized feed-forward block (384→1536→384), the same random-input loss.

Reported per run: ``prepare()`` time (coremltools' k-means initialisation runs inside its first
forward instead), the median wall time per training step (forward, backward, optimizer step,
``palettizer.step()``) over steps 2..N, peak RSS and its increase over the process before
``DKMPalettizer(...)`` (model, data, targets), the training loss at the first and last step, and
the loss of the finalized (hard-palettized) model on the training and the held-out data.
Coremltools' k-means initialisation (k-means++, 10 restarts, up to 100 iterations per weight)
runs inside its first training step, which the median leaves out. Each run also appends one
line per step (time, loss, current and peak RSS) to
``benchmarks/.cache/results/torch_training_<model>_<impl>.log``, which survives a run that the
memory guard or the operator stops.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import harness

BENCH_DIR = Path(__file__).resolve().parent


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _task(model_name: str, width: int, depth: int):
    """(model, train batch, held-out batch, loss(model, batch, target), target(model, batch))."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if model_name == "minilm":
        sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
        import minilm_torch

        def embeddings(model, sentences):
            enc = minilm_torch.tokens(sentences)
            hidden = model(enc["input_ids"], enc["attention_mask"])
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1)

        return (
            minilm_torch.load_encoder(),
            minilm_torch.SENTENCES,
            minilm_torch.CALIBRATION_SENTENCES,
            embeddings,
        )
    if model_name == "ffn":
        model = nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384))
    else:
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.GELU()]
        model = nn.Sequential(*layers)
    features = model[0].in_features
    g = torch.Generator().manual_seed(1)
    train_x, held_x = (torch.randn(8, 64, features, generator=g) for _ in range(2))
    return model.eval(), train_x, held_x, lambda m, x: m(x)


def train(out_dir: str, impl: str, model_name: str, steps: int, width: int, depth: int) -> dict:
    """The user script: one implementation, ``steps`` training steps, then ``finalize()``."""
    import logging

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch
    from torch import nn

    progress = harness.RESULTS_DIR / f"torch_training_{model_name}_{impl}.log"
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("")
    model, train_data, held_data, forward = _task(model_name, width, depth)
    with torch.no_grad():
        train_target = forward(model, train_data)
        held_target = forward(model, held_data)
    palettized = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))

    if impl == "ours":
        import coreml_compress

        coreml_compress.patch_coremltools(torch=True)
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    config = DKMPalettizerConfig.from_dict({"module_type_configs": {"Linear": {"n_bits": 4}}})
    base = _current_rss_mb()
    t = time.perf_counter()
    palettizer = DKMPalettizer(model, config)
    prepared = palettizer.prepare()
    prepare_s = time.perf_counter() - t
    with open(progress, "a") as f:
        print(
            f"prepare: {prepare_s:.2f} s, RSS {_current_rss_mb():.0f} MB (before {base:.0f})",
            file=f,
        )
    prepared.train()
    opt = torch.optim.Adam(prepared.parameters(), 1e-4)
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        loss = nn.functional.mse_loss(forward(prepared, train_data), train_target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        palettizer.step()
        times.append(time.perf_counter() - t)
        losses.append(float(loss.detach()))
        with open(progress, "a") as f:  # kept when the memory guard kills the run
            print(
                f"step {len(times)}: {times[-1]:.2f} s, loss {losses[-1]:.4g}, "
                f"RSS {_current_rss_mb():.0f} MB, peak {_peak_rss_mb():.0f} MB",
                file=f,
            )
    final = palettizer.finalize()
    final.eval()
    with torch.no_grad():
        final_loss = float(nn.functional.mse_loss(forward(final, train_data), train_target))
        held_loss = float(nn.functional.mse_loss(forward(final, held_data), held_target))
    return {
        "prepare_s": prepare_s,
        "step_s": statistics.median(times[1:]),
        "base_mb": base,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "final_loss": final_loss,
        "held_loss": held_loss,
        "palettized": palettized,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per run (first is warm-up)")
    p.add_argument("--model", choices=("minilm", "ffn", "large"), default="minilm")
    p.add_argument("--width", type=int, default=2048, help="--model large: Linear width")
    p.add_argument("--depth", type=int, default=3, help="--model large: number of Linears")
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=14.0,
        help="the memory guard: a run above this RSS is killed and reported",
    )
    p.add_argument("--only", choices=("coremltools", "ours"), help="run one side only")
    args = p.parse_args()
    print(
        "| implementation | palettized weights | prepare (s) | s/step | peak RSS (MB) | "
        "over model+data (MB) | loss step 1 → last | finalized loss (train / held out) | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    for impl in ("coremltools", "ours"):
        if args.only and impl != args.only:
            continue
        job = harness.Job(
            "bench_torch_training",
            "train",
            {
                "impl": impl,
                "model_name": args.model,
                "steps": args.steps,
                "width": args.width,
                "depth": args.depth,
            },
            timeout_s=3 * 3600,
        )
        run = harness.run_once(job, mem_limit_gb=args.mem_limit_gb)
        if not run.ok:
            print(
                f"| {impl} | | | failed: {run.error} | "
                f"{(run.rss_bytes or 0) / 2**20:.0f} | | | | {run.load_1min} |",
                flush=True,
            )
            continue
        r = run.extra
        peak = (run.rss_bytes or 0) / 2**20
        print(
            f"| {impl} | {r['palettized']:,} | {r['prepare_s']:.1f} | {r['step_s']:.2f} | "
            f"{peak:.0f} | {peak - r['base_mb']:.0f} | "
            f"{r['first_loss']:.3g} → {r['last_loss']:.3g} | "
            f"{r['final_loss']:.3g} / {r['held_loss']:.3g} | {run.load_1min} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
