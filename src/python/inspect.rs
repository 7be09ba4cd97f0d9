//! Bindings for `inspect`: weight records as Python dicts.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::compress::inspect::{self as engine, ParamValue, WeightRecord};

fn param_to_py<'py>(py: Python<'py>, v: &ParamValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        ParamValue::Int(i) => i.into_pyobject(py)?.into_any(),
        ParamValue::Float(f) => f.into_pyobject(py)?.into_any(),
        ParamValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        ParamValue::Str(s) => s.into_pyobject(py)?.into_any(),
        ParamValue::Ints(v) => v.into_pyobject(py)?.into_any(),
    })
}

fn record_to_py<'py>(py: Python<'py>, r: &WeightRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &r.name)?;
    d.set_item("var", &r.var)?;
    d.set_item("function", &r.function)?;
    let consumers = PyList::empty(py);
    for c in &r.consumers {
        consumers.append((&c.op_type, &c.op_name, &c.param))?;
    }
    d.set_item("consumers", consumers)?;
    d.set_item("block_output", r.block_output)?;
    d.set_item("shape", r.shape.clone())?;
    d.set_item("dtype", &r.dtype)?;
    d.set_item("bytes_on_disk", r.bytes_on_disk)?;
    d.set_item("counted_bytes", r.counted_bytes)?;
    d.set_item("shared_with", r.shared_with.clone())?;
    d.set_item("compression", &r.compression)?;
    d.set_item("chain", r.chain.clone())?;
    let params = PyDict::new(py);
    for (k, v) in &r.params {
        params.set_item(k, param_to_py(py, v)?)?;
    }
    d.set_item("params", params)?;
    d.set_item("distinct", r.distinct)?;
    Ok(d)
}

/// One dict per weight of the package at `path` (see `coreml_compress.inspect`).
#[pyfunction]
pub fn inspect<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyList>> {
    let records = super::run_engine(py, || engine::inspect(&path))?;
    let out = PyList::empty(py);
    for r in &records {
        out.append(record_to_py(py, r)?)?;
    }
    Ok(out)
}

/// The specification version and each function's opset of the package at `path`:
/// `{"specification_version": int, "opsets": {function: opset}}`.
#[pyfunction]
pub fn model_versions<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let versions = super::run_engine(py, || engine::model_versions(&path))?;
    let d = PyDict::new(py);
    d.set_item("specification_version", versions.specification_version)?;
    let opsets = PyDict::new(py);
    for (function, opset) in &versions.opsets {
        opsets.set_item(function, opset)?;
    }
    d.set_item("opsets", opsets)?;
    Ok(d)
}
