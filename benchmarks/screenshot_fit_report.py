#!/usr/bin/env python3
"""The HTML report of a ``fit`` run as a person sees it: headless Chromium (Debian's
``chromium`` package) renders it and takes a screenshot of the whole page, which goes next to
``benchmarks/RESULTS.md`` (issue 15's proof that the report opens in a real browser). A
benchmark-side script, not a test: it needs Chromium and the MiniLM export.

    python3 benchmarks/screenshot_fit_report.py                  # MiniLM at 4.5 bits per weight
    python3 benchmarks/screenshot_fit_report.py --report r.html  # an existing report
    python3 benchmarks/screenshot_fit_report.py --package P.mlpackage --bits 4
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

#: Tall enough for the whole report of a model of a few hundred weights; the blank rest is cut.
WINDOW = (1280, 16000)


def fit_report(package: Path, bits: float, out_dir: Path) -> Path:
    from coreml_compress import inspect, optimize

    params = sum(w.size for w in inspect(package))
    report = out_dir / "report.html"
    optimize.fit(
        package,
        max_size=int(params * bits / 8),
        output_path=out_dir / "fit.mlpackage",
        report=report,
    )
    return report


def screenshot(report: Path, png: Path) -> None:
    """Chromium's headless screenshot of a tall window, cut below the page's last content."""
    from PIL import Image, ImageChops

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="fit_shot_") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--screenshot={png}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    image = Image.open(png).convert("RGB")
    content = ImageChops.difference(image, Image.new("RGB", image.size, (255, 255, 255))).getbbox()
    if content is not None:
        image.crop((0, 0, image.width, min(image.height, content[3] + 32))).save(png)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="an existing fit report (else fit is run)")
    parser.add_argument("--package", type=Path, help="the package to fit (default: MiniLM)")
    parser.add_argument("--bits", type=float, default=4.5, help="average bits per weight")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "fit_report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fit_report_") as tmp:
        report = args.report
        if report is None:
            import minilm_torch

            package = args.package or minilm_torch.build_package(
                BENCH_DIR / ".cache" / "fit_quality"
            )
            report = fit_report(package, args.bits, Path(tmp))
        screenshot(report, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
