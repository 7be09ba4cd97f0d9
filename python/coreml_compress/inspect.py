"""``coreml_compress.inspect(model)``: what every weight of a package is and how it is stored.

Returns a :class:`WeightReport`: a list of one record per weight that prints as a table, renders
as an HTML table in Jupyter and converts for pandas (``pandas.DataFrame(report.rows())``).
One record per weight: every dense ``const`` (at least 10 elements) the model computes with, and
every ``constexpr_*`` chain end (a compressed weight). A superset of coremltools'
``coremltools.optimize.coreml.get_weights_metadata``: names, consumers, shape, dtype, distinct
value count, plus bytes on disk, the compression kind and its parameters.

The walk runs in the Rust engine; ``coremltools`` is not needed.
"""

from __future__ import annotations

import html
import sys
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _native
from ._interop import ModelLike, package_path

__all__ = ["Consumer", "WeightInfo", "WeightReport", "format_size", "inspect"]

_DTYPE_BYTES = {
    "fp16": 2,
    "fp32": 4,
    "fp64": 8,
    "bf16": 2,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
}


@dataclass(frozen=True)
class Consumer:
    """A non-constexpr op that reads the weight, and the parameter it feeds."""

    op_type: str
    op_name: str
    param: str


@dataclass(frozen=True)
class WeightInfo:
    """One weight. ``name`` is the const op's name, or the name of the chain's last op.

    ``counted_bytes`` is what the weight adds to the package: ``bytes_on_disk`` less the blobs
    an earlier weight of the listing already holds (functions of a merged multifunction package
    share identical weights); ``shared_with`` names the other functions that read its blobs.
    """

    name: str
    var: str
    function: str
    consumers: tuple[Consumer, ...]
    block_output: bool
    shape: tuple[int, ...]
    dtype: str
    bytes_on_disk: int
    compression: str
    chain: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    distinct: int = 0
    counted_bytes: int = 0
    shared_with: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def dense_bytes(self) -> int:
        """Bytes of the weight stored dense in its dtype."""
        return self.size * _DTYPE_BYTES.get(self.dtype, 0)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes_on_disk / self.size if self.size else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["consumers"] = [tuple(c.values()) for c in d["consumers"]]
        d["shape"] = list(self.shape)
        d["chain"] = list(self.chain)
        d["shared_with"] = list(self.shared_with)
        return d


def format_size(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


_PARAM_KEYS = ("nbits", "cluster_dim", "data_dtype", "scale_shape", "has_offset", "sparsity")


def _params_cell(w: WeightInfo) -> str:
    parts = []
    for k in _PARAM_KEYS:
        if k in w.params:
            v = w.params[k]
            if isinstance(v, float):
                v = f"{v:.2f}"
            elif isinstance(v, tuple):
                v = "x".join(map(str, v))
            parts.append(f"{k}={v}")
    return " ".join(parts)


class WeightReport(list):
    """The list of :class:`WeightInfo` records, with :attr:`totals` over them.

    Still the list it always was (``len``, iteration, indexing); prints as an aligned table
    with the totals, renders as an HTML table in Jupyter, and gives :meth:`rows` (one dict per
    weight) and :meth:`to_dict` (one list per column) for ``pandas.DataFrame``.
    """

    @property
    def totals(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        for w in self:
            by_kind[w.compression] = by_kind.get(w.compression, 0) + 1
        # A blob shared by several functions counts once.
        on_disk = sum(w.counted_bytes for w in self)
        dense = sum(w.dense_bytes for w in self)
        params = sum(w.size for w in self)
        return {
            "weights": len(self),
            "parameters": params,
            "bytes_on_disk": on_disk,
            "dense_bytes": dense,
            "compression_ratio": dense / on_disk if on_disk else 1.0,
            "bits_per_weight": 8.0 * on_disk / params if params else 0.0,
            "by_compression": dict(sorted(by_kind.items())),
        }

    def by_name(self) -> dict[str, WeightInfo]:
        """The records by weight name."""
        return {w.name: w for w in self}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per weight: every field, plus ``size``, ``dense_bytes`` and
        ``bits_per_weight`` (``pandas.DataFrame(report.rows())``)."""
        return [
            {
                **w.as_dict(),
                "size": w.size,
                "dense_bytes": w.dense_bytes,
                "bits_per_weight": w.bits_per_weight,
            }
            for w in self
        ]

    def to_dict(self) -> dict[str, list[Any]]:
        """Column name → one value per weight, the columns of :meth:`rows`
        (``pandas.DataFrame(report.to_dict())``)."""
        rows = self.rows()
        columns = (
            list(rows[0])
            if rows
            else [*WeightInfo.__dataclass_fields__, "size", "dense_bytes", "bits_per_weight"]
        )
        return {c: [r[c] for r in rows] for c in columns}

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        """The table's header and one row of display strings per weight."""
        multi = len({w.function for w in self}) > 1
        headers = [
            "name",
            "shape",
            "dtype",
            "compression",
            "on disk",
            "bits/w",
            "distinct",
            "consumers",
            "params",
        ]
        if multi:
            headers.insert(0, "function")
        shared = self._shared()
        if shared:
            headers.append("shared with")
        rows = []
        for w in self:
            consumers = ", ".join(f"{c.op_type}:{c.param}" for c in w.consumers)
            if w.block_output:
                consumers = ", ".join(filter(None, [consumers, "<output>"]))
            row = [
                w.name,
                "x".join(map(str, w.shape)) or "()",
                w.dtype,
                w.compression,
                format_size(w.bytes_on_disk),
                f"{w.bits_per_weight:.2f}",
                str(w.distinct),
                consumers,
                _params_cell(w),
            ]
            if multi:
                row.insert(0, w.function)
            if shared:
                row.append(", ".join(w.shared_with))
            rows.append(row)
        return headers, rows

    def summary(self) -> str:
        """The totals as one line: weights per kind, parameters, sizes, ratio, bits/weight."""
        t = self.totals
        kinds = ", ".join(f"{k}: {n}" for k, n in t["by_compression"].items()) or "-"
        return (
            f"{t['weights']} weights ({kinds}), {t['parameters']:,} parameters; "
            f"{format_size(t['bytes_on_disk'])} on disk, {format_size(t['dense_bytes'])} dense "
            f"({t['compression_ratio']:.2f}x, {t['bits_per_weight']:.2f} bits/weight)"
            + ("; weights shared by several functions counted once" if self._shared() else "")
        )

    def _shared(self) -> bool:
        return any(w.shared_with for w in self)

    def __str__(self) -> str:
        headers, rows = self._cells()
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(wd) for c, wd in zip(cells, widths)).rstrip()

        out = [line(headers), line(["-" * wd for wd in widths])]
        out.extend(line(r) for r in rows)
        return "\n".join([*out, "", self.summary()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        headers, rows = self._cells()

        def tr(cells: Sequence[str], tag: str) -> str:
            return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

        body = "".join(tr(r, "td") for r in rows)
        return (
            f"<table><thead>{tr(headers, 'th')}</thead><tbody>{body}</tbody></table>"
            f"<p>{html.escape(self.summary())}</p>"
        )


def _record(d: dict[str, Any]) -> WeightInfo:
    return WeightInfo(
        name=d["name"],
        var=d["var"],
        function=d["function"],
        consumers=tuple(Consumer(*c) for c in d["consumers"]),
        block_output=bool(d["block_output"]),
        shape=tuple(d["shape"]),
        dtype=d["dtype"],
        bytes_on_disk=int(d["bytes_on_disk"]),
        compression=d["compression"],
        chain=tuple(d["chain"]),
        params={k: tuple(v) if isinstance(v, list) else v for k, v in d["params"].items()},
        distinct=int(d["distinct"]),
        counted_bytes=int(d["counted_bytes"]),
        shared_with=tuple(d["shared_with"]),
    )


def inspect(model: ModelLike) -> WeightReport:
    """Every weight of a model and how it is stored.

    Parameters
    ----------
    model : str, os.PathLike or coremltools.models.MLModel
        A ``.mlpackage`` path, or an MLModel of an ML Program (coremltools is not needed for a
        path).

    Returns
    -------
    WeightReport
        A list of :class:`WeightInfo` in function and program order, with ``.totals`` (weight
        count, parameters, bytes on disk, dense bytes, ratio). It prints as a table, renders as
        an HTML table in Jupyter, and gives ``.rows()`` / ``.to_dict()`` for pandas.

    Raises
    ------
    coreml_compress.errors.CoreMLCompressError
        A malformed or unsupported package (``MalformedPackageError``,
        ``UnsupportedModelError``), or one that cannot be read (``PackageIOError``).

    Example
    -------
    >>> import coreml_compress
    >>> report = coreml_compress.inspect("model.mlpackage")
    >>> report                                  # the table
    >>> report.totals["bits_per_weight"]
    4.25
    >>> import pandas; pandas.DataFrame(report.rows())
    """
    path = package_path(model)
    return WeightReport(_record(d) for d in _native.inspect(str(path)))


class _CallableModule(types.ModuleType):
    """Lets ``coreml_compress.inspect(model)`` work whether ``coreml_compress.inspect`` names this
    module or the function."""

    def __call__(self, model: ModelLike) -> WeightReport:
        return inspect(model)


sys.modules[__name__].__class__ = _CallableModule
