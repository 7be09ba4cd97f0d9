//! Bindings for the calibration kernels behind `coreml_compress.torch`: Hessian accumulation,
//! GPTQ, SparseGPT and weighted (sensitivity) k-means. Arrays are read in place (C-contiguous
//! float32; a CPU torch tensor's `.numpy()` view qualifies) and the GIL is released while the
//! kernels run.

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::to_py;
use crate::error::Error;
use crate::kernels::gptq::{gptq as run_gptq, GptqOptions, ObsResult, QuantSpec};
use crate::kernels::hessian;
use crate::kernels::skm::weighted_palettize as run_weighted_palettize;
use crate::kernels::sparsegpt::{sparsegpt as run_sparsegpt, SparseGptOptions};

fn contiguous<'a>(
    what: &str,
    s: Result<&'a [f32], numpy::NotContiguousError>,
) -> PyResult<&'a [f32]> {
    s.map_err(|_| {
        to_py(Error::Config(format!(
            "{what} must be a C-contiguous float32 array"
        )))
    })
}

fn obs_to_dict<'py>(
    py: Python<'py>,
    res: ObsResult,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(
        "weight",
        PyArray1::from_vec(py, res.weight).reshape([rows, cols])?,
    )?;
    let nb = res.n_blocks;
    d.set_item(
        "scale",
        PyArray1::from_vec(py, res.scale).reshape([rows, nb])?,
    )?;
    d.set_item(
        "zero_point",
        PyArray1::from_vec(py, res.zero_point).reshape([rows, nb])?,
    )?;
    d.set_item("loss", res.loss)?;
    Ok(d)
}

/// `H ← H·seen/(seen+samples) + 2/(seen+samples)·XᵀX` in place; returns `seen + samples`.
#[pyfunction]
fn hessian_accumulate(
    py: Python<'_>,
    mut h: PyReadwriteArray2<'_, f32>,
    x: PyReadonlyArray2<'_, f32>,
    seen: f64,
    samples: f64,
) -> PyResult<f64> {
    let cols = h.shape()[0];
    if h.shape()[1] != cols || x.shape()[1] != cols {
        return Err(to_py(Error::Config(format!(
            "Hessian {:?} and activations {:?} do not match",
            h.shape(),
            x.shape()
        ))));
    }
    let xs = contiguous("activations", x.as_slice())?;
    let hs = h.as_slice_mut().map_err(|_| {
        to_py(Error::Config(
            "the Hessian must be a C-contiguous float32 array".into(),
        ))
    })?;
    super::run_engine(py, || hessian::accumulate(hs, cols, seen, xs, samples))
}

fn quant_spec(n_bits: u32, symmetric: bool, per_channel: bool, normal_float: bool) -> QuantSpec {
    QuantSpec {
        n_bits,
        symmetric,
        per_channel,
        normal_float,
    }
}

/// GPTQ of `weight [rows, cols]` with `hessian [cols, cols]`; returns a dict with `weight`,
/// `scale` and `zero_point` (`[rows, n_blocks]`, unsigned grid) and `loss`.
#[pyfunction]
#[pyo3(signature = (weight, hessian, n_bits, symmetric=true, per_channel=true, normal_float=false, block_size=None, act_order=false, damp=0.01, group=128))]
#[allow(clippy::too_many_arguments)]
fn gptq<'py>(
    py: Python<'py>,
    weight: PyReadonlyArray2<'py, f32>,
    hessian: PyReadonlyArray2<'py, f32>,
    n_bits: u32,
    symmetric: bool,
    per_channel: bool,
    normal_float: bool,
    block_size: Option<usize>,
    act_order: bool,
    damp: f64,
    group: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let (rows, cols) = (weight.shape()[0], weight.shape()[1]);
    let w = contiguous("weight", weight.as_slice())?;
    let h = contiguous("hessian", hessian.as_slice())?;
    if hessian.shape() != [cols, cols] {
        return Err(to_py(Error::Config(format!(
            "the Hessian must be {cols}×{cols}, got {:?}",
            hessian.shape()
        ))));
    }
    let opts = GptqOptions {
        quant: quant_spec(n_bits, symmetric, per_channel, normal_float),
        block_size,
        act_order,
        damp,
        group,
    };
    let res = super::run_engine(py, || run_gptq(w, rows, cols, h, &opts))?;
    obs_to_dict(py, res, rows, cols)
}

/// SparseGPT of `weight [rows, cols]` with `hessian [cols, cols]`; `n_bits=None` prunes
/// without quantizing (then `scale`/`zero_point` have 0 columns).
#[pyfunction]
#[pyo3(signature = (weight, hessian, target_sparsity=0.5, n_m=None, n_bits=None, symmetric=true, per_channel=true, normal_float=false, damp=0.01, group=128))]
#[allow(clippy::too_many_arguments)]
fn sparsegpt<'py>(
    py: Python<'py>,
    weight: PyReadonlyArray2<'py, f32>,
    hessian: PyReadonlyArray2<'py, f32>,
    target_sparsity: f64,
    n_m: Option<(usize, usize)>,
    n_bits: Option<u32>,
    symmetric: bool,
    per_channel: bool,
    normal_float: bool,
    damp: f64,
    group: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let (rows, cols) = (weight.shape()[0], weight.shape()[1]);
    let w = contiguous("weight", weight.as_slice())?;
    let h = contiguous("hessian", hessian.as_slice())?;
    if hessian.shape() != [cols, cols] {
        return Err(to_py(Error::Config(format!(
            "the Hessian must be {cols}×{cols}, got {:?}",
            hessian.shape()
        ))));
    }
    let opts = SparseGptOptions {
        target_sparsity,
        n_m,
        quant: n_bits.map(|b| quant_spec(b, symmetric, per_channel, normal_float)),
        damp,
        group,
    };
    let res = super::run_engine(py, || run_sparsegpt(w, rows, cols, h, &opts))?;
    obs_to_dict(py, res, rows, cols)
}

/// Weighted optimal 1-D k-means of `n_groups` contiguous groups of `values`; returns
/// `(dense [n], luts [n_groups, k], weighted_sse)`.
#[pyfunction]
#[pyo3(signature = (values, weights, n_groups, k, max_exact=4194304))]
fn weighted_palettize<'py>(
    py: Python<'py>,
    values: PyReadonlyArray1<'py, f32>,
    weights: PyReadonlyArray1<'py, f32>,
    n_groups: usize,
    k: usize,
    max_exact: usize,
) -> PyResult<(Bound<'py, PyArray1<f32>>, Bound<'py, PyAny>, f64)> {
    let v = contiguous("values", values.as_slice())?;
    let w = contiguous("weights", weights.as_slice())?;
    let res = super::run_engine(py, || run_weighted_palettize(v, w, n_groups, k, max_exact))?;
    let luts = PyArray1::from_vec(py, res.luts).reshape([n_groups, k])?;
    Ok((
        PyArray1::from_vec(py, res.dense),
        luts.into_any(),
        res.weighted_sse,
    ))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hessian_accumulate, m)?)?;
    m.add_function(wrap_pyfunction!(gptq, m)?)?;
    m.add_function(wrap_pyfunction!(sparsegpt, m)?)?;
    m.add_function(wrap_pyfunction!(weighted_palettize, m)?)?;
    Ok(())
}
