"""``coreml_compress.inspect(model)``: what every weight of a package is and how it is stored.

One record per weight: every dense ``const`` (at least 10 elements) the model computes with, and
every ``constexpr_*`` chain end (a compressed weight). A superset of coremltools'
``coremltools.optimize.coreml.get_weights_metadata``: names, consumers, shape, dtype, distinct
value count, plus bytes on disk, the compression kind and its parameters.

The walk runs in the Rust engine; ``coremltools`` is not needed.
"""

from __future__ import annotations

import sys
import types
from dataclasses import asdict, dataclass, field
from typing import Any

from . import _native
from ._interop import ModelLike, package_path

__all__ = ["Consumer", "WeightInfo", "WeightReport", "inspect"]

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


class WeightReport(list):
    """The list of :class:`WeightInfo` records, with :attr:`totals` over them."""

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
        return {w.name: w for w in self}


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
    """Every weight of ``model`` (a ``.mlpackage`` path or a coremltools ``MLModel``).

    Returns a :class:`WeightReport`: a list of :class:`WeightInfo` in function and program
    order, with ``.totals`` (weight count, parameters, bytes on disk, dense bytes, ratio).
    """
    path = package_path(model)
    return WeightReport(_record(d) for d in _native.inspect(str(path)))


class _CallableModule(types.ModuleType):
    """Lets ``coreml_compress.inspect(model)`` work whether ``coreml_compress.inspect`` names this
    module or the function."""

    def __call__(self, model: ModelLike) -> WeightReport:
        return inspect(model)


sys.modules[__name__].__class__ = _CallableModule
