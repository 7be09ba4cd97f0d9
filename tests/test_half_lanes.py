"""The three fp16 lane conversions (src/kernels/fp16.rs: this project's F16C code, the `half`
crate's dispatched conversions that portable builds and other platforms run, and pure software)
give identical bytes in every kernel. Each runs in a process of its own, chosen with
COREML_COMPRESS_HALF_LANES (read once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Every kernel family on fp16 and fp32 data that spans fp16's range: subnormals, ±0, values near
# ±65504, and odd sizes so that the lane loops' remainders run too.
RUN = r"""
import hashlib, json, sys
import numpy as np
from coreml_compress import _native, kernels

rng = np.random.default_rng(5)
base = (rng.standard_normal((96, 264)) * rng.choice([1e-6, 1e-2, 1.0, 300.0], (96, 1)))
base[0, :8] = [0.0, -0.0, 6e-8, -6e-8, 65504.0, -65504.0, 1e-5, 2.0**-14]
digest = hashlib.sha256()

def add(result):
    for part in result if isinstance(result, tuple) else (result,):
        if part is not None and hasattr(part, "tobytes"):
            digest.update(np.ascontiguousarray(part).tobytes())

for dtype in (np.float16, np.float32):
    w = base.astype(dtype)
    for nbits, granularity, mode in [(4, "per_tensor", "kmeans"), (2, "per_grouped_channel", "kmeans"),
                                     (8, "per_tensor", "uniform"), (6, "per_grouped_channel", "uniform")]:
        p = kernels.palettize(w, nbits=nbits, mode=mode, granularity=granularity, group_size=16)
        add(tuple(p)); add(kernels.lut_to_dense(p))
    add(tuple(kernels.palettize(w, nbits=4, cluster_dim=2, granularity="per_tensor")))
    add(tuple(kernels.palettize(w, nbits=4, enable_per_channel_scale=True)))
    for dt, gran in [("int4", "per_block"), ("int8", "per_channel"), ("uint8", "per_tensor")]:
        for mode in ("linear_symmetric", "linear"):
            q = kernels.quantize(w, dtype=dt, mode=mode, granularity=gran, block_size=8)
            add(tuple(q)); add(kernels.dequantize(q))
    for args in [dict(target_sparsity=0.5), dict(n_m_ratio=(2, 4)), dict(threshold=0.01, minimum_sparsity_percentile=0.1)]:
        s = kernels.prune(w, **args)
        add(tuple(s)); add(kernels.sparse_to_dense(s.nonzero_data, s.mask))
print(json.dumps({"lanes": _native.build_info()["half_lanes"], "digest": digest.hexdigest()}))
"""


def _run(lanes: str) -> dict:
    env = dict(os.environ, COREML_COMPRESS_HALF_LANES=lanes)
    run = subprocess.run(
        [sys.executable, "-c", RUN], env=env, check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_lane_variants_give_identical_bytes() -> None:
    results = {lanes: _run(lanes) for lanes in ("f16c", "half", "software")}
    ran = {r["lanes"] for r in results.values()}
    assert {"half", "software"} <= ran, results  # f16c only where the build and CPU have it
    assert len({r["digest"] for r in results.values()}) == 1, results


def test_build_info_names_the_lanes() -> None:
    from coreml_compress import _native

    info = _native.build_info()
    assert info["half_lanes"] in {"f16c", "half", "software"}
    if info["portable"]:
        assert info["half_lanes"] != "f16c"
    with pytest.raises(TypeError):
        _native.build_info(1)  # type: ignore[call-arg]
