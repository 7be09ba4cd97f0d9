//! Bindings for `fit`: the measurements of a ladder of forms on every weight, as Python dicts.

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::compress::fit::{self as engine, Form};

/// Measures `forms` (each `(steps, ios18_only)`, steps as `compress_recipe` takes them) on every
/// weight they select, without writing anything. `importance` maps const names to one factor
/// per input channel.
#[pyfunction]
#[pyo3(signature = (input, forms, importance, progress=None))]
fn fit_evaluate<'py>(
    py: Python<'py>,
    input: PathBuf,
    forms: Vec<(Vec<(String, String)>, bool)>,
    importance: HashMap<String, Vec<f32>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let forms = forms
        .into_iter()
        .map(|(steps, ios18_only)| {
            Ok(Form {
                steps: super::parse_steps(&steps)?,
                ios18_only,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let evaluation = super::run_with_progress(py, progress, |report| {
        engine::evaluate(&input, &forms, &importance, report)
    })?;
    let out = PyDict::new(py);
    out.set_item("ios18", evaluation.ios18)?;
    let weights = evaluation
        .weights
        .iter()
        .map(|w| {
            let d = PyDict::new(py);
            d.set_item("function", &w.function)?;
            d.set_item("name", &w.name)?;
            d.set_item("output", &w.output)?;
            d.set_item("shape", &w.shape)?;
            d.set_item("consumer_types", &w.consumer_types)?;
            d.set_item("dense_bytes", w.dense_bytes)?;
            d.set_item("signal", w.signal)?;
            let forms = w
                .forms
                .iter()
                .map(|f| {
                    let r = PyDict::new(py);
                    match f {
                        Ok(f) => {
                            r.set_item("blob_bytes", &f.blob_bytes)?;
                            r.set_item("inline_bytes", f.inline_bytes)?;
                            r.set_item("sse", f.sse)?;
                            r.set_item("weighted_sse", f.weighted_sse)?;
                        }
                        Err(why) => r.set_item("unavailable", why)?,
                    }
                    Ok(r)
                })
                .collect::<PyResult<Vec<_>>>()?;
            d.set_item("forms", forms)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("weights", weights)?;
    let blobs = evaluation
        .blobs
        .iter()
        .map(|b| {
            let d = PyDict::new(py);
            d.set_item("file_name", &b.file_name)?;
            d.set_item("offset", b.offset)?;
            d.set_item("data_bytes", b.data_bytes)?;
            d.set_item("weights", &b.weights)?;
            d.set_item("other_readers", b.other_readers)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("blobs", blobs)?;
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit_evaluate, m)?)?;
    Ok(())
}
