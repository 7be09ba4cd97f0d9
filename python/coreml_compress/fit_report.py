"""``fit``'s report: a terminal table (nothing beyond the standard library) and one
self-contained HTML file with the plots embedded (matplotlib, the ``report`` extra)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingDependencyError
from .inspect import format_size

if TYPE_CHECKING:
    from .fitting import FitResult, WeightChoice

__all__ = ["layer_of", "require_matplotlib", "terminal_table", "write_html"]


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "the HTML report draws its plots with matplotlib: pip install 'coreml-compress[report]'"
        ) from e


def layer_of(name: str) -> str:
    """The layer a weight belongs to, from its name (``..._layer_3_...``, ``layers.3``,
    ``h_3``, ``blocks_3``); weights outside numbered layers go to ``other``."""
    m = re.search(r"(?:^|[._])(layers?|h|blocks?)[._](\d+)(?:[._]|$)", name)
    return f"{m.group(1)} {int(m.group(2)):>3}" if m else "other"


def _snr(w: WeightChoice) -> str:
    return "exact" if math.isinf(w.snr_db) else f"{w.snr_db:.1f}"


def _rows(result: FitResult) -> tuple[list[str], list[list[str]]]:
    head = ["weight", "op", "shape", "form", "bits/w", "bytes", "SNR dB"]
    if result.weighted:
        head.append("importance")
    rows = []
    for w in result.weights:
        row = [
            w.name,
            w.op_type,
            "×".join(map(str, w.shape)),
            w.form,
            f"{w.bits_per_weight:.2f}",
            format_size(w.bytes),
            _snr(w),
        ]
        if result.weighted:
            row.append("yes" if w.importance else "no (plain SSE)")
        rows.append(row)
    return head, rows


def _grouped(result: FitResult) -> list[tuple[str, list[tuple[str, int]]]]:
    return [
        ("bytes by op type", sorted(result.bytes_by(lambda w: w.op_type).items())),
        ("bytes by layer", sorted(result.bytes_by(lambda w: layer_of(w.name)).items())),
    ]


def _summary(result: FitResult) -> list[str]:
    lines = [
        (
            f"weight files: {format_size(result.weight_file_bytes)} ({result.weight_file_bytes} "
            f"bytes) of max {format_size(result.max_size)}; dense {format_size(result.dense_bytes)}; "
            f"model.mlmodel {format_size(result.model_file_bytes)} beside it"
        ),
        (
            f"{len(result.weights)} weights fitted; {format_size(result.fixed_bytes)} of the weight "
            "file is weights no form selects (below weight_threshold, non-float), kept as they are"
        ),
        (
            f"total error ({'importance-weighted ' if result.weighted else ''}SSE): "
            f"{result.error:.6g}"
            + (
                ""
                if result.optimal
                else f" (the search stopped at its node limit; no choice is below {result.lower_bound:.6g})"
            )
        ),
    ]
    if result.predicted_bytes != result.weight_file_bytes:
        lines.append(
            f"WARNING: predicted {result.predicted_bytes} bytes, wrote {result.weight_file_bytes}"
        )
    if result.excluded_forms:
        lines.append(
            f"not candidates for compute_units={result.compute_units}: "
            + ", ".join(result.excluded_forms)
            + " (the Neural Engine runs no per_block quantization; coremltools issue 2510)"
        )
    if result.ios18_note:
        lines.append(result.ios18_note)
    if result.unmatched_weights:
        lines.append(
            "weights without importance (plain SSE): " + ", ".join(result.unmatched_weights)
        )
    if result.unmatched_modules:
        lines.append(
            "importance modules matching no weight: " + ", ".join(result.unmatched_modules)
        )
    return lines


def _lint_text(message: Any) -> str:
    if isinstance(message, dict):
        return "; ".join(f"{k}: {v}" for k, v in message.items())
    return str(message)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i])
        for i in range(len(head))
    ]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def terminal_table(result: FitResult) -> str:
    """The report as plain text: summary, per-weight choice, bytes by op type and by layer, the
    curve (chosen point marked) and lint warnings."""
    out = _summary(result) + [""]
    out += _table(*_rows(result))
    for title, groups in _grouped(result):
        out += ["", title + ":"]
        out += _table(["", "bytes"], [[k, format_size(v)] for k, v in groups])
    out += ["", "size → error curve (* = chosen):"]
    curve_rows = []
    for size, err in result.curve:
        mark = "*" if size == result.weight_file_bytes else ""
        curve_rows.append([mark, format_size(size), f"{err:.6g}"])
    out += _table(["", "size", "error"], curve_rows)
    out += ["", "lint:" if result.lint else "lint: no warnings"]
    out += [f"  {_lint_text(m)}" for m in result.lint]
    return "\n".join(out)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(result: FitResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    # A log scale shows where quality falls off; exact points (error 0) cannot be drawn on it.
    positive = [(s / 1e6, e) for s, e in result.curve if e > 0]
    ax.plot(
        [s for s, _ in positive],
        [e for _, e in positive],
        "o-",
        label="least total error at each size",
    )
    if result.error > 0:
        ax.plot(
            [result.weight_file_bytes / 1e6], [result.error], "r*", markersize=16, label="chosen"
        )
    ax.axvline(result.max_size / 1e6, color="gray", linestyle="--", label="max_size")
    ax.set_xlabel("weight files (MB)")
    ax.set_ylabel(
        ("importance-weighted " if result.weighted else "") + "SSE (log scale; 0 not shown)"
    )
    if positive:
        ax.set_yscale("log")
    ax.legend()
    ax.set_title("size → error")
    out.append(("The size/error curve", _png(fig)))
    plt.close(fig)
    for title, groups in _grouped(result):
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(groups))))
        ax.barh([k for k, _ in groups], [v / 1e6 for _, v in groups])
        ax.set_xlabel("MB")
        ax.invert_yaxis()
        ax.set_title(title)
        out.append((title.capitalize(), _png(fig)))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    finite = [w for w in result.weights if not math.isinf(w.snr_db)]
    ax.scatter([w.bits_per_weight for w in finite], [w.snr_db for w in finite], s=12)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("SNR (dB)")
    ax.set_title("per-weight choice")
    out.append(("Bits and SNR per weight", _png(fig)))
    plt.close(fig)
    return out


def write_html(result: FitResult, path: str | os.PathLike[str]) -> Path:
    """One HTML file, plots embedded as PNG data, no external resources."""
    esc = html.escape

    def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        th = "".join(f"<th>{esc(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>coreml-compress fit report</title>",
        (
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:2px 6px;text-align:left}th{background:#eee}img{max-width:100%}</style>"
            "</head><body>"
        ),
        "<h1>coreml-compress fit</h1>",
        "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in _summary(result)) + "</ul>",
    ]
    for title, src in _plots(result):
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='{src}'>")
    parts.append("<h2>Per weight</h2>" + table(*_rows(result)))
    for title, groups in _grouped(result):
        parts.append(f"<h2>{esc(title.capitalize())}</h2>")
        parts.append(table(["", "bytes"], [[k, f"{v} ({format_size(v)})"] for k, v in groups]))
    parts.append("<h2>Curve</h2>")
    parts.append(
        table(
            ["size (bytes)", "error", ""],
            [
                [str(s), f"{e:.6g}", "chosen" if s == result.weight_file_bytes else ""]
                for s, e in result.curve
            ],
        )
    )
    parts.append("<h2>Lint</h2>")
    parts.append(
        "<ul>" + "".join(f"<li>{esc(_lint_text(m))}</li>" for m in result.lint) + "</ul>"
        if result.lint
        else "<p>No warnings.</p>"
    )
    parts.append("</body></html>")
    out = Path(path)
    out.write_text("".join(parts), encoding="utf-8")
    return out
