"""Without coremltools the engine, the Python API (paths in, paths out) and the CLI still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import models

# Makes `import coremltools` fail in the child process, as on a machine without it.
BLOCK = "import sys; sys.modules['coremltools'] = None\n"

SCRIPT = (
    BLOCK
    + """
from pathlib import Path
import coreml_compress
from coreml_compress import optimize
from coreml_compress.config import OptimizationConfig, OpLinearQuantizerConfig, OpPalettizerConfig
src, out = Path(sys.argv[1]), Path(sys.argv[2])
q = optimize.linear_quantize_weights(src, OptimizationConfig(OpLinearQuantizerConfig(dtype="int4", granularity="per_block", block_size=16)), output_path=out / "q.mlpackage")
assert isinstance(q, Path) and q.is_dir(), q
p = optimize.palettize_weights(src, {"config_type": "OptimizationConfig", "global_config": {"config_type": "OpPalettizerConfig", "nbits": 2, "mode": "uniform"}}, output_path=out / "p.mlpackage")
assert isinstance(p, Path)
d = optimize.decompress_weights(q, output_path=out / "d.mlpackage")
assert isinstance(d, Path)
report = coreml_compress.inspect(q)
assert any(w.compression == "quantized" for w in report)
from coreml_compress.lint import lint_package
assert {m.rule for m in lint_package(q, "cpu_and_ne")} == {"per-block-on-ane"}
assert "coremltools" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
print("ok")
"""
)


def test_api_without_coremltools(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS18", "fp16")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(src), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    # The packages written without coremltools load in coremltools and compress the same weights.
    assert "constexpr_blockwise_shift_scale" in models.op_types(tmp_path / "q.mlpackage")
    assert not [t for t in models.op_types(tmp_path / "d.mlpackage") if t.startswith("constexpr_")]


def test_cli_without_coremltools(model_dir: Path, tmp_path: Path) -> None:
    src = models.build("linear", model_dir, "iOS18", "fp16")
    code = BLOCK + "from coreml_compress.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "palettize",
            str(src),
            str(tmp_path / "o.mlpackage"),
            "--nbits",
            "4",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "bits per weight" in run.stdout
