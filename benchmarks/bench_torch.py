"""coremltools.optimize.torch vs coreml_compress.torch, side by side on the CPU.

    python benchmarks/bench_torch.py [--quick] [--repeat N]

Workloads (the anchors of shared/reference/coremltools-torch-timings.md): GPTQ (uint4, per-block
32) and SparseGPT (50 %, uint8) on one 4096×4096 Linear with 128 samples of 2048 calibration
tokens (``--quick``: 1024×1024 with 8×512 tokens), and sensitive k-means on all-MiniLM-L6-v2
(4-bit, groups of 16 channels). Prints medians and ratios as a markdown table; each timing is the
whole ``compress()`` call. Calibration inputs are correlated (low-rank + noise) so that the
Hessian matters; the relative output error on held-out tokens is printed next to the times.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _data(n: int, tokens: int, cols: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(64, cols, generator=torch.Generator().manual_seed(7)) * 0.5
    return [
        torch.randn(tokens, cols, generator=g) + torch.randn(tokens, 64, generator=g) @ basis
        for _ in range(n)
    ]


def _timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _rel_err(ref: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = ref(x), model(x)
        return float(((a - b) ** 2).sum() / (a**2).sum())


def bench_layerwise(args, rows: list) -> None:
    import coremltools.optimize.torch.layerwise_compression as ctl
    from coreml_compress.torch import LayerwiseCompressor

    n, tokens, dim = (8, 512, 1024) if args.quick else (128, 2048, 4096)
    torch.manual_seed(0)
    lin = nn.Linear(dim, dim, bias=False)
    nn.init.normal_(lin.weight, 0, 0.02)
    model = nn.Sequential(lin).eval()
    data = _data(n, tokens, dim, 1)
    held = _data(1, 256, dim, 2)[0]
    configs = {
        "GPTQ uint4 per-block 32": {
            "algorithm": "gptq",
            "weight_dtype": "uint4",
            "granularity": "per_block",
            "block_size": 32,
        },
        "SparseGPT 50% + uint8": {"algorithm": "sparse_gpt", "target_sparsity": 0.5},
    }
    for label, gc in configs.items():
        cfg = {"global_config": gc, "calibration_nsamples": n}
        t_ref, m_ref = _timed(
            lambda cfg=cfg: ctl.LayerwiseCompressor(
                model, ctl.LayerwiseCompressorConfig.from_dict(cfg)
            ).compress(data, "cpu"),
            args.repeat,
        )
        t_ours, m_ours = _timed(
            lambda cfg=cfg: LayerwiseCompressor(model, cfg).compress(data, "cpu"), args.repeat
        )
        rows.append(
            (
                f"{label}, {dim}x{dim}, {n}x{tokens} tokens",
                t_ref,
                t_ours,
                f"{_rel_err(model, m_ref, held):.3e} / {_rel_err(model, m_ours, held):.3e}",
            )
        )


def bench_skm(args, rows: list) -> None:
    import coremltools.optimize.torch.palettization as ctp
    from coreml_compress.torch import SKMPalettizer
    from test_torch_compress import MiniLM

    model = MiniLM(layers=2 if args.quick else 6).eval()
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(1000, 20000, (4, 64), generator=g) for _ in range(8)]

    def loss_fn(m, ids):
        return m(ids).pow(2).mean()

    cfg = {
        "global_config": {"n_bits": 4, "granularity": "per_grouped_channel", "group_size": 16},
        "module_type_configs": {"Embedding": None},
        "calibration_nsamples": 8,
    }
    t_ref, m_ref = _timed(
        lambda: ctp.SKMPalettizer(model, ctp.SKMPalettizerConfig.from_dict(cfg)).compress(
            dataloader=data, loss_fn=loss_fn
        ),
        args.repeat,
    )
    t_ours, m_ours = _timed(
        lambda: SKMPalettizer(model, cfg).compress(dataloader=data, loss_fn=loss_fn), args.repeat
    )
    ids = torch.randint(1000, 20000, (2, 64), generator=g)
    rows.append(
        (
            f"SKM 4-bit g16, MiniLM ({len(model.encoder)} layers)",
            t_ref,
            t_ours,
            f"{_rel_err(model, m_ref, ids):.3e} / {_rel_err(model, m_ours, ids):.3e}",
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    p.add_argument("--repeat", type=int, default=None, help="runs per workload (median)")
    args = p.parse_args()
    if args.repeat is None:
        args.repeat = 3 if args.quick else 1
    rows: list = []
    bench_layerwise(args, rows)
    bench_skm(args, rows)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeat} run(s)\n"
    )
    print(
        "| workload | coremltools (s) | coreml-compress (s) | speed-up | rel. output error (ct / ours) |"
    )
    print("|---|---:|---:|---:|---|")
    for label, a, b, err in rows:
        print(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.1f}x | {err} |")


if __name__ == "__main__":
    main()
