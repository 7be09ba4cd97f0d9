"""Compression configuration objects compatible with ``coremltools.optimize.coreml``.

The classes here carry the names, fields, defaults and validation rules of the
coremltools 9 post-training compression configs, so a user's existing
coremltools code and YAML/dict configs keep working:

* :class:`OpPalettizerConfig`, :class:`OpLinearQuantizerConfig`,
  :class:`OpMagnitudePrunerConfig`, :class:`OpThresholdPrunerConfig`
  (all subclasses of :class:`OpCompressorConfig`);
* :class:`OptimizationConfig` (global / op-type / op-name levels,
  ``set_global``/``set_op_type``/``set_op_name``, ``from_dict``/``from_yaml``).

Invalid inputs raise the same exception types with the same messages as
coremltools. The classes are ``attrs`` classes (like the coremltools ones), so
validators run after every field is assigned, assignments after construction
are validated again, and equality is attrs equality (same class and equal
field values).

Helpers for the rest of the package:

* :func:`to_native` turns one op config into a plain ``dict`` for the engine;
* :func:`resolve` turns an :class:`OptimizationConfig` into plain dicts for the
  three levels, keeping "absent" and "explicitly ``None``" apart;
* :func:`from_coremltools` converts coremltools config objects into ours;
* :func:`as_config` accepts ours, coremltools', a ``from_dict`` mapping or a
  YAML path/stream and returns an :class:`OptimizationConfig`.

coremltools itself is never required; it is only consulted when a coremltools
object (a MIL dtype or a config) is handed in, and then it is already imported.

Mistakes in dict and YAML input raise :class:`~coreml_compress.errors.ConfigError`
subclasses that name the file, the key and the reason (with "did you mean ..." for
misspelled keys and config types) and also derive from the type coremltools raises
for the same mistake. A field that does not structure raises :class:`ConfigFieldError`,
which is cattrs' ``ClassValidationError`` too (with the same sub-exceptions as
coremltools'). ``cattrs`` is optional: without it, look-alike group classes defined
here take its place.
"""

from __future__ import annotations

import difflib
import enum
import numbers
import os
import sys
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Union

import attrs
from attrs import validators as _v

from .errors import ConfigError, ConfigFileError, ConfigTypeError, UnknownConfigTypeError

if TYPE_CHECKING:
    import coremltools.optimize.coreml as _cto

__all__ = [
    "ClassValidationError",
    "CompressionGranularity",
    "ConfigFieldError",
    "ConfigLike",
    "ForbiddenExtraKeysError",
    "IterableValidationError",
    "OpActivationLinearQuantizerConfig",
    "OpCompressorConfig",
    "OpLinearQuantizerConfig",
    "OpMagnitudePrunerConfig",
    "OpPalettizerConfig",
    "OpThresholdPrunerConfig",
    "OptimizationConfig",
    "as_config",
    "check_config_types",
    "from_coremltools",
    "is_coremltools_config",
    "lookup_native",
    "resolve",
    "to_native",
]


# --------------------------------------------------------------------------------------
# Structuring errors (cattrs' own classes when cattrs is installed)
# --------------------------------------------------------------------------------------


class _StructureErrorGroup(ValueError):
    """Stand-in for ``cattrs.errors.BaseValidationError`` when cattrs is absent."""

    def __init__(self, message: str, exceptions: Sequence[BaseException], cl: Any) -> None:
        super().__init__(message, list(exceptions))
        self.message = message
        self.exceptions = tuple(exceptions)
        self.cl = cl

    def __str__(self) -> str:
        count = len(self.exceptions)
        return f"{self.message} ({count} sub-exception{'' if count == 1 else 's'})"


class _FallbackClassValidationError(_StructureErrorGroup):
    """Raised by ``_from_dict`` when one or more attributes fail to structure."""


class _FallbackIterableValidationError(_StructureErrorGroup):
    """Raised when structuring a tuple field fails."""


class _FallbackForbiddenExtraKeysError(ValueError):
    """Raised (inside a ClassValidationError) for unknown keys in a config dict."""

    def __init__(self, message: str | None, cl: type, extra_fields: set[str]) -> None:
        super().__init__(message, cl, extra_fields)
        self.message = message
        self.cl = cl
        self.extra_fields = extra_fields

    def __str__(self) -> str:
        if self.message:
            return self.message
        names = ", ".join(sorted(self.extra_fields))
        return f"Extra fields in constructor for {self.cl.__name__}: {names}"


try:  # pragma: no cover - depends on the environment
    from cattrs import errors as _cattrs_errors
except ImportError:  # pragma: no cover - depends on the environment
    _cattrs_errors = None

ClassValidationError: type[Exception]
IterableValidationError: type[Exception]
ForbiddenExtraKeysError: type[Exception]
if _cattrs_errors is not None:
    ClassValidationError = _cattrs_errors.ClassValidationError
    IterableValidationError = _cattrs_errors.IterableValidationError
    ForbiddenExtraKeysError = _cattrs_errors.ForbiddenExtraKeysError
else:  # pragma: no cover - depends on the environment
    ClassValidationError = _FallbackClassValidationError
    IterableValidationError = _FallbackIterableValidationError
    ForbiddenExtraKeysError = _FallbackForbiddenExtraKeysError


def _note(text: str, key: Any, typ: Any, *, iterable: bool = False) -> str:
    """A note for ``__notes__``: cattrs' note classes when available, else the text."""
    if _cattrs_errors is None:
        return text
    if iterable:
        return _cattrs_errors.IterableValidationNote(text, key, typ)
    return _cattrs_errors.AttributeValidationNote(text, key, typ)


def _append_note(exc: BaseException, note: str) -> None:
    # Same effect as cattrs: keep earlier notes, add ours at the end.
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]


class ConfigFieldError(ClassValidationError, ConfigError):  # type: ignore[misc, valid-type]
    """Fields of an op config dict that do not structure: unknown keys, wrong types, invalid
    values. A ``ClassValidationError`` with coremltools' sub-exceptions, whose message says
    which keys and why (the group's own message only counts the sub-exceptions)."""

    @property
    def reason(self) -> str:
        return "; ".join(_field_problem(self.cl, exc) for exc in self.exceptions)

    def __str__(self) -> str:
        return ConfigError.__str__(self)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, else the list of them."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of {', '.join(choices)}"


def _field_problem(cls: type, exc: BaseException) -> str:
    """One sub-exception of a :class:`ConfigFieldError` as "key: reason"."""
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [name for name, _, _ in getattr(cls, "_FIELD_SPEC", ())]
        return "; ".join(
            f"unknown key {key!r} for {cls.__name__}{did_you_mean(key, known)}"
            for key in sorted(exc.extra_fields)
        )
    # cattrs' notes and ours read "Structuring class X @ attribute KEY".
    notes = [str(n) for n in getattr(exc, "__notes__", [])]
    key = next((n.rpartition("@ attribute ")[2] for n in notes if "@ attribute " in n), "")
    subs = getattr(exc, "exceptions", None)
    if subs:
        reason = "; ".join(str(s) for s in subs)
    elif isinstance(exc, TypeError) and len(exc.args) == 4:
        reason = str(exc.args[0])  # attrs' instance_of: (message, attribute, type, value)
    else:
        reason = str(exc)
    return f"{key}: {reason}" if key else reason


# --------------------------------------------------------------------------------------
# Granularity
# --------------------------------------------------------------------------------------


class CompressionGranularity(enum.Enum):
    """Granularity of the compression parameters (same members as coremltools)."""

    PER_TENSOR = 1
    PER_GROUPED_CHANNEL = 2
    PER_CHANNEL = 3
    PER_BLOCK = 4


def _to_granularity(value: Any) -> CompressionGranularity:
    """attrs converter: accept the enum, coremltools' enum, or the lower-case name."""
    if isinstance(value, CompressionGranularity):
        return value
    if (
        isinstance(value, enum.Enum)
        and type(value).__name__ == "CompressionGranularity"
        and value.name in CompressionGranularity.__members__
    ):
        return CompressionGranularity[value.name]
    for member in CompressionGranularity:
        if value == member.name.lower():
            return member
    raise ValueError(f"Invalid granularity={value}")


def _granularity_in(allowed: tuple[CompressionGranularity, ...]) -> Callable[..., None]:
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in allowed:
            raise ValueError(f'"granularity" must be one of {allowed}, but got {value}')

    return check


# --------------------------------------------------------------------------------------
# Shared validators
# --------------------------------------------------------------------------------------


def _non_negative_threshold(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f'"weight_threshold" must be a non-negative integer. Got {value}.')


def _weight_threshold_field() -> Any:
    return attrs.field(
        default=2048,
        validator=_v.optional([_v.instance_of(int), _non_negative_threshold]),
    )


def _plain_int(value: Any) -> Any:
    """Best-effort conversion of an integer-like value to a Python int."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plain_float(value: Any) -> Any:
    if isinstance(value, numbers.Real):
        return float(value)
    return value


# --------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------


class OpCompressorConfig(ABC):
    """Abstract base of every op-level compression config."""

    def _validate_op_type(self, op_type: str) -> None:
        """Raise if this config cannot be attached to ``op_type`` (default: always fine)."""

    @classmethod
    @abstractmethod
    def _from_dict(cls, config_dict: dict[str, Any]) -> OpCompressorConfig:
        """Build a config from a plain dict (the ``from_dict``/YAML form)."""
        raise ValueError("_from_dict must be implemented in the subclasses of OpCompressorConfig.")

    def to_native(self) -> dict[str, Any]:
        """Plain-dict form for the engine (see :func:`to_native`)."""
        return to_native(self)


# --------------------------------------------------------------------------------------
# Structuring of dicts into op configs (mirrors cattrs with forbid_extra_keys=True)
# --------------------------------------------------------------------------------------

_PAIR_OF_INTS = typing.Tuple[int, int]  # noqa: UP006 - its repr appears in messages


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def structure(value: Any) -> Any:
        return None if value is None else convert(value)

    return structure


def _as_is(value: Any) -> Any:
    return value


def _structure_block_size(value: Any) -> Any:
    if isinstance(value, int):
        return value
    if not isinstance(value, (list, tuple)):
        # ValueError (not TypeError) because that is what coremltools raises.
        raise ValueError(  # noqa: TRY004
            f'"block_size" must be int or list/tuple of int. Got {type(value)}'
        )
    return value


def _structure_pair_of_ints(value: Any) -> tuple[int, ...]:
    errors: list[BaseException] = []
    items: list[int] = []
    for index in range(2):
        if len(value) > index:
            try:
                items.append(int(value[index]))
            except Exception as exc:  # noqa: BLE001 - collected and re-raised in a group
                _append_note(
                    exc,
                    _note(
                        f"Structuring {_PAIR_OF_INTS} @ index {index}", index, int, iterable=True
                    ),
                )
                errors.append(exc)
    if len(value) != 2:
        problem = "Not enough" if len(value) < 2 else "Too many"
        exc = ValueError(f"{problem} values in {value!r} to structure as {_PAIR_OF_INTS!r}")
        exc.__notes__ = [f"Structuring {_PAIR_OF_INTS}"]  # type: ignore[attr-defined]
        errors.append(exc)
    if errors:
        raise IterableValidationError(  # type: ignore[call-arg]
            f"While structuring {_PAIR_OF_INTS!r}", errors, _PAIR_OF_INTS
        )
    return tuple(items)


_FieldSpec = Sequence[tuple[str, Callable[[Any], Any], Any]]


def _structure(cls: type, data: Any, spec: _FieldSpec) -> Any:
    """Build ``cls`` from ``data`` the way a strict cattrs converter does.

    Every field present in ``data`` is converted (``str()``, ``int()``, ``float()``,
    ``bool()``, a tuple of two ints, or passed through); conversion failures and
    unknown keys are collected and raised together as a ClassValidationError, as
    is any error raised while constructing the instance.
    """
    errors: list[BaseException] = []
    kwargs: dict[str, Any] = {}
    for name, convert, annotation in spec:
        if name in data:
            try:
                kwargs[name] = convert(data[name])
            except Exception as exc:  # noqa: BLE001 - collected and re-raised in a group
                _append_note(
                    exc,
                    _note(
                        f"Structuring class {cls.__qualname__} @ attribute {name}",
                        name,
                        annotation,
                    ),
                )
                errors.append(exc)
    unknown = set(data.keys()) - {name for name, _, _ in spec}
    if unknown:
        errors.append(ForbiddenExtraKeysError("", cls, unknown))  # type: ignore[call-arg]
    if errors:
        raise ConfigFieldError(f"While structuring {cls.__name__}", errors, cls)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ConfigFieldError(f"While structuring {cls.__name__}", [exc], cls) from exc


# --------------------------------------------------------------------------------------
# Linear quantization
# --------------------------------------------------------------------------------------

_LINEAR_MODES = ("LINEAR_SYMMETRIC", "LINEAR")
_LINEAR_GRANULARITIES = (
    CompressionGranularity.PER_TENSOR,
    CompressionGranularity.PER_CHANNEL,
    CompressionGranularity.PER_BLOCK,
)

# Names understood by coremltools' ``types.string_to_builtin`` (the MIL builtin table).
_MIL_TYPE_NAMES = frozenset(
    {
        "bool",
        "int4",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint1",
        "uint2",
        "uint3",
        "uint4",
        "uint6",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "fp16",
        "fp32",
        "fp64",
        "complex64",
        "complex128",
        "string",
    }
)
_QUANTIZED_DTYPES = ("int4", "int8", "uint4", "uint8")

# Checked in this order: numpy's unsigned types derive from Python int on some
# platforms, so the unsigned ones come first (the same order coremltools uses).
_NUMPY_INTEGER_NAMES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")


def _loaded_mil_types() -> Any:
    """coremltools' MIL ``types`` module if coremltools is already imported, else None."""
    if "coremltools" not in sys.modules:
        return None
    try:
        from coremltools.converters.mil.mil import types as mil_types
    except Exception:  # noqa: BLE001 # pragma: no cover - broken coremltools install
        return None
    return mil_types


def _numpy_integer_name(dtype: Any) -> str:
    """MIL name of a numpy/Python integer type, following coremltools' mapping."""
    import numpy as np

    if isinstance(dtype, np.dtype):
        metadata = dtype.metadata
        if metadata:
            mil_types = _loaded_mil_types()
            for value in metadata.values():
                if mil_types is not None and mil_types.is_builtin(value):
                    # coremltools tags sub-byte numpy dtypes with their MIL type.
                    return str(mil_types.builtin_to_string(value))
        dtype = dtype.type
    if issubclass(dtype, (bool, np.bool_)):
        return "bool"
    for name in _NUMPY_INTEGER_NAMES:
        if issubclass(dtype, getattr(np, name)):
            return name
    if issubclass(dtype, int) or dtype is int:
        return "int32"
    raise TypeError(f"Unsupported numpy type: {dtype}.")


def _to_dtype_name(dtype: Any) -> str:
    """attrs converter for ``OpLinearQuantizerConfig.dtype``: normalize to a MIL name."""
    if isinstance(dtype, str):
        if dtype not in _MIL_TYPE_NAMES:
            raise ValueError(f"Invalid dtype {dtype}. Only support int8/uint8/int4/uint4.")
        return str(dtype)
    # A non-string dtype is a numpy or MIL type: numpy is imported only now, so that configs
    # (and the path-based passes) do not pay for it.
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        return _numpy_integer_name(dtype)
    mil_types = _loaded_mil_types()
    if mil_types is not None and mil_types.is_builtin(dtype):
        return str(mil_types.builtin_to_string(dtype))
    raise ValueError(f"dtype={dtype} is unsupported for OpLinearQuantizerConfig.")


def _check_dtype(instance: Any, attribute: attrs.Attribute, dtype: str) -> None:
    if dtype not in _QUANTIZED_DTYPES:
        raise ValueError(f"Invalid dtype. Should be int4/8 or uint4/8, but got {dtype}")


def _check_linear_mode(instance: Any, attribute: attrs.Attribute, mode: str) -> None:
    if mode.upper() not in _LINEAR_MODES:
        raise ValueError(
            f"Only mode {_LINEAR_MODES} supported for weight affine quantization. "
            f'Got mode: "{mode}".'
        )


def _check_quantizer_block_size(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"The block_size must be non-negative values, but got {value}")
    elif isinstance(value, (list, tuple)):
        if any(not isinstance(item, int) or item < 0 for item in value):
            raise ValueError("All values in block_size must be non-negative values.")
    else:
        raise ValueError(  # noqa: TRY004 - coremltools raises ValueError here
            f"The block_size should be int or list/tuple of int, but got {type(value)}."
        )


@attrs.define
class OpLinearQuantizerConfig(OpCompressorConfig):
    """Linear (affine) weight quantization; see coremltools' class of the same name.

    ``dtype`` accepts ``"int8"``/``"uint8"``/``"int4"``/``"uint4"``, numpy integer
    types and coremltools MIL types, and is stored as the MIL name string.
    ``nbits`` and ``signed`` are derived from it.
    """

    mode: str = attrs.field(
        default="linear_symmetric", validator=[_v.instance_of(str), _check_linear_mode]
    )
    dtype: str = attrs.field(default="int8", converter=_to_dtype_name, validator=_check_dtype)
    granularity: CompressionGranularity = attrs.field(
        default=CompressionGranularity.PER_CHANNEL,
        converter=_to_granularity,
        validator=[
            _v.instance_of(CompressionGranularity),
            _granularity_in(_LINEAR_GRANULARITIES),
        ],
    )
    block_size: int | list[int] | tuple[int, ...] = attrs.field(
        default=32, validator=_check_quantizer_block_size
    )
    weight_threshold: int | None = _weight_threshold_field()

    def __attrs_post_init__(self) -> None:
        self.mode = self.mode.upper()

    @property
    def nbits(self) -> int:
        """Bit width of ``dtype`` (4 or 8)."""
        return 4 if self.dtype.endswith("4") else 8

    @property
    def signed(self) -> bool:
        """Whether ``dtype`` is signed."""
        return not self.dtype.startswith("u")

    _FIELD_SPEC: typing.ClassVar[_FieldSpec] = (
        ("mode", str, str),
        ("dtype", _as_is, str | type),
        ("granularity", _as_is, str | CompressionGranularity),
        ("block_size", _structure_block_size, int | list[int] | tuple[int, ...]),
        ("weight_threshold", _optional(int), int | None),
    )

    @classmethod
    def _from_dict(cls, config_dict: dict[str, Any]) -> OpLinearQuantizerConfig:
        return _structure(cls, config_dict, cls._FIELD_SPEC)


@attrs.define
class OpActivationLinearQuantizerConfig(OpLinearQuantizerConfig):
    """Activation quantization config (coremltools' ``experimental`` subclass; no new fields)."""


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


def _check_threshold(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f'Invalid value of "threshold": {value}. Needs to be in [0, inf)')


def _check_sparsity_percentile(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0 or value > 1:
        raise ValueError(
            f'Invalid value of "minimum_sparsity_percentile": {value}. Needs to be in [0, 1]'
        )


@attrs.define
class OpThresholdPrunerConfig(OpCompressorConfig):
    """Zero every weight whose magnitude is at most ``threshold``; store sparse if sparse enough."""

    threshold: float = attrs.field(
        default=1e-12, validator=[_v.instance_of(float), _check_threshold]
    )
    minimum_sparsity_percentile: float = attrs.field(
        default=0.5, validator=[_v.instance_of(float), _check_sparsity_percentile]
    )
    weight_threshold: int | None = _weight_threshold_field()

    _FIELD_SPEC: typing.ClassVar[_FieldSpec] = (
        ("threshold", float, float),
        ("minimum_sparsity_percentile", float, float),
        ("weight_threshold", _optional(int), int | None),
    )

    @classmethod
    def _from_dict(cls, config_dict: dict[str, Any]) -> OpThresholdPrunerConfig:
        return _structure(cls, config_dict, cls._FIELD_SPEC)


_STRUCTURAL_PRUNING_TARGETS: dict[str, tuple[str, ...]] = {
    "conv": ("weight",),
    "linear": ("weight",),
}
_EITHER_SPARSITY_OR_NM = (
    'Either "target_sparsity" or "n_m_ratio" need to be set. They cannot be set at the same time.'
)


def _check_target_sparsity(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if (value is None) == (instance.n_m_ratio is None):
        raise ValueError(_EITHER_SPARSITY_OR_NM)
    if value is not None and (value < 0 or value > 1):
        raise ValueError(f'Invalid value of "target_sparsity": {value}. Needs to be in [0, 1].')


def _check_pruner_block_size(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if instance.n_m_ratio is not None:
        raise ValueError('"block_size" and "n_m_ratio" cannot be set at the same time.')
    if value <= 1:
        raise ValueError(f'"block_size" must be an integer > 1. Got {value}.')


def _check_n_m_ratio(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f'"n_m_ratio" must be a tuple of two integers (n, m). n <= m. Got {value}')


def _check_dim(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if instance.block_size is None and instance.n_m_ratio is None:
        raise ValueError('"dim" can only be set along with "block_size" or "n_m_ratio".')
    if value not in (0, 1):
        raise ValueError(f'"dim" must be 1 or 0. Got {value}.')


@attrs.define
class OpMagnitudePrunerConfig(OpCompressorConfig):
    """Magnitude pruning to a target sparsity, optionally block-structured, or n:m pruning."""

    target_sparsity: float | None = attrs.field(
        default=None, validator=[_v.optional(_v.instance_of(float)), _check_target_sparsity]
    )
    block_size: int | None = attrs.field(
        default=None, validator=[_v.optional(_v.instance_of(int)), _check_pruner_block_size]
    )
    n_m_ratio: tuple[int, int] | None = attrs.field(
        default=None, validator=[_v.optional(_v.instance_of((list, tuple))), _check_n_m_ratio]
    )
    dim: int | None = attrs.field(
        default=None, validator=[_v.optional(_v.instance_of(int)), _check_dim]
    )
    weight_threshold: int | None = _weight_threshold_field()

    def __attrs_post_init__(self) -> None:
        if self.dim is None:
            if self.block_size is not None:
                self.dim = 0
            elif self.n_m_ratio is not None:
                self.dim = 1

    def _is_structural_pruning(self) -> bool:
        return self.n_m_ratio is not None or self.block_size is not None

    def _validate_op_type(self, op_type: str) -> None:
        if self._is_structural_pruning() and op_type not in _STRUCTURAL_PRUNING_TARGETS:
            raise ValueError(f"block sparsity or n:m pruning does not support op type {op_type}.")

    def supports_consumers(self, consumers: Iterable[tuple[str, str]]) -> bool:
        """Whether a const feeding ``consumers`` may be pruned with this config.

        ``consumers`` holds ``(op_type, input_name)`` for every use of the const.
        Unstructured pruning accepts anything; block and n:m pruning only accept
        the ``weight`` input of ``conv`` and ``linear`` (coremltools'
        ``_check_const_op_is_valid``).
        """
        if not self._is_structural_pruning():
            return True
        return all(
            input_name in _STRUCTURAL_PRUNING_TARGETS.get(op_type, ())
            for op_type, input_name in consumers
        )

    _FIELD_SPEC: typing.ClassVar[_FieldSpec] = (
        ("target_sparsity", _optional(float), float | None),
        ("block_size", _optional(int), int | None),
        ("n_m_ratio", _optional(_structure_pair_of_ints), _PAIR_OF_INTS | None),
        ("dim", _optional(int), int | None),
        ("weight_threshold", _optional(int), int | None),
    )

    @classmethod
    def _from_dict(cls, config_dict: dict[str, Any]) -> OpMagnitudePrunerConfig:
        return _structure(cls, config_dict, cls._FIELD_SPEC)


# --------------------------------------------------------------------------------------
# Palettization
# --------------------------------------------------------------------------------------

_PALETTIZATION_MODES = ("KMEANS", "UNIFORM", "UNIQUE", "CUSTOM")
_PALETTIZATION_NBITS = (1, 2, 3, 4, 6, 8)
_PALETTIZATION_GRANULARITIES = (
    CompressionGranularity.PER_TENSOR,
    CompressionGranularity.PER_GROUPED_CHANNEL,
)


def _check_palettizer_mode(instance: Any, attribute: attrs.Attribute, mode: str) -> None:
    if mode.upper() not in _PALETTIZATION_MODES:
        raise ValueError(
            f"Only modes {_PALETTIZATION_MODES} are supported for weight palettization. "
            f'Got "mode": "{mode}".'
        )


def _check_palettizer_nbits(instance: Any, attribute: attrs.Attribute, nbits: Any) -> None:
    mode = instance.mode.upper()
    if nbits is None:
        if mode in ("KMEANS", "UNIFORM"):
            raise ValueError(f'"nbits" must be provided for {instance.mode} mode')
        return
    if mode in ("UNIQUE", "CUSTOM"):
        raise ValueError(f'"nbits" must NOT be provided for {instance.mode} mode')
    if nbits not in _PALETTIZATION_NBITS:
        raise ValueError(
            f'Invalid value of "nbits" ({nbits}) for palettization. '
            f'Supported "nbits" are {_PALETTIZATION_NBITS}'
        )


def _check_lut_function(instance: Any, attribute: attrs.Attribute, lut_function: Any) -> None:
    custom = instance.mode.upper() == "CUSTOM"
    if lut_function is None:
        if custom:
            raise ValueError('"lut_function" can not be None, if "mode" is "custom".')
        return
    if not custom:
        raise ValueError('"lut_function" must be None, if "mode" is not "custom".')
    if not callable(lut_function):
        raise ValueError(  # noqa: TRY004 - coremltools raises ValueError here
            'A function object must be provided as "lut_function". '
            f'Got a "lut_function" as type {type(lut_function)}'
        )


@attrs.define
class OpPalettizerConfig(OpCompressorConfig):
    """Weight palettization (look-up table + indices); see coremltools' class of the same name.

    For ``mode="custom"`` the user's ``lut_function`` callable is kept on the object.
    """

    mode: str = attrs.field(
        default="kmeans", validator=[_v.instance_of(str), _check_palettizer_mode]
    )
    nbits: int | None = attrs.field(default=None, validator=_check_palettizer_nbits)
    lut_function: Callable[..., Any] | None = attrs.field(
        default=None, validator=_check_lut_function
    )
    granularity: CompressionGranularity = attrs.field(
        default=CompressionGranularity.PER_TENSOR,
        converter=_to_granularity,
        validator=[
            _v.instance_of(CompressionGranularity),
            _granularity_in(_PALETTIZATION_GRANULARITIES),
        ],
    )
    group_size: int = attrs.field(default=32)
    channel_axis: int | None = attrs.field(default=None)
    cluster_dim: int = attrs.field(default=1, validator=_v.instance_of(int))
    enable_per_channel_scale: bool = attrs.field(default=False, validator=_v.instance_of(bool))
    num_kmeans_workers: int = attrs.field(default=1, validator=_v.instance_of(int))
    weight_threshold: int | None = _weight_threshold_field()

    def __attrs_post_init__(self) -> None:
        self.mode = self.mode.upper()

    _FIELD_SPEC: typing.ClassVar[_FieldSpec] = (
        ("mode", str, str),
        ("nbits", _optional(int), int | None),
        ("lut_function", _as_is, Callable | None),
        ("granularity", _as_is, str | CompressionGranularity),
        ("group_size", int, int),
        ("channel_axis", _optional(int), int | None),
        ("cluster_dim", int, int),
        ("enable_per_channel_scale", bool, bool),
        ("num_kmeans_workers", int, int),
        ("weight_threshold", _optional(int), int | None),
    )

    @classmethod
    def _from_dict(cls, config_dict: dict[str, Any]) -> OpPalettizerConfig:
        if "lut_function" in config_dict:
            raise ValueError(
                "_from_dict method does not support lut_function. "
                "Please create the OpPalettizerConfig from scratch."
            )
        return _structure(cls, config_dict, cls._FIELD_SPEC)


# --------------------------------------------------------------------------------------
# OptimizationConfig
# --------------------------------------------------------------------------------------


def _check_op_config_type(config: Any) -> None:
    if config is not None and not isinstance(config, OpCompressorConfig):
        raise ValueError(f"config must be type of OpCompressorConfig. Got {type(config)}.")


def _adopt_op_config(value: Any) -> Any:
    """attrs converter: turn a coremltools op config into ours, leave anything else alone."""
    if is_coremltools_config(value):
        return from_coremltools(value)
    return value


def _adopt_op_config_mapping(value: Any) -> Any:
    """attrs converter for the dict levels; copies the dict only if something is converted."""
    if isinstance(value, dict) and any(is_coremltools_config(v) for v in value.values()):
        converted = type(value)()
        for key, item in value.items():
            converted[key] = _adopt_op_config(item)
        return converted
    return value


def _check_global_config(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _check_op_config_type(value)


def _check_op_type_configs(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    for config in value.values():
        _check_op_config_type(config)
    for op_type, config in value.items():
        if config is not None:
            config._validate_op_type(op_type)


def _check_op_name_configs(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    for config in value.values():
        _check_op_config_type(config)


def _check_is_deprecated(instance: Any, attribute: attrs.Attribute, value: bool) -> None:
    if not value and instance._op_selector is not None:
        raise ValueError(
            "op_selector is supported only through the coremltools.compression_utils API."
        )


_OPTIMIZATION_CONFIG_KEYS = ("config_type", "global_config", "op_name_configs", "op_type_configs")


@attrs.define
class OptimizationConfig:
    """Compression config at three levels: global, per op type and per op/const name.

    Precedence when compressing: op name, then op type, then global. A ``None``
    value at the op-type or op-name level means "do not compress".
    """

    global_config: OpCompressorConfig | None = attrs.field(
        default=None, converter=_adopt_op_config, validator=_check_global_config
    )
    op_type_configs: dict[str, OpCompressorConfig | None] = attrs.field(
        default=None, converter=_adopt_op_config_mapping, validator=_check_op_type_configs
    )
    op_name_configs: dict[str, OpCompressorConfig | None] = attrs.field(
        default=None, converter=_adopt_op_config_mapping, validator=_check_op_name_configs
    )
    # Only for coremltools' deprecated ``compression_utils`` API (kept for conversions).
    _is_deprecated: bool = attrs.field(
        default=False, validator=[_v.instance_of(bool), _check_is_deprecated]
    )
    _op_selector: Callable[..., bool] | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if self.op_type_configs is None:
            self.op_type_configs = {}
        if self.op_name_configs is None:
            self.op_name_configs = {}

    # -- setters ---------------------------------------------------------------------

    def set_global(self, op_config: OpCompressorConfig | None) -> None:
        """Set the config applied to every op without a more specific one."""
        op_config = _adopt_op_config(op_config)
        _check_op_config_type(op_config)
        self.global_config = op_config

    def set_op_type(self, op_type: str, op_config: OpCompressorConfig | None) -> None:
        """Set the config for every op of type ``op_type`` (``None``: do not compress)."""
        if self._is_deprecated:
            raise ValueError(
                "set_op_type is not exposed through the coremltools.compression_utils API."
            )
        op_config = _adopt_op_config(op_config)
        _check_op_config_type(op_config)
        if op_config is not None:
            op_config._validate_op_type(op_type)
        self.op_type_configs[op_type] = op_config

    def set_op_name(self, op_name: str, op_config: OpCompressorConfig | None) -> None:
        """Set the config for one const or op by name (``None``: do not compress)."""
        if self._is_deprecated:
            raise ValueError(
                "set_op_name is not exposed through the coremltools.compression_utils API."
            )
        op_config = _adopt_op_config(op_config)
        _check_op_config_type(op_config)
        self.op_name_configs[op_name] = op_config

    # -- lookups used by the passes ----------------------------------------------------

    def get_op_config(self, op_name: str, op_type: str) -> OpCompressorConfig | None:
        """Config for a non-const op: by op name, then op type, then global."""
        if op_type == "const":
            raise TypeError("op must not be of type const")
        if op_name in self.op_name_configs:
            return self.op_name_configs[op_name]
        if op_type in self.op_type_configs:
            return self.op_type_configs[op_type]
        return self.global_config

    def get_const_op_config(
        self,
        op_name: str,
        op_type: str,
        consumers_of: Callable[[str], Sequence[tuple[str, str]]],
        describe: Callable[[str, str], str] | None = None,
    ) -> OpCompressorConfig | None:
        """Config for a ``const`` (or ``constexpr_*``) op, as coremltools resolves it.

        ``consumers_of(name)`` must return ``(op_name, op_type)`` for every op that
        consumes an output of op ``name``. ``describe(op_name, op_type)`` formats an
        op for the conflict message. Order: the const's own name; its op type is
        an error; no consumers means no compression; if every consumer is a
        ``constexpr_*`` op follow the first one; otherwise every consumer's config
        (name, type, global) must be equal.
        """
        if not (op_type == "const" or op_type.startswith("constexpr_")):
            raise TypeError(f"op must be of type const or constexpr. Got {op_type}")
        if op_name in self.op_name_configs:
            return self.op_name_configs[op_name]
        if op_type in self.op_type_configs:
            raise ValueError(
                "const ops cannot be set by the `set_op_type` function. Please use `set_global`"
            )
        consumers = list(consumers_of(op_name))
        if not consumers:
            return None
        if all(child_type.startswith("constexpr_") for _, child_type in consumers):
            first_name, first_type = consumers[0]
            return self.get_const_op_config(first_name, first_type, consumers_of, describe)
        fmt = describe or (lambda name, typ: f"{typ}(name={name})")
        configs = [self.get_op_config(name, typ) for name, typ in consumers]
        for (name, typ), config in zip(consumers, configs):
            if config != configs[0]:
                first = fmt(*consumers[0])
                other = fmt(name, typ)
                raise ValueError(
                    f"compression config conflict detected between ops {first} and {other}. "
                    f"{first} has config {configs[0]} while {other} has {config}."
                )
        return configs[0]

    # -- construction from dicts / YAML -----------------------------------------------

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any]) -> OptimizationConfig:
        """Build a config from a nested dict (same format as coremltools).

        Keys: ``config_type`` (required, an op config class name), ``global_config``,
        ``op_type_configs`` and ``op_name_configs``. Each nested dict may override
        ``config_type``; a nested ``None`` becomes a ``None`` config. Unlike
        coremltools, the input dict is not modified.

        Raises
        ------
        ConfigError
            Any mistake, naming the key (``global_config``, ``op_type_configs: linear``, ...)
            and the reason, with "did you mean ..." for misspelled keys and config types. Each
            is also the exception type coremltools raises for the same mistake (``ValueError``,
            ``TypeError``, ``AttributeError``, or cattrs' ``ClassValidationError`` for fields).
        """
        if not isinstance(config_dict, Mapping):
            raise ConfigTypeError(
                f"an OptimizationConfig dict is a mapping, got {type(config_dict).__name__}"
            )
        for key in config_dict:
            if key not in _OPTIMIZATION_CONFIG_KEYS:
                raise ConfigError(
                    f"unknown key {key!r} for OptimizationConfig"
                    f"{did_you_mean(str(key), _OPTIMIZATION_CONFIG_KEYS)}"
                )
        config_type = config_dict.get("config_type", None)
        if config_type is None or not isinstance(config_type, str):
            raise ConfigError("config_type must be provided with type of string.")

        kwargs: dict[str, Any] = {}
        if config_dict.get("global_config", None) is not None:
            kwargs["global_config"] = _located(
                "global_config", _op_config_from_dict, config_type, config_dict["global_config"]
            )
        for key in ("op_type_configs", "op_name_configs"):
            level = config_dict.get(key, None)
            if level is None:
                continue
            if not isinstance(level, dict):
                raise ConfigError(f"{key} must be type of dict. Got {type(level)}")
            kwargs[key] = {
                name: _located(f"{key}: {name}", _op_config_from_dict, config_type, value)
                for name, value in level.items()
            }
        return _located(None, cls, **kwargs)

    @classmethod
    def from_yaml(cls, yml: IO[Any] | str | os.PathLike[str]) -> OptimizationConfig:
        """Build a config from a YAML file path or an open stream (see :meth:`from_dict`).

        Raises
        ------
        ConfigError
            As :meth:`from_dict`, prefixed with the file's name; a YAML syntax error as
            ``FILE:LINE: ...`` on one line; :class:`~coreml_compress.errors.ConfigFileError`
            (an ``OSError``) when the file cannot be read.
        """
        return load_yaml(yml, cls.from_dict)

    def to_native(self) -> dict[str, Any]:
        """Plain-dict form of all three levels (see :func:`resolve`)."""
        return resolve(self)


_FROM_DICT_CLASSES: dict[str, type[OpCompressorConfig]] = {
    "OpCompressorConfig": OpCompressorConfig,
    "OpLinearQuantizerConfig": OpLinearQuantizerConfig,
    "OpMagnitudePrunerConfig": OpMagnitudePrunerConfig,
    "OpPalettizerConfig": OpPalettizerConfig,
    "OpThresholdPrunerConfig": OpThresholdPrunerConfig,
}


def _op_config_from_dict(config_type: Any, attributes: Any) -> OpCompressorConfig | None:
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping):
        raise ConfigTypeError(
            f"expected a mapping of {config_type} fields, got {type(attributes).__name__}"
        )
    if "config_type" in attributes:
        config_type = attributes["config_type"]
        attributes = {k: v for k, v in attributes.items() if k != "config_type"}
    if not isinstance(config_type, str):
        raise ConfigTypeError(f"config_type must be a string, not {type(config_type).__name__}")
    config_cls = _FROM_DICT_CLASSES.get(config_type)
    if config_cls is None or config_cls is OpCompressorConfig:
        raise UnknownConfigTypeError(
            f"unknown config_type {config_type!r}"
            f"{did_you_mean(config_type, [n for n in _FROM_DICT_CLASSES if n != 'OpCompressorConfig'])}"
        )
    return config_cls._from_dict(dict(attributes))


def _located(where: str | None, build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``, its errors raised as :class:`ConfigError` located at ``where``
    (keeping the type coremltools raises: ``ValueError`` or ``TypeError``)."""
    try:
        return build(*args, **kwargs)
    except ConfigError as exc:
        raise exc.located(where) if where else exc
    except (TypeError, ValueError) as exc:
        error = ConfigTypeError(str(exc)) if isinstance(exc, TypeError) else ConfigError(str(exc))
        raise (error.located(where) if where else error) from exc


def load_yaml(source: IO[Any] | str | os.PathLike[str], build: Callable[[Any], Any]) -> Any:
    """``build(document)`` for the YAML document in a file (path) or stream; every mistake is a
    :class:`ConfigError` located at the file (``FILE:LINE`` for YAML syntax errors)."""
    import yaml

    name = (
        os.fspath(source)
        if isinstance(source, (str, os.PathLike))
        else getattr(source, "name", "<stream>")
    )
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source) as stream:
                document = yaml.safe_load(stream)
        else:
            document = yaml.safe_load(source)
    except OSError as exc:
        raise ConfigFileError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else str(name)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}").located(where) from None
    try:
        return build(document)
    except ConfigError as exc:
        raise exc.located(str(name))


# --------------------------------------------------------------------------------------
# Plain-dict forms for the engine
# --------------------------------------------------------------------------------------


def to_native(config: OpCompressorConfig | Any) -> dict[str, Any]:
    """Plain ``dict`` form of one op config for the Rust engine.

    Common keys: ``config_type`` (class name), ``kind`` (``"palettize"``,
    ``"linear_quantize"``, ``"prune_magnitude"`` or ``"prune_threshold"``) and
    ``weight_threshold``. Modes and granularities are lower-case strings,
    ``block_size`` is an int or a list, ``n_m_ratio`` a list, numbers are
    Python ``int``/``float``. A palettizer's ``lut_function`` is passed as is.
    coremltools config objects are converted first.
    """
    if is_coremltools_config(config):
        config = from_coremltools(config)
    common = {
        "config_type": type(config).__name__,
        "weight_threshold": _plain_int(getattr(config, "weight_threshold", None)),
    }
    if isinstance(config, OpPalettizerConfig):
        return {
            **common,
            "kind": "palettize",
            "mode": config.mode.lower(),
            "nbits": _plain_int(config.nbits),
            "granularity": config.granularity.name.lower(),
            "group_size": _plain_int(config.group_size),
            "channel_axis": _plain_int(config.channel_axis),
            "cluster_dim": _plain_int(config.cluster_dim),
            "enable_per_channel_scale": bool(config.enable_per_channel_scale),
            "num_kmeans_workers": _plain_int(config.num_kmeans_workers),
            "lut_function": config.lut_function,
        }
    if isinstance(config, OpLinearQuantizerConfig):
        block_size = config.block_size
        if isinstance(block_size, (list, tuple)):
            block_size = [_plain_int(b) for b in block_size]
        else:
            block_size = _plain_int(block_size)
        return {
            **common,
            "kind": "linear_quantize",
            "mode": config.mode.lower(),
            "dtype": config.dtype,
            "nbits": config.nbits,
            "signed": config.signed,
            "granularity": config.granularity.name.lower(),
            "block_size": block_size,
        }
    if isinstance(config, OpMagnitudePrunerConfig):
        ratio = config.n_m_ratio
        return {
            **common,
            "kind": "prune_magnitude",
            "target_sparsity": _plain_float(config.target_sparsity),
            "block_size": _plain_int(config.block_size),
            "n_m_ratio": None if ratio is None else [_plain_int(x) for x in ratio],
            "dim": _plain_int(config.dim),
        }
    if isinstance(config, OpThresholdPrunerConfig):
        return {
            **common,
            "kind": "prune_threshold",
            "threshold": _plain_float(config.threshold),
            "minimum_sparsity_percentile": _plain_float(config.minimum_sparsity_percentile),
        }
    raise ValueError(f"config must be type of OpCompressorConfig. Got {type(config)}.")


def _native_or_none(config: Any) -> dict[str, Any] | None:
    return None if config is None else to_native(config)


def resolve(config: OptimizationConfig | Any) -> dict[str, Any]:
    """Plain-dict form of a whole :class:`OptimizationConfig` for the passes.

    Returns ``{"global": native | None, "op_type": {type: native | None},
    "op_name": {name: native | None}}``. A key missing from ``op_type``/``op_name``
    means "not configured at that level"; a key mapped to ``None`` means "configured
    as do-not-compress". Anything :func:`as_config` accepts may be passed.
    """
    cfg = as_config(config)
    return {
        "global": _native_or_none(cfg.global_config),
        "op_type": {k: _native_or_none(v) for k, v in cfg.op_type_configs.items()},
        "op_name": {k: _native_or_none(v) for k, v in cfg.op_name_configs.items()},
    }


def lookup_native(resolved: Mapping[str, Any], op_name: str, op_type: str) -> dict[str, Any] | None:
    """Pick the native config of an op from :func:`resolve` output: name, type, then global."""
    if op_name in resolved["op_name"]:
        return resolved["op_name"][op_name]
    if op_type in resolved["op_type"]:
        return resolved["op_type"][op_type]
    return resolved["global"]


def check_config_types(
    config: OptimizationConfig,
    supported: type | tuple[type, ...],
    pass_name: str,
) -> None:
    """Raise like a coremltools pass when a config of the wrong kind is present.

    For example ``check_config_types(cfg, OpPalettizerConfig, "palettize_weights")``
    raises ``ValueError("palettize_weights only accept OpPalettizerConfig type config.
    Got OpLinearQuantizerConfig.")``.
    """
    supported_tuple = supported if isinstance(supported, tuple) else (supported,)
    everything: list[Any] = []
    if config.global_config is not None:
        everything.append(config.global_config)
    everything.extend(config.op_type_configs.values())
    everything.extend(config.op_name_configs.values())
    for op_config in everything:
        if op_config is not None and not isinstance(op_config, supported_tuple):
            names = ", ".join(t.__name__ for t in supported_tuple)
            raise ValueError(
                f"{pass_name} only accept {names} type config. Got {op_config.__class__.__name__}."
            )


# --------------------------------------------------------------------------------------
# coremltools interoperability
# --------------------------------------------------------------------------------------

_OP_CONFIG_FIELDS: dict[type[OpCompressorConfig], tuple[str, ...]] = {
    OpPalettizerConfig: (
        "mode",
        "nbits",
        "lut_function",
        "granularity",
        "group_size",
        "channel_axis",
        "cluster_dim",
        "enable_per_channel_scale",
        "num_kmeans_workers",
        "weight_threshold",
    ),
    OpLinearQuantizerConfig: ("mode", "dtype", "granularity", "block_size", "weight_threshold"),
    OpActivationLinearQuantizerConfig: (
        "mode",
        "dtype",
        "granularity",
        "block_size",
        "weight_threshold",
    ),
    OpMagnitudePrunerConfig: (
        "target_sparsity",
        "block_size",
        "n_m_ratio",
        "dim",
        "weight_threshold",
    ),
    OpThresholdPrunerConfig: ("threshold", "minimum_sparsity_percentile", "weight_threshold"),
}
_BY_COREMLTOOLS_NAME: dict[str, type[OpCompressorConfig]] = {
    cls.__name__: cls for cls in _OP_CONFIG_FIELDS
}


def _from_coremltools_module(obj: Any) -> bool:
    return type(obj).__module__.split(".", 1)[0] == "coremltools"


def is_coremltools_config(obj: Any) -> bool:
    """Whether ``obj`` is a coremltools ``OpCompressorConfig`` or ``OptimizationConfig``."""
    if not _from_coremltools_module(obj):
        return False
    return any(
        base.__name__ in ("OpCompressorConfig", "OptimizationConfig")
        and base.__module__.split(".", 1)[0] == "coremltools"
        for base in type(obj).__mro__
    )


def _coremltools_field(obj: Any, name: str) -> Any:
    value = getattr(obj, name)
    if name == "granularity" and isinstance(value, enum.Enum):
        return CompressionGranularity[value.name]
    if name == "dtype" and not isinstance(value, str):
        mil_types = _loaded_mil_types()
        if mil_types is not None and mil_types.is_builtin(value):
            return str(mil_types.builtin_to_string(value))
    return value


def from_coremltools(obj: Any) -> Any:
    """Convert a coremltools config (op config or OptimizationConfig) into ours.

    Every field is copied (granularity enums by name, MIL dtypes by their name,
    a custom palettizer's ``lut_function`` as the same callable) and validated
    again. Objects of ours are returned unchanged.
    """
    if isinstance(obj, (OpCompressorConfig, OptimizationConfig)):
        return obj
    if not is_coremltools_config(obj):
        raise TypeError(f"Expected a coremltools compression config, got {type(obj)}.")
    name = type(obj).__name__
    if name == "OptimizationConfig":
        return OptimizationConfig(
            global_config=_convert_or_none(obj.global_config),
            op_type_configs={k: _convert_or_none(v) for k, v in obj.op_type_configs.items()},
            op_name_configs={k: _convert_or_none(v) for k, v in obj.op_name_configs.items()},
            is_deprecated=bool(getattr(obj, "_is_deprecated", False)),
            op_selector=getattr(obj, "_op_selector", None),
        )
    target = _BY_COREMLTOOLS_NAME.get(name)
    if target is None:
        raise TypeError(f"Unsupported coremltools config type {type(obj)}.")
    values = {field: _coremltools_field(obj, field) for field in _OP_CONFIG_FIELDS[target]}
    return target(**values)


# Everything a pass takes as its config (see :func:`as_config`).
ConfigLike = Union[
    OptimizationConfig,
    OpCompressorConfig,
    "_cto.OptimizationConfig",
    "_cto.OpCompressorConfig",
    Mapping[str, Any],
    str,
    "os.PathLike[str]",
    IO[str],
]


def _convert_or_none(obj: Any) -> Any:
    if obj is None:
        return None
    if is_coremltools_config(obj):
        return from_coremltools(obj)
    return obj


def as_config(obj: ConfigLike) -> OptimizationConfig:
    """Return an :class:`OptimizationConfig` (ours) for any supported input.

    Accepted: our ``OptimizationConfig`` (returned as is); one of our op configs
    or a coremltools op config (used as the global config); a coremltools
    ``OptimizationConfig``; a mapping in the ``from_dict`` form; a path (``str`` or
    ``os.PathLike``) to a YAML file, or an open YAML stream.
    """
    if isinstance(obj, OptimizationConfig):
        return obj
    if is_coremltools_config(obj):
        obj = from_coremltools(obj)
        if isinstance(obj, OptimizationConfig):
            return obj
    if isinstance(obj, OpCompressorConfig):
        return OptimizationConfig(global_config=obj)
    if isinstance(obj, Mapping):
        return OptimizationConfig.from_dict(dict(obj))
    if isinstance(obj, (str, os.PathLike)) or hasattr(obj, "read"):
        return OptimizationConfig.from_yaml(obj)
    raise ValueError(f"config must be of type OptimizationConfig. Got {type(obj)}.")
