"""Tests for coreml_compress.config: parity with coremltools' configs and the native forms.

Most tests build the same config twice, once with coremltools' classes and once
with ours, and require the same outcome: equal field values (names, order, values
and value types), or the same exception type and message (recursively for cattrs
exception groups). Dict input is the exception: there ours is a ConfigError whose
message names the key, that is also coremltools' exception type, with the same
sub-exceptions. coremltools is only needed for the parity tests; the
rest runs without it.
"""

from __future__ import annotations

import copy
import enum
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import numpy as np
import pytest
import yaml
from coreml_compress import config as cc
from coreml_compress.errors import ConfigError, CoreMLCompressError

OURS = SimpleNamespace(
    OptimizationConfig=cc.OptimizationConfig,
    OpPalettizerConfig=cc.OpPalettizerConfig,
    OpLinearQuantizerConfig=cc.OpLinearQuantizerConfig,
    OpActivationLinearQuantizerConfig=cc.OpActivationLinearQuantizerConfig,
    OpMagnitudePrunerConfig=cc.OpMagnitudePrunerConfig,
    OpThresholdPrunerConfig=cc.OpThresholdPrunerConfig,
    OpCompressorConfig=cc.OpCompressorConfig,
    CompressionGranularity=cc.CompressionGranularity,
)


@pytest.fixture(scope="module")
def ct() -> SimpleNamespace:
    cto = pytest.importorskip("coremltools.optimize.coreml")
    from coremltools.optimize.coreml import _config as ct_config
    from coremltools.optimize.coreml.experimental import OpActivationLinearQuantizerConfig

    return SimpleNamespace(
        OptimizationConfig=cto.OptimizationConfig,
        OpPalettizerConfig=cto.OpPalettizerConfig,
        OpLinearQuantizerConfig=cto.OpLinearQuantizerConfig,
        OpActivationLinearQuantizerConfig=OpActivationLinearQuantizerConfig,
        OpMagnitudePrunerConfig=cto.OpMagnitudePrunerConfig,
        OpThresholdPrunerConfig=cto.OpThresholdPrunerConfig,
        OpCompressorConfig=ct_config.OpCompressorConfig,
        CompressionGranularity=ct_config.CompressionGranularity,
    )


def _mil_types() -> Any:
    pytest.importorskip("coremltools")
    from coremltools.converters.mil.mil import types

    return types


# --------------------------------------------------------------------------------------
# Helpers: build a case on one side, normalize results and exceptions
# --------------------------------------------------------------------------------------


class G:
    """A granularity enum member, resolved against each side's own enum."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"G({self.name})"


class Mil:
    """A coremltools MIL dtype (the same object on both sides)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Mil({self.name})"


def _resolve_value(ns: SimpleNamespace, value: Any) -> Any:
    if isinstance(value, G):
        return ns.CompressionGranularity[value.name]
    if isinstance(value, Mil):
        return getattr(_mil_types(), value.name)
    if isinstance(value, dict):
        return {k: _resolve_value(ns, v) for k, v in value.items()}
    if isinstance(value, Builder):
        return value(ns)
    return value


class Builder:
    """``Builder("OpPalettizerConfig", nbits=4)(ns)`` builds that config on side ``ns``."""

    def __init__(self, cls_name: str, **kwargs: Any) -> None:
        self.cls_name = cls_name
        self.kwargs = kwargs

    def __call__(self, ns: SimpleNamespace) -> Any:
        kwargs = {k: _resolve_value(ns, v) for k, v in self.kwargs.items()}
        return getattr(ns, self.cls_name)(**kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.cls_name}({args})"


def B(cls_name: str, **kwargs: Any) -> Builder:
    return Builder(cls_name, **kwargs)


def _normalize(value: Any, field: str | None = None) -> Any:
    """A comparable form that ignores which library built ``value``."""
    if field == "dtype" and value is not None and not isinstance(value, str):
        return ("dtype", _mil_types().builtin_to_string(value))
    if field == "dtype":
        return ("dtype", value)
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__name__, value.name)
    if attrs.has(type(value)):
        fields = [
            (a.name, _normalize(getattr(value, a.name), a.name)) for a in attrs.fields(type(value))
        ]
        extra = []
        if type(value).__name__.endswith("LinearQuantizerConfig"):
            extra = [("nbits", value.nbits), ("signed", value.signed)]
        return (type(value).__name__, fields, extra)
    if isinstance(value, dict):
        return ("dict", [(k, _normalize(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_normalize(v) for v in value])
    if callable(value) and not isinstance(value, type):
        return ("callable", id(value))
    return (type(value).__name__, value)


def _message(exc: BaseException) -> str:
    # attrs' instance_of raises TypeError(msg, attribute, type, value); its str() embeds
    # reprs of attrs internals, so only the message proper is compared.
    if isinstance(exc, TypeError) and len(exc.args) == 4:
        return str(exc.args[0])
    return str(exc)


def _describe(exc: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {
        "type": type(exc),
        "message": _message(exc),
        "notes": [str(n) for n in getattr(exc, "__notes__", [])],
    }
    subs = getattr(exc, "exceptions", None)
    if subs is not None:
        described["subs"] = [_describe(s) for s in subs]
    return described


def _outcome(build: Callable[[SimpleNamespace], Any], ns: SimpleNamespace) -> tuple[str, Any]:
    try:
        result = build(ns)
    except Exception as exc:  # noqa: BLE001 - the exception is the result under test
        return ("error", _describe(exc))
    return ("ok", _normalize(result))


# Where coremltools fails by accident (AttributeError: 'str' object has no attribute 'keys'),
# ours is a ConfigTypeError saying that a mapping was expected.
_ACCIDENTAL = ("object has no attribute 'keys'", "object has no attribute 'get'")


def _assert_same(build: Callable[[SimpleNamespace], Any], ct: SimpleNamespace) -> tuple[str, Any]:
    theirs = _outcome(build, ct)
    ours = _outcome(build, OURS)
    if ours[0] == theirs[0] == "error" and issubclass(ours[1]["type"], ConfigError):
        ours_d, theirs_d = dict(ours[1]), dict(theirs[1])
        if not any(a in theirs_d["message"] for a in _ACCIDENTAL):
            assert issubclass(ours_d["type"], theirs_d["type"]), (ours_d, theirs_d)
        assert issubclass(ours_d["type"], CoreMLCompressError)
        assert ours_d.pop("message") and ours_d.pop("type")
        theirs_d.pop("message"), theirs_d.pop("type")
        assert ours_d == theirs_d
        return theirs
    assert ours == theirs
    if theirs[0] == "ok":
        # Reprs match too, except where a MIL dtype object is printed.
        ct_repr, our_repr = repr(build(ct)), repr(build(OURS))
        if "dtype=" not in ct_repr:
            assert our_repr == ct_repr
    return theirs


def _lut(weight: np.ndarray) -> tuple[list[float], list[int]]:
    return [0.0, 1.0], [0] * weight.size


# --------------------------------------------------------------------------------------
# Op config parity table
# --------------------------------------------------------------------------------------

P, L, M, T = (
    "OpPalettizerConfig",
    "OpLinearQuantizerConfig",
    "OpMagnitudePrunerConfig",
    "OpThresholdPrunerConfig",
)

OP_CASES: list[Builder] = [
    # --- palettizer
    B(P),
    B(P, nbits=4),
    B(P, mode="KMeans", nbits=2),
    B(P, mode="uniform", nbits=8),
    B(P, mode="UNIFORM"),
    B(P, mode="unique"),
    B(P, mode="unique", nbits=4),
    B(P, mode="custom"),
    B(P, mode="custom", nbits=4, lut_function=_lut),
    B(P, mode="custom", lut_function=_lut),
    B(P, mode="Custom", lut_function=_lut, granularity="per_grouped_channel"),
    B(P, mode="kmeans", nbits=4, lut_function=_lut),
    B(P, mode="custom", lut_function=5),
    B(P, mode="bogus", nbits=4),
    B(P, mode=1, nbits=4),
    B(P, mode=None),
    B(P, nbits=7),
    B(P, nbits=0),
    B(P, nbits=16),
    B(P, nbits=4.0),
    B(P, nbits="4"),
    B(P, nbits=True),
    *[B(P, nbits=n) for n in (1, 2, 3, 6, 8)],
    B(P, nbits=4, granularity="per_grouped_channel", group_size=16, channel_axis=1),
    B(P, nbits=4, granularity="per_channel"),
    B(P, nbits=4, granularity="per_block"),
    B(P, nbits=4, granularity="PER_TENSOR"),
    B(P, nbits=4, granularity=3),
    B(P, nbits=4, granularity=None),
    B(P, nbits=4, granularity=G("PER_GROUPED_CHANNEL")),
    B(P, nbits=4, granularity=G("PER_CHANNEL")),
    B(P, mode="bogus", granularity="bogus"),
    B(P, nbits=4, group_size=0),
    B(P, nbits=4, group_size="x"),
    B(P, nbits=4, channel_axis=-1),
    B(P, nbits=4, cluster_dim=4),
    B(P, nbits=4, cluster_dim=2.0),
    B(P, nbits=4, enable_per_channel_scale=True),
    B(P, nbits=4, enable_per_channel_scale=1),
    B(P, nbits=4, num_kmeans_workers=4),
    B(P, nbits=4, num_kmeans_workers=None),
    B(P, nbits=4, weight_threshold=None),
    B(P, nbits=4, weight_threshold=0),
    B(P, nbits=4, weight_threshold=-1),
    B(P, nbits=4, weight_threshold=1.5),
    B(P, nbits=4, weight_threshold="10"),
    # --- linear quantizer
    B(L),
    B(L, mode="linear"),
    B(L, mode="LINEAR"),
    B(L, mode="Linear_Symmetric"),
    B(L, mode="affine"),
    B(L, mode=3),
    *[B(L, dtype=d) for d in ("int4", "uint4", "int8", "uint8")],
    *[B(L, dtype=d) for d in ("int2", "int32", "uint1", "fp16", "bool", "string", "INT8", "")],
    *[B(L, dtype=d) for d in (np.int8, np.uint8, np.int16, np.int32, np.uint64)],
    *[B(L, dtype=d) for d in (np.float16, np.float32, np.bool_, np.generic)],
    *[B(L, dtype=d) for d in (int, float, bool, object, None, 8, 8.0)],
    *[B(L, dtype=d) for d in (np.dtype("int8"), np.dtype("uint8"), np.dtype(">i4"))],
    B(L, dtype=np.dtype("float32")),
    B(L, dtype=np.longlong),
    *[B(L, dtype=Mil(n)) for n in ("int4", "uint4", "int8", "uint8", "int32", "fp16", "bool")],
    B(L, granularity="per_tensor"),
    B(L, granularity="per_channel"),
    B(L, granularity="per_block"),
    B(L, granularity="per_grouped_channel"),
    B(L, granularity="bogus"),
    B(L, granularity=G("PER_BLOCK")),
    B(L, granularity="per_block", block_size=0),
    B(L, granularity="per_block", block_size=1),
    B(L, granularity="per_block", block_size=-1),
    B(L, granularity="per_block", block_size=[1, 2]),
    B(L, granularity="per_block", block_size=(0, 4, 1, 1)),
    B(L, granularity="per_block", block_size=[1, -2]),
    B(L, granularity="per_block", block_size=[1, 2.0]),
    B(L, granularity="per_block", block_size="a"),
    B(L, granularity="per_block", block_size=3.0),
    B(L, block_size=None),
    B(L, block_size=True),
    B(L, dtype="uint4", mode="linear", granularity="per_block", block_size=16),
    B(L, mode="affine", dtype="int2"),
    B(L, mode="affine", granularity="bogus"),
    B(L, weight_threshold=None),
    B(L, weight_threshold=-3),
    B(L, weight_threshold=100.0),
    B("OpActivationLinearQuantizerConfig", dtype="uint8", mode="linear"),
    # --- magnitude pruner
    B(M),
    B(M, target_sparsity=0.5),
    B(M, target_sparsity=0.0),
    B(M, target_sparsity=1.0),
    B(M, target_sparsity=1),
    B(M, target_sparsity=1.2),
    B(M, target_sparsity=-0.1),
    B(M, target_sparsity=np.float64(0.25)),
    B(M, target_sparsity="0.5"),
    B(M, n_m_ratio=(1, 2)),
    B(M, n_m_ratio=[3, 4]),
    B(M, n_m_ratio=(2, 2)),
    B(M, n_m_ratio=(2, 1)),
    B(M, n_m_ratio=(1, 2, 3)),
    B(M, n_m_ratio=(1,)),
    B(M, n_m_ratio="ab"),
    B(M, target_sparsity=0.5, n_m_ratio=(1, 2)),
    B(M, target_sparsity=0.5, block_size=2),
    B(M, target_sparsity=0.5, block_size=4, dim=1),
    B(M, target_sparsity=0.5, block_size=1),
    B(M, target_sparsity=0.5, block_size=0),
    B(M, target_sparsity=0.5, block_size=2.0),
    B(M, n_m_ratio=(1, 2), block_size=2),
    B(M, target_sparsity=0.5, dim=1),
    B(M, target_sparsity=0.5, block_size=2, dim=2),
    B(M, n_m_ratio=(1, 2), dim=0),
    B(M, n_m_ratio=(1, 2), dim=-1),
    B(M, n_m_ratio=(1, 2), dim=1.0),
    B(M, target_sparsity=0.5, weight_threshold=None),
    B(M, target_sparsity=0.5, weight_threshold=-1),
    B(M, target_sparsity=2.0, weight_threshold=-1),
    # --- threshold pruner
    B(T),
    B(T, threshold=0.1),
    B(T, threshold=0.0),
    B(T, threshold=1),
    B(T, threshold=-1.0),
    B(T, threshold=None),
    B(T, minimum_sparsity_percentile=0.0),
    B(T, minimum_sparsity_percentile=1.0),
    B(T, minimum_sparsity_percentile=1.5),
    B(T, minimum_sparsity_percentile=-0.5),
    B(T, minimum_sparsity_percentile=1),
    B(T, threshold=-1.0, minimum_sparsity_percentile=2.0),
    B(T, weight_threshold=-5),
    B(T, weight_threshold=None),
]


@pytest.mark.parametrize("build", OP_CASES, ids=repr)
def test_op_config_parity(build: Builder, ct: SimpleNamespace) -> None:
    _assert_same(build, ct)


def test_parity_table_covers_errors_and_successes(ct: SimpleNamespace) -> None:
    kinds = [_outcome(build, ct)[0] for build in OP_CASES]
    assert kinds.count("ok") >= 40
    assert kinds.count("error") >= 60


# --------------------------------------------------------------------------------------
# Mutation after construction (attrs validates and converts on assignment)
# --------------------------------------------------------------------------------------


def _assign(build: Builder, **updates: Any) -> Callable[[SimpleNamespace], Any]:
    def run(ns: SimpleNamespace) -> Any:
        obj = build(ns)
        for key, value in updates.items():
            setattr(obj, key, _resolve_value(ns, value))
        return obj

    run.__name__ = f"{build!r}.set({updates})"
    return run


ASSIGN_CASES = [
    _assign(B(P, nbits=4), nbits=5),
    _assign(B(P, nbits=4), nbits=2),
    _assign(B(P, nbits=4), mode="bogus"),
    _assign(B(P, nbits=4), mode="uniform"),
    _assign(B(P, nbits=4), granularity="per_grouped_channel"),
    _assign(B(P, nbits=4), granularity="per_block"),
    _assign(B(P, nbits=4), cluster_dim="2"),
    _assign(B(P, nbits=4), weight_threshold=-2),
    _assign(B(L), mode="linear"),
    _assign(B(L), granularity="per_block", block_size=[1, 8]),
    _assign(B(L), block_size=-1),
    _assign(B(L), dtype="int2"),
    _assign(B(M, target_sparsity=0.5), target_sparsity=1.5),
    _assign(B(M, target_sparsity=0.5), dim=1),
    _assign(B(T), threshold=-0.5),
    _assign(B(T), minimum_sparsity_percentile=0.75),
]


@pytest.mark.parametrize("build", ASSIGN_CASES, ids=lambda f: f.__name__)
def test_assignment_parity(build: Callable[[SimpleNamespace], Any], ct: SimpleNamespace) -> None:
    _assert_same(build, ct)


def test_assignment_converts_and_validates() -> None:
    cfg = cc.OpPalettizerConfig(nbits=4)
    cfg.granularity = "per_grouped_channel"
    assert cfg.granularity is cc.CompressionGranularity.PER_GROUPED_CHANNEL
    with pytest.raises(ValueError, match=r'Invalid value of "nbits" \(5\)'):
        cfg.nbits = 5
    q = cc.OpLinearQuantizerConfig()
    q.dtype = np.uint8
    assert (q.dtype, q.nbits, q.signed) == ("uint8", 8, False)


# --------------------------------------------------------------------------------------
# OptimizationConfig parity
# --------------------------------------------------------------------------------------


def _method_calls(
    build: Builder | None, *calls: tuple[str, tuple[Any, ...]]
) -> Callable[[SimpleNamespace], Any]:
    def run(ns: SimpleNamespace) -> Any:
        cfg = build(ns) if build is not None else ns.OptimizationConfig()
        for method, args in calls:
            getattr(cfg, method)(*[_resolve_value(ns, a) for a in args])
        return cfg

    run.__name__ = f"{build!r}." + ".".join(f"{m}{a!r}" for m, a in calls)
    return run


OC = "OptimizationConfig"
PAL4 = B(P, nbits=4)
NM12 = B(M, n_m_ratio=(1, 2))

OPT_CASES: list[Callable[[SimpleNamespace], Any]] = [
    B(OC),
    B(OC, global_config=PAL4),
    B(OC, global_config=None, op_type_configs=None, op_name_configs=None),
    B(
        OC,
        global_config=PAL4,
        op_type_configs={"conv": B(P, nbits=2), "linear": None},
        op_name_configs={"conv_1": B(P, mode="unique"), "skip": None},
    ),
    B(
        OC,
        global_config=B(T),
        op_type_configs={"conv": NM12, "linear": B(M, target_sparsity=0.5, block_size=2)},
    ),
    B(OC, op_type_configs={"add": B(M, target_sparsity=0.5)}),
    B(OC, op_type_configs={"add": NM12}),
    B(OC, op_type_configs={"matmul": B(M, target_sparsity=0.5, block_size=2)}),
    B(OC, op_name_configs={"add": NM12}),
    B(OC, global_config=5),
    B(OC, global_config="kmeans"),
    B(OC, op_type_configs={"conv": 3}),
    B(OC, op_type_configs={"conv": 3, "add": NM12}),
    B(OC, op_name_configs={"a": "x"}),
    B(OC, op_type_configs=[1]),
    B(OC, op_selector=len),
    B(OC, is_deprecated=True, op_selector=len),
    B(OC, is_deprecated=1),
    _method_calls(None, ("set_global", (PAL4,))),
    _method_calls(None, ("set_global", (None,))),
    _method_calls(None, ("set_global", ("x",))),
    _method_calls(None, ("set_op_type", ("conv", PAL4)), ("set_op_type", ("linear", None))),
    _method_calls(None, ("set_op_type", ("add", NM12))),
    _method_calls(None, ("set_op_type", ("conv", NM12))),
    _method_calls(None, ("set_op_type", ("conv", 7))),
    _method_calls(None, ("set_op_name", ("conv_1", PAL4)), ("set_op_name", ("x", None))),
    _method_calls(None, ("set_op_name", ("add_1", NM12))),
    _method_calls(None, ("set_op_name", ("n", 3))),
    _method_calls(B(OC, is_deprecated=True, op_selector=len), ("set_op_type", ("conv", PAL4))),
    _method_calls(B(OC, is_deprecated=True, op_selector=len), ("set_op_name", ("c", PAL4))),
    _method_calls(B(OC, is_deprecated=True), ("set_global", (B(T),))),
    _assign(B(OC), global_config=PAL4),
    _assign(B(OC), global_config=3),
    _assign(B(OC), op_type_configs={"add": NM12}),
]


@pytest.mark.parametrize(
    "build",
    OPT_CASES,
    ids=lambda b: b.__name__ if callable(b) and not isinstance(b, Builder) else repr(b),
)
def test_optimization_config_parity(
    build: Callable[[SimpleNamespace], Any], ct: SimpleNamespace
) -> None:
    _assert_same(build, ct)


# --------------------------------------------------------------------------------------
# _from_dict / from_dict / from_yaml parity
# --------------------------------------------------------------------------------------

OP_DICT_CASES: list[tuple[str, Any]] = [
    (P, {"nbits": 4}),
    (P, {"nbits": 4, "granularity": "per_grouped_channel", "group_size": 8, "channel_axis": 1}),
    (P, {"nbits": "4"}),
    (P, {"nbits": 4.7}),
    (P, {"nbits": None}),
    (P, {"nbits": 7}),
    (P, {"nbits": "abc"}),
    (P, {"nbits": 4, "mode": 1}),
    (P, {"mode": None, "nbits": 4}),
    (P, {"nbits": 4, "foo": 1}),
    (P, {"nbits": 4, "foo": 1, "bar": 2}),
    (P, {"invalid": 2}),
    (P, {"nbits": "abc", "group_size": None, "foo": 1}),
    (P, {"nbits": 4, "enable_per_channel_scale": "false", "cluster_dim": 2.9}),
    (P, {"nbits": 4, "group_size": "x"}),
    (P, {"nbits": 4, "granularity": 3}),
    (P, {"nbits": 4, "granularity": [1]}),
    (P, {"nbits": 4, "weight_threshold": None}),
    (P, {"nbits": 4, "weight_threshold": "12"}),
    (P, {"nbits": 4, "num_kmeans_workers": "2", "channel_axis": "0"}),
    (P, {"mode": "custom", "lut_function": _lut}),
    (P, {"mode": "unique"}),
    (P, {}),
    (P, "abc"),
    (P, [("nbits", 4)]),
    (L, {}),
    (L, {"dtype": "int4", "granularity": "per_block", "block_size": [1, 2]}),
    (L, {"dtype": "int4", "granularity": "per_block", "block_size": (1, 2)}),
    (L, {"dtype": np.int8}),
    (L, {"dtype": np.uint8, "mode": "linear"}),
    (L, {"dtype": Mil("uint4")}),
    (L, {"dtype": "int2"}),
    (L, {"dtype": "fp16"}),
    (L, {"dtype": 8}),
    (L, {"dtype": None}),
    (L, {"block_size": "3"}),
    (L, {"block_size": 3.5}),
    (L, {"block_size": None}),
    (L, {"block_size": True}),
    (L, {"block_size": [1, "2"]}),
    (L, {"mode": "linear", "granularity": "per_tensor", "weight_threshold": "5"}),
    (L, {"granularity": "per_grouped_channel"}),
    (L, {"invalid": 2}),
    (M, {"target_sparsity": 1}),
    (M, {"target_sparsity": "0.5"}),
    (M, {"target_sparsity": "half"}),
    (M, {"n_m_ratio": [1, 2]}),
    (M, {"n_m_ratio": "12"}),
    (M, {"n_m_ratio": (1, 2), "dim": "1"}),
    (M, {"n_m_ratio": [1, 2, 3]}),
    (M, {"n_m_ratio": [1]}),
    (M, {"n_m_ratio": []}),
    (M, {"n_m_ratio": ["a", 2]}),
    (M, {"n_m_ratio": ["a", "b", "c"]}),
    (M, {"n_m_ratio": 5}),
    (M, {"n_m_ratio": [2.5, 3]}),
    (M, {"n_m_ratio": [3, 2]}),
    (M, {"target_sparsity": None, "n_m_ratio": None}),
    (M, {"target_sparsity": 0.5, "block_size": "4", "dim": 1}),
    (M, {"target_sparsity": 0.5, "block_size": 1}),
    (M, {"invalid": 2}),
    (T, {}),
    (T, {"threshold": 1}),
    (T, {"threshold": "0.1", "minimum_sparsity_percentile": 1}),
    (T, {"threshold": None}),
    (T, {"threshold": True}),
    (T, {"threshold": -1}),
    (T, {"minimum_sparsity_percentile": "x", "weight_threshold": "y", "z": 0}),
    (T, {"invalid": 2}),
]


@pytest.mark.parametrize("cls_name, data", OP_DICT_CASES, ids=repr)
def test_op_from_dict_parity(cls_name: str, data: Any, ct: SimpleNamespace) -> None:
    def build(ns: SimpleNamespace) -> Any:
        payload = _resolve_value(ns, copy.deepcopy(data)) if isinstance(data, dict) else data
        return getattr(ns, cls_name)._from_dict(payload)

    _assert_same(build, ct)


def test_unknown_keys_rejected() -> None:
    for cls in (
        cc.OpPalettizerConfig,
        cc.OpLinearQuantizerConfig,
        cc.OpMagnitudePrunerConfig,
        cc.OpThresholdPrunerConfig,
    ):
        with pytest.raises(cc.ClassValidationError) as info:
            cls._from_dict({"invalid": 2})
        (sub,) = info.value.exceptions
        assert isinstance(sub, cc.ForbiddenExtraKeysError)
        assert str(sub) == f"Extra fields in constructor for {cls.__name__}: invalid"
    with pytest.raises(ValueError, match="unknown key 'bobby_joe' for OptimizationConfig"):
        cc.OptimizationConfig.from_dict({"config_type": P, "bobby_joe": 56})


DICT_CASES: list[Any] = [
    {"config_type": P, "global_config": {"nbits": 4, "granularity": "per_grouped_channel"}},
    {
        "config_type": P,
        "global_config": {"mode": "kmeans", "nbits": 1, "weight_threshold": 2},
        "op_type_configs": {"linear": {"mode": "uniform", "nbits": 6, "weight_threshold": None}},
        "op_name_configs": {"op_1": {"config_type": P, "mode": "unique"}},
    },
    {
        "config_type": T,
        "global_config": {"config_type": M, "target_sparsity": 0.3},
        "op_type_configs": {
            "linear": {"config_type": M, "n_m_ratio": [4, 5], "dim": 0, "weight_threshold": 2},
            "conv": {
                "threshold": 0.01,
                "minimum_sparsity_percentile": 0.01,
                "weight_threshold": 45,
            },
        },
        "op_name_configs": {
            "op_1": {"threshold": 0.1, "minimum_sparsity_percentile": 0.1, "weight_threshold": 1},
            "op_2": {"config_type": M, "target_sparsity": 0.5, "block_size": 100},
        },
    },
    {
        "config_type": L,
        "global_config": {"mode": "linear", "dtype": "int8", "weight_threshold": None},
        "op_type_configs": {"linear": {"mode": "linear_symmetric", "dtype": "uint8"}},
        "op_name_configs": {
            "op_1": {"dtype": "int4", "granularity": "per_block", "block_size": [1, 32]}
        },
    },
    {
        "config_type": L,
        "global_config": None,
        "op_type_configs": {"conv": None},
        "op_name_configs": {"op_1": None},
    },
    {"config_type": L},
    {"config_type": L, "op_type_configs": None, "op_name_configs": None},
    {"config_type": "np"},
    {"bobby_joe": 56},
    {"global_config": None},
    {"config_type": 5},
    {"config_type": L, "op_type_configs": 123},
    {"config_type": L, "op_name_configs": "eric"},
    {"config_type": P, "op_type_configs": [1]},
    {"config_type": P, "global_config": {}},
    {"config_type": P, "global_config": 5},
    {"config_type": P, "global_config": False},
    {"config_type": P, "global_config": "abc"},
    {"config_type": P, "global_config": []},
    {"config_type": P, "global_config": {"nbits": 4, "bogus": 1}},
    {"config_type": P, "global_config": {"config_type": 5}},
    {"config_type": P, "global_config": {"config_type": T}},
    {"config_type": P, "op_type_configs": {"conv": 5}},
    {"config_type": P, "op_type_configs": {"conv": []}},
    {"config_type": P, "op_type_configs": {"conv": {"nbits": 4}}, "op_name_configs": {}},
    {"config_type": M, "op_type_configs": {"add": {"n_m_ratio": [1, 2]}}},
    {"config_type": M, "op_name_configs": {"add": {"n_m_ratio": [1, 2]}, "x": None}},
    {"config_type": "OptimizationConfig", "global_config": {}},
    {"config_type": "OpCompressorConfig", "global_config": {}},
    [],
    None,
]


@pytest.mark.parametrize("data", DICT_CASES, ids=repr)
def test_from_dict_parity(data: Any, ct: SimpleNamespace) -> None:
    # coremltools deletes nested "config_type" keys from its input, so each side gets a copy.
    _assert_same(lambda ns: ns.OptimizationConfig.from_dict(copy.deepcopy(data)), ct)


def test_from_dict_unknown_config_type(ct: SimpleNamespace) -> None:
    data = {"config_type": "Foo", "global_config": {}}
    with pytest.raises(AttributeError, match="has no attribute 'Foo'"):
        ct.OptimizationConfig.from_dict(copy.deepcopy(data))
    with pytest.raises(AttributeError, match="unknown config_type 'Foo'; expected one of Op"):
        cc.OptimizationConfig.from_dict(copy.deepcopy(data))


# --------------------------------------------------------------------------------------
# Mistakes in dicts and YAML: ConfigErrors that say where and why, caught as coremltools' types
# --------------------------------------------------------------------------------------


def _config_error(build: Callable[[], Any], *coremltools_types: type) -> str:
    with pytest.raises(ConfigError) as info:
        build()
    assert isinstance(info.value, CoreMLCompressError)
    for t in coremltools_types:
        assert isinstance(info.value, t), (type(info.value).__mro__, t)
    return str(info.value)


def test_misspelled_key_names_the_level_and_suggests() -> None:
    cattrs_errors = pytest.importorskip("cattrs.errors")
    data = {
        "config_type": "OptimizationConfig",
        "op_type_configs": {"linear": {"config_type": M, "target_sparsty": 0.5}},
    }
    message = _config_error(
        lambda: cc.OptimizationConfig.from_dict(data), cattrs_errors.ClassValidationError
    )
    assert message == (
        "op_type_configs: linear: unknown key 'target_sparsty' for OpMagnitudePrunerConfig; "
        "did you mean 'target_sparsity'?"
    )
    message = _config_error(
        lambda: cc.OptimizationConfig.from_dict({"config_type": P, "global_confg": {}}), ValueError
    )
    assert message.endswith("did you mean 'global_config'?")


def test_misspelled_config_type_suggests_the_class() -> None:
    data = {"config_type": "OpMagnitudPrunerConfig", "global_config": {"target_sparsity": 0.5}}
    message = _config_error(
        lambda: cc.OptimizationConfig.from_dict(data), AttributeError, ValueError
    )
    assert message == (
        "global_config: unknown config_type 'OpMagnitudPrunerConfig'; did you mean 'OpMagnitudePrunerConfig'?"
    )


def test_invalid_value_gives_the_real_reason() -> None:
    data = {"config_type": P, "global_config": {"nbits": 5}}
    message = _config_error(lambda: cc.OptimizationConfig.from_dict(data), cc.ClassValidationError)
    assert message.startswith("global_config: ") and '"nbits"' in message and "5" in message
    assert "sub-exception" not in message
    message = _config_error(
        lambda: cc.OptimizationConfig.from_dict(
            {"config_type": P, "op_name_configs": {"w": {"nbits": "x"}}}
        )
    )
    assert message == "op_name_configs: w: nbits: invalid literal for int() with base 10: 'x'"
    message = _config_error(
        lambda: cc.OptimizationConfig.from_dict({"config_type": P, "global_config": 5}), TypeError
    )
    assert message == "global_config: expected a mapping of OpPalettizerConfig fields, got int"


def test_yaml_mistakes_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "config_type: OpPalettizerConfig\nglobal_config:\n  nbits: [4\n  mode: kmeans\n"
    )
    message = _config_error(lambda: cc.OptimizationConfig.from_yaml(path))
    assert message.startswith(f"{path}:4: invalid YAML: ") and "\n" not in message
    path.write_text("config_type: OpPalettizerConfig\nglobal_config: {nbitz: 4}\n")
    message = _config_error(lambda: cc.OptimizationConfig.from_yaml(str(path)))
    assert message == (
        f"{path}: global_config: unknown key 'nbitz' for OpPalettizerConfig; did you mean 'nbits'?"
    )
    missing = tmp_path / "missing.yaml"
    message = _config_error(lambda: cc.OptimizationConfig.from_yaml(missing), OSError)
    assert str(missing) in message


def test_from_dict_does_not_modify_input() -> None:
    data = {"config_type": T, "global_config": {"config_type": M, "target_sparsity": 0.3}}
    snapshot = copy.deepcopy(data)
    cc.OptimizationConfig.from_dict(data)
    assert data == snapshot


def _yaml_dicts() -> list[Any]:
    return [d for d in DICT_CASES if isinstance(d, dict)]


@pytest.mark.parametrize("data", _yaml_dicts(), ids=repr)
@pytest.mark.parametrize("as_path", [True, False])
def test_from_yaml_parity(data: Any, as_path: bool, ct: SimpleNamespace, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))

    def build(ns: SimpleNamespace) -> Any:
        if as_path:
            return ns.OptimizationConfig.from_yaml(str(path))
        with open(path) as stream:
            return ns.OptimizationConfig.from_yaml(stream)

    _assert_same(build, ct)


# --------------------------------------------------------------------------------------
# Round trips without coremltools: dict / YAML forms equal directly built configs
# --------------------------------------------------------------------------------------

ROUND_TRIPS: list[tuple[dict[str, Any], cc.OptimizationConfig]] = [
    (
        {
            "config_type": P,
            "global_config": {"mode": "kmeans", "nbits": 4},
            "op_type_configs": {"conv": {"mode": "uniform", "nbits": 1}, "linear": None},
            "op_name_configs": {"conv_1": {"mode": "unique"}},
        },
        cc.OptimizationConfig(
            global_config=cc.OpPalettizerConfig(mode="kmeans", nbits=4),
            op_type_configs={
                "conv": cc.OpPalettizerConfig(mode="uniform", nbits=1),
                "linear": None,
            },
            op_name_configs={"conv_1": cc.OpPalettizerConfig(mode="unique")},
        ),
    ),
    (
        {
            "config_type": T,
            "global_config": {"threshold": 0.01},
            "op_type_configs": {"conv": {"config_type": M, "n_m_ratio": [3, 4]}},
        },
        cc.OptimizationConfig(
            global_config=cc.OpThresholdPrunerConfig(threshold=0.01),
            op_type_configs={"conv": cc.OpMagnitudePrunerConfig(n_m_ratio=(3, 4))},
        ),
    ),
    (
        {
            "config_type": L,
            "global_config": {
                "mode": "linear",
                "dtype": "uint4",
                "granularity": "per_block",
                "block_size": 16,
            },
            "op_name_configs": {
                "w": {"dtype": "int8", "granularity": "per_tensor", "weight_threshold": None}
            },
        },
        cc.OptimizationConfig(
            global_config=cc.OpLinearQuantizerConfig(
                mode="linear", dtype="uint4", granularity="per_block", block_size=16
            ),
            op_name_configs={
                "w": cc.OpLinearQuantizerConfig(
                    dtype=np.int8, granularity="per_tensor", weight_threshold=None
                )
            },
        ),
    ),
    (
        {"config_type": M, "global_config": {"target_sparsity": 0.75, "block_size": 2, "dim": 1}},
        cc.OptimizationConfig(
            global_config=cc.OpMagnitudePrunerConfig(target_sparsity=0.75, block_size=2, dim=1)
        ),
    ),
]


@pytest.mark.parametrize("data, expected", ROUND_TRIPS, ids=lambda v: repr(v)[:60])
def test_round_trip_dict_and_yaml(
    data: dict[str, Any], expected: cc.OptimizationConfig, tmp_path: Path
) -> None:
    assert cc.OptimizationConfig.from_dict(copy.deepcopy(data)) == expected
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cc.OptimizationConfig.from_yaml(str(path)) == expected
    assert cc.OptimizationConfig.from_yaml(path) == expected  # os.PathLike too
    assert cc.OptimizationConfig.from_yaml(io.StringIO(yaml.safe_dump(data))) == expected
    assert cc.as_config(data) == expected
    assert cc.as_config(str(path)) == expected
    # A config that differs in one field is not equal.
    assert (
        cc.OptimizationConfig.from_dict({**copy.deepcopy(data), "op_name_configs": {"zz": None}})
        != expected
    )


def test_from_dict_tuple_vs_list_follows_attrs_equality() -> None:
    # cattrs turns n_m_ratio into a tuple; a list built directly is a different value.
    loaded = cc.OptimizationConfig.from_dict(
        {"config_type": M, "global_config": {"n_m_ratio": [1, 2]}}
    )
    assert loaded.global_config.n_m_ratio == (1, 2)
    assert loaded.global_config != cc.OpMagnitudePrunerConfig(n_m_ratio=[1, 2])
    assert loaded.global_config == cc.OpMagnitudePrunerConfig(n_m_ratio=(1, 2))


def test_palettizer_from_dict_rejects_lut_function() -> None:
    with pytest.raises(ValueError, match="_from_dict method does not support lut_function"):
        cc.OpPalettizerConfig._from_dict({"mode": "custom", "lut_function": _lut})


# --------------------------------------------------------------------------------------
# Equality semantics
# --------------------------------------------------------------------------------------

EQ_PAIRS: list[tuple[Builder, Builder]] = [
    (B(P, nbits=4), B(P, nbits=4)),
    (B(P, nbits=4), B(P, nbits=4.0)),
    (B(P, nbits=4), B(P, nbits=2)),
    (B(P, nbits=4), B(P, mode="KMEANS", nbits=4)),
    (B(P, nbits=4), B(P, nbits=4, granularity=G("PER_TENSOR"))),
    (B(P, mode="custom", lut_function=_lut), B(P, mode="custom", lut_function=_lut)),
    (B(P, mode="custom", lut_function=_lut), B(P, mode="custom", lut_function=lambda w: _lut(w))),
    (B(L, dtype="int8"), B(L, dtype=np.int8)),
    (B(L, dtype="int8"), B(L)),
    (B(L, dtype="int8"), B(L, dtype="uint8")),
    (B(L, block_size=[1, 2]), B(L, block_size=(1, 2))),
    (B(L), B("OpActivationLinearQuantizerConfig")),
    (B(M, n_m_ratio=(1, 2)), B(M, n_m_ratio=(1, 2), dim=1)),
    (B(M, target_sparsity=0.5), B(T)),
    (B(T), B(T, threshold=1e-12)),
    (B(OC, global_config=PAL4), B(OC, global_config=PAL4)),
    (B(OC, global_config=PAL4), B(OC, global_config=PAL4, op_type_configs={"conv": None})),
]


@pytest.mark.parametrize("pair", EQ_PAIRS, ids=repr)
def test_equality_parity(pair: tuple[Builder, Builder], ct: SimpleNamespace) -> None:
    a, b = pair
    assert (a(OURS) == b(OURS)) == (a(ct) == b(ct))
    assert (a(OURS) != b(OURS)) == (a(ct) != b(ct))


def test_configs_are_unhashable_like_attrs(ct: SimpleNamespace) -> None:
    for build in (B(P, nbits=4), B(L), B(T), B(M, target_sparsity=0.1), B(OC)):
        with pytest.raises(TypeError):
            hash(build(ct))
        with pytest.raises(TypeError):
            hash(build(OURS))


def test_ours_and_coremltools_are_not_equal(ct: SimpleNamespace) -> None:
    assert OURS.OpPalettizerConfig(nbits=4) != ct.OpPalettizerConfig(nbits=4)


def test_field_names_and_defaults_match(ct: SimpleNamespace) -> None:
    for name in (P, L, M, T, OC, "OpActivationLinearQuantizerConfig"):
        ours = attrs.fields(getattr(OURS, name))
        theirs = attrs.fields(getattr(ct, name))
        assert [(f.name, f.alias) for f in ours] == [(f.name, f.alias) for f in theirs]
        for o, t in zip(ours, theirs):
            if o.name not in ("dtype", "granularity"):
                assert o.default == t.default, (name, o.name)
    assert [m.name for m in cc.CompressionGranularity] == [
        m.name for m in ct.CompressionGranularity
    ]
    assert [m.value for m in cc.CompressionGranularity] == [
        m.value for m in ct.CompressionGranularity
    ]


# --------------------------------------------------------------------------------------
# Conversion from coremltools objects
# --------------------------------------------------------------------------------------


def _successful(builds: list[Any], ct: SimpleNamespace) -> list[Any]:
    return [b for b in builds if _outcome(b, ct)[0] == "ok"]


@pytest.mark.parametrize(
    "build", OP_CASES + OPT_CASES, ids=lambda b: repr(b) if isinstance(b, Builder) else b.__name__
)
def test_from_coremltools_round_trips_every_field(build: Any, ct: SimpleNamespace) -> None:
    if _outcome(build, ct)[0] != "ok":
        pytest.skip("invalid config")
    theirs = build(ct)
    ours = cc.from_coremltools(theirs)
    assert type(ours).__name__ == type(theirs).__name__
    assert type(ours).__module__ == cc.__name__
    assert _normalize(ours) == _normalize(theirs)
    assert ours == build(OURS)
    assert cc.from_coremltools(ours) is ours


def test_from_coremltools_keeps_lut_function_and_deprecated_fields(ct: SimpleNamespace) -> None:
    theirs = ct.OpPalettizerConfig(
        mode="custom", lut_function=_lut, granularity="per_grouped_channel"
    )
    ours = cc.from_coremltools(theirs)
    assert ours.lut_function is _lut
    assert ours.granularity is cc.CompressionGranularity.PER_GROUPED_CHANNEL

    def selector(op: Any) -> bool:
        return True

    deprecated = ct.OptimizationConfig(
        global_config=theirs, is_deprecated=True, op_selector=selector
    )
    converted = cc.from_coremltools(deprecated)
    assert converted._is_deprecated is True
    assert converted._op_selector is selector
    assert converted.global_config.lut_function is _lut


def test_from_coremltools_mutated_dicts_and_none_values(ct: SimpleNamespace) -> None:
    theirs = ct.OptimizationConfig()
    theirs.set_op_type(
        "conv",
        ct.OpLinearQuantizerConfig(dtype="uint4", granularity="per_block", block_size=[1, 4]),
    )
    theirs.set_op_type("linear", None)
    theirs.set_op_name("w", None)
    ours = cc.from_coremltools(theirs)
    assert ours.global_config is None
    assert ours.op_type_configs["linear"] is None and "linear" in ours.op_type_configs
    assert ours.op_name_configs == {"w": None}
    assert ours.op_type_configs["conv"] == cc.OpLinearQuantizerConfig(
        dtype="uint4", granularity="per_block", block_size=[1, 4]
    )


def test_from_coremltools_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="Expected a coremltools compression config"):
        cc.from_coremltools(object())
    with pytest.raises(TypeError):
        cc.from_coremltools({"config_type": P})


def test_coremltools_objects_accepted_in_our_optimization_config(ct: SimpleNamespace) -> None:
    cfg = cc.OptimizationConfig(
        global_config=ct.OpPalettizerConfig(nbits=4),
        op_type_configs={"conv": ct.OpPalettizerConfig(nbits=2), "linear": None},
    )
    assert cfg.global_config == cc.OpPalettizerConfig(nbits=4)
    assert cfg.op_type_configs == {"conv": cc.OpPalettizerConfig(nbits=2), "linear": None}
    cfg.set_op_name("w", ct.OpPalettizerConfig(mode="unique"))
    assert cfg.op_name_configs["w"] == cc.OpPalettizerConfig(mode="unique")
    cfg.set_global(ct.OpPalettizerConfig(nbits=8))
    assert isinstance(cfg.global_config, cc.OpPalettizerConfig)
    with pytest.raises(
        ValueError, match="block sparsity or n:m pruning does not support op type add"
    ):
        cfg.set_op_type("add", ct.OpMagnitudePrunerConfig(n_m_ratio=(1, 2)))


def test_as_config_accepts_every_form(ct: SimpleNamespace, tmp_path: Path) -> None:
    ours = cc.OptimizationConfig(global_config=cc.OpPalettizerConfig(nbits=4))
    assert cc.as_config(ours) is ours
    assert cc.as_config(cc.OpPalettizerConfig(nbits=4)) == ours
    assert cc.as_config(ct.OpPalettizerConfig(nbits=4)) == ours
    assert cc.as_config(ct.OptimizationConfig(global_config=ct.OpPalettizerConfig(nbits=4))) == ours
    data = {"config_type": P, "global_config": {"nbits": 4}}
    assert cc.as_config(data) == ours
    path = tmp_path / "x.yml"
    path.write_text(yaml.safe_dump(data))
    assert cc.as_config(str(path)) == ours
    assert cc.as_config(path) == ours
    with open(path) as stream:
        assert cc.as_config(stream) == ours
    for bad in (1, None, [1, 2]):
        with pytest.raises(ValueError, match="config must be of type OptimizationConfig. Got"):
            cc.as_config(bad)


# --------------------------------------------------------------------------------------
# Native forms
# --------------------------------------------------------------------------------------


def test_to_native_palettizer() -> None:
    native = cc.to_native(
        cc.OpPalettizerConfig(
            mode="Uniform",
            nbits=np.int64(4),
            granularity="per_grouped_channel",
            group_size=16,
            channel_axis=1,
            weight_threshold=None,
        )
    )
    assert native == {
        "config_type": "OpPalettizerConfig",
        "kind": "palettize",
        "mode": "uniform",
        "nbits": 4,
        "granularity": "per_grouped_channel",
        "group_size": 16,
        "channel_axis": 1,
        "cluster_dim": 1,
        "enable_per_channel_scale": False,
        "num_kmeans_workers": 1,
        "weight_threshold": None,
        "lut_function": None,
    }
    assert type(native["nbits"]) is int
    custom = cc.to_native(cc.OpPalettizerConfig(mode="custom", lut_function=_lut))
    assert custom["lut_function"] is _lut and custom["mode"] == "custom" and custom["nbits"] is None


def test_to_native_linear_quantizer() -> None:
    native = cc.to_native(
        cc.OpLinearQuantizerConfig(
            mode="linear", dtype=np.uint8, granularity="per_block", block_size=(0, 8)
        )
    )
    assert native == {
        "config_type": "OpLinearQuantizerConfig",
        "kind": "linear_quantize",
        "mode": "linear",
        "dtype": "uint8",
        "nbits": 8,
        "signed": False,
        "granularity": "per_block",
        "block_size": [0, 8],
        "weight_threshold": 2048,
    }
    default = cc.to_native(cc.OpLinearQuantizerConfig(dtype="int4"))
    assert (default["mode"], default["granularity"], default["block_size"]) == (
        "linear_symmetric",
        "per_channel",
        32,
    )
    assert (default["nbits"], default["signed"]) == (4, True)


def test_to_native_pruners() -> None:
    assert cc.to_native(cc.OpMagnitudePrunerConfig(n_m_ratio=(3, 4))) == {
        "config_type": "OpMagnitudePrunerConfig",
        "kind": "prune_magnitude",
        "target_sparsity": None,
        "block_size": None,
        "n_m_ratio": [3, 4],
        "dim": 1,
        "weight_threshold": 2048,
    }
    block = cc.to_native(cc.OpMagnitudePrunerConfig(target_sparsity=np.float64(0.5), block_size=2))
    assert (block["target_sparsity"], block["block_size"], block["dim"]) == (0.5, 2, 0)
    assert type(block["target_sparsity"]) is float
    assert cc.to_native(cc.OpThresholdPrunerConfig(threshold=0.01, weight_threshold=10)) == {
        "config_type": "OpThresholdPrunerConfig",
        "kind": "prune_threshold",
        "threshold": 0.01,
        "minimum_sparsity_percentile": 0.5,
        "weight_threshold": 10,
    }


def test_native_forms_are_plain_json() -> None:
    configs = [
        cc.OpPalettizerConfig(nbits=2, cluster_dim=4, enable_per_channel_scale=True),
        cc.OpLinearQuantizerConfig(dtype="uint4", granularity="per_tensor"),
        cc.OpMagnitudePrunerConfig(target_sparsity=0.2),
        cc.OpThresholdPrunerConfig(),
    ]
    for config in configs:
        native = cc.to_native(config)
        assert native == config.to_native()
        native.pop("lut_function", None)
        assert json.loads(json.dumps(native)) == native


def test_to_native_rejects_non_configs() -> None:
    with pytest.raises(ValueError, match="config must be type of OpCompressorConfig"):
        cc.to_native(3)


def test_to_native_accepts_coremltools_objects(ct: SimpleNamespace) -> None:
    assert cc.to_native(ct.OpLinearQuantizerConfig(dtype=_mil_types().uint4)) == cc.to_native(
        cc.OpLinearQuantizerConfig(dtype="uint4")
    )


def test_resolve_keeps_absent_and_none_apart() -> None:
    cfg = cc.OptimizationConfig(
        global_config=cc.OpPalettizerConfig(nbits=4),
        op_type_configs={"conv": cc.OpPalettizerConfig(nbits=2), "linear": None},
        op_name_configs={"skip_me": None},
    )
    resolved = cc.resolve(cfg)
    assert set(resolved) == {"global", "op_type", "op_name"}
    assert resolved["global"] == cc.to_native(cc.OpPalettizerConfig(nbits=4))
    assert resolved["op_type"] == {
        "conv": cc.to_native(cc.OpPalettizerConfig(nbits=2)),
        "linear": None,
    }
    assert resolved["op_name"] == {"skip_me": None}
    assert "matmul" not in resolved["op_type"]
    assert cfg.to_native() == resolved

    assert cc.lookup_native(resolved, "skip_me", "conv") is None
    assert cc.lookup_native(resolved, "c1", "conv")["nbits"] == 2
    assert cc.lookup_native(resolved, "l1", "linear") is None
    assert cc.lookup_native(resolved, "m1", "matmul")["nbits"] == 4

    empty = cc.resolve(cc.OptimizationConfig())
    assert empty == {"global": None, "op_type": {}, "op_name": {}}


def test_resolve_accepts_other_forms(ct: SimpleNamespace) -> None:
    data = {"config_type": T, "op_name_configs": {"w": None, "v": {"threshold": 0.5}}}
    from_dict = cc.resolve(data)
    assert from_dict["global"] is None
    assert from_dict["op_name"]["w"] is None
    assert from_dict["op_name"]["v"]["threshold"] == 0.5
    theirs = ct.OptimizationConfig.from_dict(copy.deepcopy(data))
    assert cc.resolve(theirs) == from_dict


# --------------------------------------------------------------------------------------
# Helpers for the passes
# --------------------------------------------------------------------------------------


def test_check_config_types_message() -> None:
    cfg = cc.OptimizationConfig(
        global_config=cc.OpPalettizerConfig(nbits=4),
        op_name_configs={"w": cc.OpThresholdPrunerConfig()},
    )
    with pytest.raises(
        ValueError,
        match=r"^palettize_weights only accept OpPalettizerConfig type config\. Got OpThresholdPrunerConfig\.$",
    ):
        cc.check_config_types(cfg, cc.OpPalettizerConfig, "palettize_weights")
    pruning = cc.OptimizationConfig(
        global_config=cc.OpThresholdPrunerConfig(),
        op_type_configs={"conv": cc.OpMagnitudePrunerConfig(target_sparsity=0.5), "linear": None},
    )
    cc.check_config_types(
        pruning, (cc.OpMagnitudePrunerConfig, cc.OpThresholdPrunerConfig), "prune_weights"
    )
    with pytest.raises(
        ValueError,
        match=r"prune_weights only accept OpMagnitudePrunerConfig, OpThresholdPrunerConfig type config\. "
        r"Got OpPalettizerConfig\.",
    ):
        cc.check_config_types(
            cfg, (cc.OpMagnitudePrunerConfig, cc.OpThresholdPrunerConfig), "prune_weights"
        )
    activation = cc.OptimizationConfig(global_config=cc.OpActivationLinearQuantizerConfig())
    cc.check_config_types(activation, cc.OpLinearQuantizerConfig, "linear_quantize_weights")


def test_magnitude_pruner_supports_consumers() -> None:
    structural = cc.OpMagnitudePrunerConfig(n_m_ratio=(1, 2))
    assert structural.supports_consumers([("conv", "weight"), ("linear", "weight")])
    assert not structural.supports_consumers([("conv", "weight"), ("matmul", "y")])
    assert not structural.supports_consumers([("conv", "bias")])
    assert cc.OpMagnitudePrunerConfig(target_sparsity=0.5).supports_consumers([("matmul", "y")])


def _graph(edges: dict[str, list[tuple[str, str]]]) -> Callable[[str], list[tuple[str, str]]]:
    return lambda name: edges.get(name, [])


def test_get_op_config_precedence() -> None:
    cfg = cc.OptimizationConfig(
        global_config=cc.OpPalettizerConfig(nbits=8),
        op_type_configs={"conv": cc.OpPalettizerConfig(nbits=4)},
        op_name_configs={"conv_2": None},
    )
    assert cfg.get_op_config("conv_1", "conv") == cc.OpPalettizerConfig(nbits=4)
    assert cfg.get_op_config("conv_2", "conv") is None
    assert cfg.get_op_config("lin", "linear") == cc.OpPalettizerConfig(nbits=8)
    with pytest.raises(TypeError, match="op must not be of type const"):
        cfg.get_op_config("c", "const")


def test_get_const_op_config_resolution() -> None:
    pal4, pal8 = cc.OpPalettizerConfig(nbits=4), cc.OpPalettizerConfig(nbits=8)
    cfg = cc.OptimizationConfig(global_config=pal8, op_type_configs={"conv": pal4})
    edges = {
        "w_conv": [("conv_1", "conv"), ("conv_2", "conv")],
        "w_mixed": [("conv_1", "conv"), ("lin_1", "linear")],
        "w_chain": [("lut_1", "constexpr_lut_to_dense")],
        "lut_1": [("lin_1", "linear")],
        "w_out": [],
    }
    consumers = _graph(edges)
    assert cfg.get_const_op_config("w_conv", "const", consumers) == pal4
    assert cfg.get_const_op_config("w_chain", "const", consumers) == pal8
    assert cfg.get_const_op_config("w_out", "const", consumers) is None
    with pytest.raises(ValueError, match="compression config conflict detected between ops"):
        cfg.get_const_op_config("w_mixed", "const", consumers)
    # Equal (attrs-equal) configs from different levels are not a conflict.
    same = cc.OptimizationConfig(
        global_config=pal4, op_type_configs={"conv": cc.OpPalettizerConfig(nbits=4)}
    )
    assert same.get_const_op_config("w_mixed", "const", consumers) == pal4
    # The const's own name wins; op-type configs for const ops are an error.
    named = cc.OptimizationConfig(global_config=pal8, op_name_configs={"w_mixed": None})
    assert named.get_const_op_config("w_mixed", "const", consumers) is None
    typed = cc.OptimizationConfig(op_type_configs={"const": pal4})
    with pytest.raises(ValueError, match="const ops cannot be set by the `set_op_type` function"):
        typed.get_const_op_config("w_conv", "const", consumers)
    with pytest.raises(TypeError, match="op must be of type const or constexpr. Got conv"):
        cfg.get_const_op_config("conv_1", "conv", consumers)


# --------------------------------------------------------------------------------------
# Standalone behaviour: no coremltools, no cattrs
# --------------------------------------------------------------------------------------


def _run_isolated(code: str) -> str:
    script = textwrap.dedent(
        """
        import sys
        from coreml_compress import config as cfg
        """
    ) + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importable_without_coremltools() -> None:
    out = _run_isolated(
        """
        import numpy as np
        assert "coremltools" not in sys.modules
        c = cfg.OptimizationConfig.from_dict(
            {"config_type": "OpLinearQuantizerConfig", "global_config": {"dtype": "uint4"}}
        )
        assert c.global_config == cfg.OpLinearQuantizerConfig(dtype="uint4")
        assert cfg.OpLinearQuantizerConfig(dtype=np.int8).dtype == "int8"
        try:
            cfg.OpLinearQuantizerConfig(dtype=object)
        except ValueError as e:
            print(e)
        assert "coremltools" not in sys.modules
        """
    )
    assert out.strip() == "dtype=<class 'object'> is unsupported for OpLinearQuantizerConfig."


def test_coremltools_blocked_still_works() -> None:
    out = _run_isolated(
        """
        sys.modules["coremltools"] = None  # any import of it now fails
        p = cfg.OpPalettizerConfig(nbits=4)
        print(cfg.resolve(p)["global"]["nbits"])
        """
    )
    assert out.strip() == "4"


def test_fallback_errors_without_cattrs() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cattrs"] = None
        from coreml_compress import config as cfg
        try:
            cfg.OpPalettizerConfig._from_dict({"nbits": "x", "invalid": 2})
        except ValueError as e:
            assert isinstance(e, cfg.ClassValidationError), type(e)
            print(str(e))
            for sub in e.exceptions:
                print(type(sub).__name__, "|", sub, "|", getattr(sub, "__notes__", []))
        try:
            cfg.OpMagnitudePrunerConfig._from_dict({"n_m_ratio": [1]})
        except ValueError as e:
            (sub,) = e.exceptions
            print(type(sub).__name__, "|", sub, "|", [str(s) for s in sub.exceptions])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        (
            "nbits: invalid literal for int() with base 10: 'x'; unknown key 'invalid' for "
            "OpPalettizerConfig; expected one of channel_axis, cluster_dim, "
            "enable_per_channel_scale, granularity, group_size, lut_function, mode, nbits, "
            "num_kmeans_workers, weight_threshold"
        ),
        (
            "ValueError | invalid literal for int() with base 10: 'x' | "
            "['Structuring class OpPalettizerConfig @ attribute nbits']"
        ),
        "_FallbackForbiddenExtraKeysError | Extra fields in constructor for OpPalettizerConfig: invalid | []",
        (
            "_FallbackIterableValidationError | While structuring typing.Tuple[int, int] "
            "(1 sub-exception) | ['Not enough values in [1] to structure as typing.Tuple[int, int]']"
        ),
    ]


def test_fallback_error_strings_match_cattrs() -> None:
    cattrs_errors = pytest.importorskip("cattrs.errors")
    subs = [ValueError("a"), TypeError("b")]
    ours = cc._FallbackClassValidationError("While structuring X", subs, object)
    theirs = cattrs_errors.ClassValidationError("While structuring X", subs, object)
    assert str(ours) == str(theirs)
    one = cc._FallbackIterableValidationError("m", subs[:1], object)
    assert str(one) == str(cattrs_errors.IterableValidationError("m", subs[:1], object))
    extra = cc._FallbackForbiddenExtraKeysError("", cc.OpPalettizerConfig, {"b", "a"})
    assert str(extra) == str(
        cattrs_errors.ForbiddenExtraKeysError("", cc.OpPalettizerConfig, {"b", "a"})
    )
