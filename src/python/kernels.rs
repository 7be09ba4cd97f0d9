//! Bindings for the numeric kernels on numpy arrays (`coreml_compress.kernels`): convert the
//! arrays, run the kernel with the GIL released, hand the results back as arrays.
//!
//! Arrays arrive C-contiguous (the Python layer makes them so) with dtype float16 or float32
//! (LUTs and quantized data also int8/uint8). Where coremltools would skip a weight, the functions
//! return the reason as a `str` instead of a result tuple.

use half::f16;
use numpy::{
    Element, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use super::to_py;
use crate::config_err;
use crate::kernels::fp16::WeightElement;
use crate::kernels::lut::{self, PaletteMode, PaletteOutcome, PaletteParams};
use crate::kernels::prune::{self, PruneOutcome};
use crate::kernels::quantize::{
    self, Codes, DequantSource, Offset, QuantDtype, QuantMode, QuantizeOutcome,
};

/// A flat vector as an array of `shape`.
fn array<'py, T: Element>(
    py: Python<'py>,
    values: Vec<T>,
    shape: Vec<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    PyArray1::from_vec(py, values).reshape(shape)
}

fn codes_array<'py>(
    py: Python<'py>,
    codes: Codes,
    shape: Vec<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(if codes.dtype().signed() {
        array(py, codes.into_signed(), shape)?.into_any()
    } else {
        array(py, codes.into_unsigned(), shape)?.into_any()
    })
}

fn unsupported_dtype(what: &str, arr: &Bound<'_, PyAny>) -> PyErr {
    let dtype = arr
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!(
        "{what} must be a float16 or float32 numpy array, got dtype {dtype}"
    ))
}

fn as_slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    Ok(a.as_slice()?)
}

// ---------------------------------------------------------------------------------------------
// Palettization

fn palettize_t<'py, T: WeightElement + Element>(
    py: Python<'py>,
    arr: PyReadonlyArrayDyn<'py, T>,
    params: PaletteParams,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = arr.shape().to_vec();
    let data = as_slice(&arr)?;
    let outcome = super::run_engine(py, || lut::palettize(data, &shape, &params))?;
    match outcome {
        PaletteOutcome::Skipped { reason } => reason.into_bound_py_any(py),
        PaletteOutcome::Compressed(p) => {
            let lut = array(py, p.lut, p.lut_shape)?;
            let indices = array(py, p.indices.unpack::<u8>(), p.indices_shape)?;
            let scale = p
                .per_channel_scale
                .map(|s| array(py, s.values, s.shape))
                .transpose()?;
            (lut, indices, scale, p.nbits, p.vector_axis).into_bound_py_any(py)
        }
    }
}

/// Palettizes one weight: `(lut, indices, per_channel_scale | None, nbits, vector_axis | None)`
/// in coremltools' iOS18 layout, or coremltools' reason for skipping it (a `str`).
#[pyfunction]
#[pyo3(signature = (array, mode, nbits, channel_axis, group_size, cluster_dim, per_channel_scale))]
#[allow(clippy::too_many_arguments)]
pub fn palettize_array<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    mode: &str,
    nbits: Option<u8>,
    channel_axis: usize,
    group_size: usize,
    cluster_dim: usize,
    per_channel_scale: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mode = match mode.to_ascii_uppercase().as_str() {
        "KMEANS" => PaletteMode::Kmeans,
        "UNIFORM" => PaletteMode::Uniform,
        "UNIQUE" => PaletteMode::Unique,
        other => {
            return Err(to_py(config_err!(
                "the engine palettizes in KMEANS, UNIFORM or UNIQUE mode, got {other}"
            )))
        }
    };
    let params = PaletteParams {
        mode,
        nbits,
        channel_axis,
        group_size,
        cluster_dim,
        per_channel_scale,
    };
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        palettize_t(py, a, params)
    } else if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        palettize_t(py, a, params)
    } else {
        Err(unsupported_dtype("the weight", array))
    }
}

fn lut_to_dense_t<'py, T: Element + Copy + Send + Sync>(
    py: Python<'py>,
    indices: PyReadonlyArrayDyn<'py, u8>,
    lut: PyReadonlyArrayDyn<'py, T>,
    vector_axis: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let (ishape, lshape) = (indices.shape().to_vec(), lut.shape().to_vec());
    let (idx, table) = (as_slice(&indices)?, as_slice(&lut)?);
    let (dense, shape) = super::run_engine(py, || {
        lut::lut_to_dense(idx, &ishape, table, &lshape, vector_axis)
    })?;
    Ok(array(py, dense, shape)?.into_any())
}

/// The dense tensor of an iOS18 `constexpr_lut_to_dense` (uint8 `indices`, `lut` of rank
/// `indices.ndim + 2` in float16/float32/int8/uint8).
#[pyfunction]
#[pyo3(signature = (indices, lut, vector_axis=None))]
pub fn lut_to_dense_array<'py>(
    py: Python<'py>,
    indices: PyReadonlyArrayDyn<'py, u8>,
    lut: &Bound<'py, PyAny>,
    vector_axis: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(l) = lut.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        lut_to_dense_t(py, indices, l, vector_axis)
    } else if let Ok(l) = lut.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        lut_to_dense_t(py, indices, l, vector_axis)
    } else if let Ok(l) = lut.extract::<PyReadonlyArrayDyn<'py, i8>>() {
        lut_to_dense_t(py, indices, l, vector_axis)
    } else if let Ok(l) = lut.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        lut_to_dense_t(py, indices, l, vector_axis)
    } else {
        Err(PyTypeError::new_err(
            "the LUT must be a float16, float32, int8 or uint8 numpy array",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear quantization

fn quantize_t<'py, T: WeightElement + Element>(
    py: Python<'py>,
    arr: PyReadonlyArrayDyn<'py, T>,
    block_sizes: &[usize],
    dtype: QuantDtype,
    mode: QuantMode,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = arr.shape().to_vec();
    let data = as_slice(&arr)?;
    let outcome = super::run_engine(py, || {
        quantize::quantize(data, &shape, block_sizes, dtype, mode)
    })?;
    match outcome {
        QuantizeOutcome::Skipped(reason) => reason.into_bound_py_any(py),
        QuantizeOutcome::Quantized(q) => {
            let codes = codes_array(py, q.codes, shape)?;
            let scale = array(py, q.scale, q.scale_shape.clone())?;
            let offset = q
                .zero_point
                .map(|z| codes_array(py, z, q.scale_shape))
                .transpose()?;
            (codes, scale, offset).into_bound_py_any(py)
        }
    }
}

/// Quantizes one weight with per-axis block sizes (0 = the whole axis): `(codes, scale,
/// offset | None)`, or coremltools' reason for skipping it (a `str`).
#[pyfunction]
pub fn quantize_array<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    block_sizes: Vec<usize>,
    nbits: u32,
    signed: bool,
    symmetric: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let dtype = QuantDtype::from_bits(nbits, signed).map_err(to_py)?;
    let mode = if symmetric {
        QuantMode::LinearSymmetric
    } else {
        QuantMode::Linear
    };
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        quantize_t(py, a, &block_sizes, dtype, mode)
    } else if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        quantize_t(py, a, &block_sizes, dtype, mode)
    } else {
        Err(unsupported_dtype("the weight", array))
    }
}

fn dequantize_t<'py, T, D>(
    py: Python<'py>,
    data: PyReadonlyArrayDyn<'py, D>,
    scale: PyReadonlyArrayDyn<'py, T>,
    offset: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    T: WeightElement + Element,
    D: DequantSource + Element,
{
    let (shape, sshape) = (data.shape().to_vec(), scale.shape().to_vec());
    let (values, scales) = (as_slice(&data)?, as_slice(&scale)?);
    // Keep every offset borrow alive for the duration of the call.
    let off_i8 = offset.and_then(|o| o.extract::<PyReadonlyArrayDyn<'py, i8>>().ok());
    let off_u8 = offset.and_then(|o| o.extract::<PyReadonlyArrayDyn<'py, u8>>().ok());
    let off_t = offset.and_then(|o| o.extract::<PyReadonlyArrayDyn<'py, T>>().ok());
    let off = match (offset, &off_i8, &off_u8, &off_t) {
        (None, ..) => None,
        (Some(_), Some(o), _, _) => Some(Offset::Int8(as_slice(o)?)),
        (Some(_), _, Some(o), _) => Some(Offset::UInt8(as_slice(o)?)),
        (Some(_), _, _, Some(o)) => Some(Offset::Float(as_slice(o)?)),
        (Some(o), ..) => {
            return Err(PyTypeError::new_err(format!(
                "the offset must be int8, uint8 or of the scale's dtype ({}), got dtype {}",
                T::NAME,
                o.getattr("dtype")?
            )))
        }
    };
    let dense = super::run_engine(py, || {
        quantize::blockwise_shift_scale(values, &shape, scales, &sshape, off)
    })?;
    Ok(array(py, dense, shape)?.into_any())
}

fn dequantize_scale<'py, D: DequantSource + Element>(
    py: Python<'py>,
    data: PyReadonlyArrayDyn<'py, D>,
    scale: &Bound<'py, PyAny>,
    offset: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(s) = scale.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        dequantize_t(py, data, s, offset)
    } else if let Ok(s) = scale.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        dequantize_t(py, data, s, offset)
    } else {
        Err(unsupported_dtype("the scale", scale))
    }
}

/// The value of an iOS18 `constexpr_blockwise_shift_scale`: `scale * (data - offset)` with scale
/// and offset repeated blockwise, computed in the scale's dtype.
#[pyfunction]
#[pyo3(signature = (data, scale, offset=None))]
pub fn dequantize_array<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    scale: &Bound<'py, PyAny>,
    offset: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(d) = data.extract::<PyReadonlyArrayDyn<'py, i8>>() {
        dequantize_scale(py, d, scale, offset)
    } else if let Ok(d) = data.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        dequantize_scale(py, d, scale, offset)
    } else if let Ok(d) = data.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        dequantize_scale(py, d, scale, offset)
    } else if let Ok(d) = data.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        dequantize_scale(py, d, scale, offset)
    } else {
        Err(PyTypeError::new_err(
            "the quantized data must be an int8, uint8, float16 or float32 numpy array",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Pruning

/// How to prune (one of coremltools' three pruners).
enum PruneSpec {
    Magnitude {
        target_sparsity: f64,
    },
    Block {
        target_sparsity: f64,
        block_size: usize,
        dim: usize,
    },
    NM {
        n: usize,
        m: usize,
        dim: usize,
    },
    Threshold {
        threshold: f64,
        minimum_sparsity_percentile: f64,
    },
}

fn prune_t<'py, T: WeightElement + Element>(
    py: Python<'py>,
    arr: PyReadonlyArrayDyn<'py, T>,
    spec: &PruneSpec,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = arr.shape().to_vec();
    let w = as_slice(&arr)?;
    let outcome = super::run_engine(py, || -> crate::error::Result<PruneOutcome<T>> {
        Ok(match *spec {
            PruneSpec::Magnitude { target_sparsity } => {
                PruneOutcome::Pruned(prune::prune_magnitude(w, target_sparsity)?)
            }
            PruneSpec::Block {
                target_sparsity,
                block_size,
                dim,
            } => prune::prune_block(w, &shape, target_sparsity, block_size, dim)?,
            PruneSpec::NM { n, m, dim } => prune::prune_n_m(w, &shape, n, m, dim)?,
            PruneSpec::Threshold {
                threshold,
                minimum_sparsity_percentile,
            } => prune::prune_threshold(w, threshold, minimum_sparsity_percentile),
        })
    })?;
    match outcome {
        PruneOutcome::Skipped(reason) => reason.into_bound_py_any(py),
        PruneOutcome::Pruned(p) => {
            let dense =
                super::run_engine(py, || prune::sparse_to_dense(&p.nonzero, &p.mask, p.len))?;
            let (mask, nonzero) = (p.mask_bools(), p.nonzero);
            let n = nonzero.len();
            (
                array(py, mask, shape.clone())?,
                array(py, nonzero, vec![n])?,
                array(py, dense, shape)?,
            )
                .into_bound_py_any(py)
        }
    }
}

/// Prunes one weight: `(mask, nonzero_data, dense)` with a boolean mask of the weight's shape,
/// the surviving values in row-major order and the pruned weight, or coremltools' reason for
/// skipping it (a `str`).
/// `kind` is "magnitude" (`target_sparsity`, optional `block_size` and `dim`), "n_m" (`n`, `m`,
/// `dim`) or "threshold" (`threshold`, `minimum_sparsity_percentile`).
#[pyfunction]
#[pyo3(signature = (array, kind, target_sparsity=0.0, block_size=None, n=0, m=0, dim=0, threshold=0.0, minimum_sparsity_percentile=0.0))]
#[allow(clippy::too_many_arguments)]
pub fn prune_array<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    kind: &str,
    target_sparsity: f64,
    block_size: Option<usize>,
    n: usize,
    m: usize,
    dim: usize,
    threshold: f64,
    minimum_sparsity_percentile: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = match (kind, block_size) {
        ("magnitude", None) => PruneSpec::Magnitude { target_sparsity },
        ("magnitude", Some(block_size)) => PruneSpec::Block {
            target_sparsity,
            block_size,
            dim,
        },
        ("n_m", _) => PruneSpec::NM { n, m, dim },
        ("threshold", _) => PruneSpec::Threshold {
            threshold,
            minimum_sparsity_percentile,
        },
        _ => {
            return Err(to_py(config_err!(
                "unknown pruning kind {kind:?}; expected magnitude, n_m or threshold"
            )))
        }
    };
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f16>>() {
        prune_t(py, a, &spec)
    } else if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'py, f32>>() {
        prune_t(py, a, &spec)
    } else {
        Err(unsupported_dtype("the weight", array))
    }
}

/// Adds the kernel functions to `_native`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(palettize_array, m)?)?;
    m.add_function(wrap_pyfunction!(lut_to_dense_array, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_array, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize_array, m)?)?;
    m.add_function(wrap_pyfunction!(prune_array, m)?)?;
    Ok(())
}
